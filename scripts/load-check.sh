#!/usr/bin/env bash
# Limits under load, against a real `secret serve` on 127.0.0.1 (nothing else is
# contacted). Three checks, each failing the script when its bound is not met:
#
#  1. idle: IDLE (20,000) idle connections are opened (timeouts set long, so the
#     connection cap is what holds); while they are open, /healthz and an authorised
#     read must each be answered within 1 s.
#  2. anonymous: wrk sends anonymous requests (JWKS reads, requests without a token,
#     unknown routes) for a few seconds; the vault file may grow by at most
#     ANON_BOUND bytes per 10,000 of them.
#  3. rotations: wrk reads a secret with a token while the scheduler rotates secrets
#     every second and rotations are requested through the API; no 5xx (no non-2xx at
#     all on the reads), and `secret audit verify` passes afterwards.
#
#   bash scripts/load-check.sh [SECRET_BINARY] [SECONDS]
#
# Needs wrk, curl and python3. Prints the numbers it measured.
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${1:-target/debug/secret}"
seconds="${2:-5}"
IDLE="${IDLE:-20000}"
ANON_BOUND="${ANON_BOUND:-65536}"
[ -x "$bin" ] || cargo build --quiet -p secret
bin="$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")"
for tool in wrk curl python3 sqlite3; do
  command -v "$tool" >/dev/null || { echo "load-check: $tool is missing" >&2; exit 1; }
done

work="$(mktemp -d)"
serve_pid=""
stop_serve() {
  if [ -n "$serve_pid" ]; then
    kill -TERM "$serve_pid" 2>/dev/null || true
    wait "$serve_pid" 2>/dev/null || true
    serve_pid=""
  fi
}
cleanup() { stop_serve; rm -rf "$work"; }
trap cleanup EXIT

export HOME="$work" XDG_CONFIG_HOME="$work/config" XDG_DATA_HOME="$work/data"
export SECRET_POLICIES="$work/policies"
vault="$work/data/secret/vault.db"
mkdir -p "$SECRET_POLICIES"
cat >"$SECRET_POLICIES/load.toml" <<'EOF'
[secrets.SESSION_TOKEN]
generator = "random"
every = "1s"

[secrets.SIGNING_KEY]
generator = "jwt-ed25519"
every = "1s"

[secrets.API_KEY]
generator = "manual"
max_age = "90d"
EOF
"$bin" init >/dev/null 2>&1
printf %s 'load-check-api-value' | "$bin" set API_KEY >/dev/null
printf %s 'load-check-session-value' | "$bin" set SESSION_TOKEN >/dev/null
"$bin" rotate SIGNING_KEY >/dev/null 2>&1
token="$("$bin" token create --name load --scope admin | grep -o 'secret_[0-9a-f]*\.[A-Za-z0-9_-]*' | head -1)"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
start_serve() {
  port="$(free_port)"
  base="http://127.0.0.1:$port"
  "$bin" serve --listen "127.0.0.1:$port" "$@" >>"$work/serve.log" 2>&1 &
  serve_pid=$!
  for _ in $(seq 1 200); do
    curl -fsS "$base/readyz" >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "load-check: serve did not start" >&2
  cat "$work/serve.log" >&2
  exit 1
}
vault_bytes() {
  sqlite3 "$vault" 'PRAGMA wal_checkpoint(TRUNCATE);' >/dev/null
  stat -c %s "$vault"
}

# --- 1. idle connections ---------------------------------------------------------
# Timeouts longer than the run, so that all of them stay open and the cap (10,000, or
# the fd limit less a reserve) is what the server relies on.
start_serve --no-scheduler --header-timeout 300s --idle-timeout 300s
python3 - "$port" "$IDLE" "$token" <<'EOF'
import http.client, os, resource, socket, sys, time
port, idle, token = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
# A process holds at most `hard` descriptors: the sockets are spread over children.
per_child = max(1000, hard - 200)
children, pipes = [], []
start = time.monotonic()
left = idle
while left > 0:
    n = min(per_child, left)
    left -= n
    ready_r, ready_w = os.pipe()
    stop_r, stop_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(ready_r); os.close(stop_w)
        socks = []
        for _ in range(n):
            s = socket.socket()
            s.connect(("127.0.0.1", port))
            socks.append(s)
        os.write(ready_w, b"1")
        os.read(stop_r, 1)  # hold them until the parent is done
        held = 0
        for s in socks:
            s.setblocking(False)
            try:
                held += s.recv(1) != b""
            except BlockingIOError:
                held += 1
            except OSError:
                pass
        os.write(ready_w, held.to_bytes(4, "big"))
        os._exit(0)
    os.close(ready_w); os.close(stop_r)
    assert os.read(ready_r, 1) == b"1"
    children.append(pid)
    pipes.append((ready_r, stop_w))
opened = time.monotonic() - start
time.sleep(0.5)

def timed(path, headers):
    t = time.monotonic()
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    c.request("GET", path, headers=headers)
    r = c.getresponse()
    body = r.read()
    c.close()
    return r.status, time.monotonic() - t, body

worst = 0.0
for _ in range(5):
    status, took, _ = timed("/healthz", {})
    assert status == 200, status
    worst = max(worst, took)
    status, took2, body = timed("/v1/secrets/API_KEY", {"Authorization": "Bearer " + token})
    assert status == 200 and b"load-check-api-value" in body, (status, body[:200])
    worst = max(worst, took2)
    time.sleep(0.2)
held = 0
for ready_r, stop_w in pipes:
    os.write(stop_w, b"1")
    held += int.from_bytes(os.read(ready_r, 4), "big")
for pid in children:
    os.waitpid(pid, 0)
# How many of ours the server still held (it closes the longest-idle ones to stay
# under its cap).
print(f"idle: {idle} connections opened in {opened:.1f} s; the server held {held} of them "
      f"open; slowest /healthz or authorised read {worst * 1000:.0f} ms (bound 1000 ms)")
assert worst < 1.0, f"answered in {worst:.2f} s"
EOF
stop_serve

# --- 2. anonymous requests -------------------------------------------------------
before="$(vault_bytes)"
start_serve --no-scheduler
cat >"$work/anon.lua" <<'EOF'
local paths = { "/v1/jwks/SIGNING_KEY", "/v1/jwks/NO_SUCH_KEY", "/v1/secrets", "/v1/secrets/API_KEY", "/v1/no-such-route" }
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", paths[(i % #paths) + 1])
end
EOF
wrk -t2 -c16 -d"${seconds}s" -s "$work/anon.lua" "$base" >"$work/anon.txt"
stop_serve
after="$(vault_bytes)"
requests="$(awk '/requests in/ {print $1}' "$work/anon.txt")"
grown=$((after - before))
per10k=$(( grown * 10000 / (requests > 0 ? requests : 1) ))
echo "anonymous: $requests requests in ${seconds} s ($(awk '/Requests\/sec/ {print $2}' "$work/anon.txt")/s); vault $before -> $after bytes (+$grown; $per10k per 10,000, bound $ANON_BOUND)"
[ "$requests" -ge 1000 ] || { echo "load-check: too few anonymous requests ($requests)" >&2; exit 1; }
[ "$per10k" -le "$ANON_BOUND" ] || { echo "load-check: the vault grew by $per10k bytes per 10,000 anonymous requests" >&2; exit 1; }

# --- 3. reads under rotation -----------------------------------------------------
start_serve --tick 1s
runs_before="$("$bin" rotations --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')"
(
  end=$((SECONDS + seconds))
  while [ "$SECONDS" -lt "$end" ]; do
    code="$(curl -s -o /dev/null -w '%{http_code}' -X POST -H "Authorization: Bearer $token" "$base/v1/secrets/SESSION_TOKEN/rotate")"
    case "$code" in 202 | 409) ;; *) echo "rotate request answered $code" >"$work/rotate-error" ;; esac
    sleep 0.3
  done
) &
requester=$!
wrk -t2 -c32 -d"${seconds}s" -H "Authorization: Bearer $token" "$base/v1/secrets/API_KEY" >"$work/reads.txt"
wait "$requester"
sleep 1
stop_serve
runs_after="$("$bin" rotations --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')"
reads="$(awk '/requests in/ {print $1}' "$work/reads.txt")"
bad="$(awk '/Non-2xx or 3xx responses/ {print $NF}' "$work/reads.txt")"
errors="$(awk '/Socket errors/ {print}' "$work/reads.txt")"
echo "rotations: $reads authorised reads in ${seconds} s ($(awk '/Requests\/sec/ {print $2}' "$work/reads.txt")/s), non-2xx ${bad:-0}, ${errors:-no socket errors}; $((runs_after - runs_before)) rotations ran meanwhile"
[ -z "$bad" ] || { echo "load-check: $bad reads were not answered 2xx" >&2; exit 1; }
[ ! -e "$work/rotate-error" ] || { cat "$work/rotate-error" >&2; exit 1; }
[ $((runs_after - runs_before)) -ge 1 ] || { echo "load-check: no rotation ran during the load" >&2; exit 1; }
"$bin" audit verify
echo "load-check: all bounds held"
