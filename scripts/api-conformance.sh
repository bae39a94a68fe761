#!/usr/bin/env bash
# Drives `secret serve` with schemathesis, from its own /v1/openapi.json only, with every
# check schemathesis has. The document must describe exactly what the server accepts and
# answers: any finding (a 5xx, an undocumented status, a schema-valid request refused, a
# schema-invalid one accepted, a body that does not match its schema, an authenticated
# route answering without a token) fails this script.
#
#   bash scripts/api-conformance.sh [SECRET_BINARY] [MAX_EXAMPLES]     (ST_SEED=N: random cases)
#
# Needs `st` (pip install schemathesis). Everything runs on 127.0.0.1 in a temp dir.
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$(pwd)"
bin="${1:-target/debug/secret}"
examples="${2:-20}"
[ -x "$bin" ] || cargo build --quiet -p secret
bin="$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")"

work="$(mktemp -d)"
serve_pid=""
cleanup() {
  [ -n "$serve_pid" ] && kill "$serve_pid" 2>/dev/null && wait "$serve_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

export HOME="$work" XDG_CONFIG_HOME="$work/config" XDG_DATA_HOME="$work/data"
export SECRET_POLICIES="$work/policies"
mkdir -p "$SECRET_POLICIES"
# Secrets with policies that rotate locally (no targets), so every route has something
# real to answer with: a JWKS, a rotation to start, runs to list.
cat >"$SECRET_POLICIES/api.toml" <<'EOF'
[secrets.SIGNING_KEY]
generator = "jwt-ed25519"
every = "30d"

[secrets.SESSION_TOKEN]
generator = "random"
every = "30d"

[secrets.LEGACY_PASSWORD]
generator = "manual"
max_age = "90d"
EOF
"$bin" init >/dev/null 2>&1
printf %s 'conformance-session-value' | "$bin" set SESSION_TOKEN >/dev/null
printf %s 'conformance-legacy-value' | "$bin" set LEGACY_PASSWORD >/dev/null
"$bin" rotate SIGNING_KEY >/dev/null
token="$("$bin" token create --name conformance --scope admin | grep -o 'secret_[0-9a-f]*\.[A-Za-z0-9_-]*' | head -1)"
[ -n "$token" ] || { echo "no token" >&2; exit 1; }

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
"$bin" serve --listen "127.0.0.1:$port" --tick 1h >"$work/serve.log" 2>&1 &
serve_pid=$!
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done

# `st` is schemathesis's command; where pip put no script on PATH, run it from Python.
if command -v st >/dev/null 2>&1; then
  st=(st)
else
  st=(python3 -c 'import sys; from schemathesis.cli import schemathesis; sys.argv[0] = "st"; schemathesis()')
fi
# Deterministic by default (the same cases every run); ST_SEED=N explores with a seed.
mode=(--generation-deterministic)
[ -n "${ST_SEED:-}" ] && mode=(--seed "$ST_SEED")
set +e
# From the temp dir: schemathesis keeps a cache in its working directory.
cd "$work"
"${st[@]}" --config-file "$repo/scripts/schemathesis.toml" run "http://127.0.0.1:$port/v1/openapi.json" \
  --checks all \
  --header "Authorization: Bearer $token" \
  --max-examples "$examples" \
  --workers 1 \
  --phases examples,coverage,fuzzing,stateful \
  "${mode[@]}" \
  --suppress-health-check all \
  --no-color
status=$?
set -e
if [ "$status" -ne 0 ]; then
  echo "--- serve log ---" >&2
  tail -50 "$work/serve.log" >&2
fi
exit "$status"
