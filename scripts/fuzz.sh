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
    # the verdict alone when it passes. Go's engine can fail a run with a
    # bare "context deadline exceeded" when -fuzztime runs out while a
    # busy machine starves a worker (golang/go#75804): no input is
    # written, and that one is run again, once; any other failure counts.
    for try in 1 2; do
      if go test -run '^$' -fuzz "^$fn\$" -fuzztime "$t" "./$dir" >"$log" 2>&1; then
        tail -2 "$log"
        break
      fi
      if [ "$try" = 1 ] && grep -q 'context deadline exceeded' "$log" &&
        ! grep -Eq 'Failing input written|panic:|_test\.go:[0-9]+:' "$log"; then
        echo "   the fuzzing deadline ran out under load, no input failed: once more" >&2
        continue
      fi
      grep -v '^fuzz: elapsed' "$log" >&2
      exit 1
    done
    if [ "${KEEP_CORPUS:-0}" = 1 ] && [ -d "$cache/$dir/$fn" ]; then
      mkdir -p "$dir/testdata/fuzz/$fn"
      cp -n "$cache/$dir/$fn"/* "$dir/testdata/fuzz/$fn/"
      echo "   corpus: $(find "$dir/testdata/fuzz/$fn" -type f | wc -l) inputs in $dir/testdata/fuzz/$fn"
    fi
  done
done
