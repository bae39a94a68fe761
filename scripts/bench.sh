#!/usr/bin/env bash
# Benchmarks whole-process CLI latency against peers measured in the same run.
#
#   secret get      one secret out of a vault of 1,000 (every read audited, fsynced)
#   secret set      a new generated version (fsynced, audited)
#   age -d          decrypting one small file with the age CLI (the peer to beat)
#   hello           a hello-world Rust binary (the floor: process start-up)
#
# Needs hyperfine and age (apt-get install hyperfine age). Prints a markdown table;
# BENCHMARKS.md records the figures with the machine they came from.
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in hyperfine age age-keygen rustc; do
  command -v "$tool" >/dev/null || { echo "bench.sh needs $tool (apt-get install hyperfine age)" >&2; exit 1; }
done

runs=${RUNS:-300}
cargo build --release --quiet
bin="$PWD/target/release/secret"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
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
  -n "secret set --generate" "$bin set -q SECRET_1 --generate" \
  -n "age -d (small file)" "age -d -i $work/age-key.txt $work/small.age" \
  -n "hello-world Rust" "$work/hello" >&2
cat "$work/cli.md"
