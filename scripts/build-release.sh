#!/usr/bin/env bash
# Builds the `secret` binary we ship and copies it to bin/secret (or to $1).
#
# On Linux with glibc the binary is linked statically (static-pie: ASLR and full
# RELRO kept). Every CLI command is a whole process, and on the machine we measured
# the dynamic loader (finding, mapping and relocating libc, libm and libgcc_s, and the
# page faults that costs) was about a quarter of a `secret get`; see BENCHMARKS.md.
# It also runs on any Linux of the same architecture without matching shared libraries.
#
# The flag needs an explicit --target: without one, cargo would pass it to the
# proc-macro crates too, which must stay dynamic. Elsewhere (macOS, musl, ...) this
# is a plain release build.
set -euo pipefail
cd "$(dirname "$0")/.."

out=${1:-bin/secret}
host=$(rustc -vV | sed -n 's/^host: //p')
flags=""
case "$host" in
  *-linux-gnu*) flags="-C target-feature=+crt-static" ;;
esac
RUSTFLAGS="${RUSTFLAGS:-} $flags" cargo build --release --locked --quiet --target "$host" -p secret --bin secret
mkdir -p "$(dirname "$out")"
cp "target/$host/release/secret" "$out"
echo "$out"
