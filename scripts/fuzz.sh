#!/usr/bin/env bash
# Runs every go-fuzz target for $FUZZTIME (default 10s; `make fuzz-long`
# uses 10m). New crashers land in each package's testdata/fuzz. The inputs
# the engine found interesting stay in Go's cache; with KEEP_CORPUS=1 they
# are copied into testdata/fuzz/FuzzX/ as well, where every `go test` runs
# them as regression seeds (commit them after a long run).
set -euo pipefail
cd "$(dirname "$0")/.."
t=${FUZZTIME:-10s}
cache=$(go env GOCACHE)/fuzz/$(go list -m)
log=$(mktemp)
trap 'rm -f "$log"' EXIT
grep -rl --include='*_test.go' '^func Fuzz' internal | while read -r f; do
  dir=$(dirname "$f")
  for fn in $(grep -o '^func Fuzz[A-Za-z0-9_]*' "$f" | sed 's/^func //'); do
    echo "-- ./$dir $fn ($t)"
    # The whole output when it fails (the failing input, the reason),
    # the verdict alone when it passes.
    if ! go test -run '^$' -fuzz "^$fn\$" -fuzztime "$t" "./$dir" >"$log" 2>&1; then
      grep -v '^fuzz: elapsed' "$log" >&2
      exit 1
    fi
    tail -2 "$log"
    if [ "${KEEP_CORPUS:-0}" = 1 ] && [ -d "$cache/$dir/$fn" ]; then
      mkdir -p "$dir/testdata/fuzz/$fn"
      cp -n "$cache/$dir/$fn"/* "$dir/testdata/fuzz/$fn/"
      echo "   corpus: $(find "$dir/testdata/fuzz/$fn" -type f | wc -l) inputs in $dir/testdata/fuzz/$fn"
    fi
  done
done
