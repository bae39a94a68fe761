#!/usr/bin/env bash
# A walk through the CLI: builds `secret` as shipped, then uses a throwaway vault —
# init, set, get, versions, CAS, history, the audit trail and its verification.
# Nothing outside a temp dir is touched; it is removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The binary as shipped (static-pie on Linux with glibc; see the script).
bin=$(bash scripts/build-release.sh "$work/secret")
export SECRET_VAULT="$work/vault.db" SECRET_IDENTITY_FILE="$work/identity.txt"
unset SECRET_IDENTITY SECRET_PASSPHRASE

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
run() { step "secret ${*:2}"; "$@"; }

run "$bin" init
step "printf 'postgres://app:hunter2@db/app' | secret set DATABASE_URL --description 'primary database'"
printf 'postgres://app:hunter2@db/app' | "$bin" set DATABASE_URL --description 'primary database'
run "$bin" set JWT_SECRET --generate --length 64 --charset base64url
run "$bin" set JWT_SECRET --generate --length 64 --charset base64url --if-version 1
step "secret set JWT_SECRET --generate --if-version 1   # stale: refused with exit 4"
"$bin" set JWT_SECRET --generate --if-version 1 && exit 1 || echo "exit $?"
step "secret get DATABASE_URL"
"$bin" get DATABASE_URL; echo
run "$bin" list
run "$bin" history JWT_SECRET
step "secret get NOT_THERE   # exit 3"
"$bin" get NOT_THERE || echo "exit $?"
run "$bin" audit
run "$bin" audit verify
printf '\ndemo vault was %s (removed on exit)\n' "$work"
