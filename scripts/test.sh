#!/usr/bin/env bash
# The whole test suite. As root, it first installs the Debian packages the
# tests need (.ci/packages): real clients, verifiers and peer servers.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" = 0 ] && [ -s .ci/packages ]; then
  # A package operation interrupted earlier on this machine would make
  # every apt-get below fail; finish it first.
  DEBIAN_FRONTEND=noninteractive dpkg --configure -a >/dev/null 2>&1 || true
  pkgs=$(grep -v '^#' .ci/packages | sort -u | tr '\n' ' ')
  missing=$(for p in $pkgs; do dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q 'install ok installed' || echo "$p"; done)
  if [ -n "$missing" ]; then
    echo "== installing test dependencies: $missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
  fi
fi
echo "== go vet"
go vet ./...
echo "== build"
make -s build
echo "== go test"
# The package test installs and purges a .deb (replacing the machine's
# MTA for a minute): it runs alone, after the others.
pkgs=$(go list ./... | grep -v '/test/packaging$')
set +e
# shellcheck disable=SC2086
go test -count=1 -timeout 20m $pkgs
rc=$?
echo "== go test ./test/packaging (alone)"
go test -count=1 -timeout 20m ./test/packaging/
rc2=$?
set -e
[ "$rc" = 0 ] && rc=$rc2
if [ "$rc" = 0 ]; then
  echo "== short fuzz runs"
  FUZZTIME=${FUZZTIME:-10s} bash scripts/fuzz.sh
fi
exit "$rc"
