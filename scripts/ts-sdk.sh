#!/usr/bin/env bash
# Install a pinned @lmstudio/sdk into ~/.cache/outlines-lmstudio/ts-sdk/<version> (idempotent).
#
#   scripts/ts-sdk.sh 1.5.0 2.0.0      # install both (what CI runs before the tests)
#
# Prints the install directory of each version. The TypeScript conformance tests
# (tests/testing/test_ts_sdk.py) call this script themselves when a version is missing.
# 2.0.0 depends on @lmstudio/lms-isomorphic ^0.5.0, which the npm registry reachable
# here does not have; it runs with 0.4.6 (npm "overrides"), which is what we check.
set -euo pipefail
CACHE="${OUTLINES_LMSTUDIO_CACHE:-$HOME/.cache/outlines-lmstudio}/ts-sdk"
[ "$#" -gt 0 ] || set -- 1.5.0 2.0.0
for version in "$@"; do
  case "$version" in
    1.5.0) overrides='{}' ;;
    2.0.0) overrides='{"@lmstudio/lms-isomorphic": "0.4.6"}' ;;
    *) echo "ts-sdk.sh: no pins known for @lmstudio/sdk $version (use 1.5.0 or 2.0.0)" >&2; exit 2 ;;
  esac
  dir="$CACHE/$version"
  if [ -f "$dir/node_modules/@lmstudio/sdk/package.json" ] && [ -f "$dir/.complete" ]; then
    echo "$dir"; continue
  fi
  mkdir -p "$dir"
  rm -f "$dir/.complete"
  cat > "$dir/package.json" <<JSON
{"name": "ts-sdk-$version", "private": true,
 "dependencies": {"@lmstudio/sdk": "$version"},
 "overrides": $overrides}
JSON
  (cd "$dir" && npm install --no-audit --no-fund --loglevel=error >&2)
  touch "$dir/.complete"
  echo "$dir"
done
