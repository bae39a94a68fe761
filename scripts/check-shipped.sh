#!/usr/bin/env bash
# Checks that a shipped `secret` binary (scripts/build-release.sh) holds no stand-in
# code and no Railway schema text: the stand-ins are test code, and the schema is
# 1.9 MB that every `secret get` would otherwise map. Prints the binary's size.
#
#   bash scripts/check-shipped.sh [BINARY]     (default: bin/secret)
set -euo pipefail
bin=${1:-bin/secret}
[ -x "$bin" ] || { echo "no executable at $bin: run scripts/build-release.sh first" >&2; exit 1; }
fail=0
# Symbols and panic locations of the stand-in crate, its types, and text that only the
# introspection schema holds (type names our own queries never use).
for needle in secret_standins crates/standins RailwayStandIn OpenAiStandIn LaunchDarklyStandIn \
              '"__schema"' BucketS3CompatibleCredentials CanvasViewMergePreview graphql_parser; do
  if LC_ALL=C grep -aqF -- "$needle" "$bin"; then
    echo "FAIL: $bin contains $needle" >&2
    fail=1
  fi
done
[ "$fail" = 0 ] || exit 1
size=$(stat -c %s "$bin" 2>/dev/null || stat -f %z "$bin")
echo "$bin: $size bytes, no stand-in code or schema text"
