#!/bin/bash
# ab-flush.sh: the flush workload of run.sh for one build, to compare two
# builds (A/B) in turn on the same machine without installing any peer.
#
#   bash bench/peers/ab-flush.sh TREE [MESSAGES [CONNECTIONS [perf]]]
#
# TREE is a Postie checkout with `make build` done (a `git worktree` of
# the commit to compare). It fills a spool under /var/tmp with MESSAGES
# (default 10000) 4 KB messages through TREE's own bench/peers/fill (the
# queue-file format is the build's), starts TREE's postie-sink (STARTTLS,
# AUTH PLAIN), runs TREE/bin/mailq -q with CONNECTIONS (default 8), and
# prints messages per second until the sink has them all, with mailq's
# user and system CPU. With "perf" mailq runs under `perf record -g` and
# the data is kept. Run it alternately on the two trees, a few times each.
#
# With DELAY set (a Go duration, e.g. DELAY=5ms) mailq reaches the sink
# through bench/peers/lag, which holds every chunk that long each way: a
# smarthost one 2×DELAY round trip away instead of on loopback.
set -euo pipefail
tree=$(cd "$1" && pwd) n=${2:-10000} conns=${3:-8} mode=${4:-}
w=$(mktemp -d /var/tmp/ab-flush.XXXXXX)
cleanup() {
  [ -n "${sink:-}" ] && kill "$sink" 2>/dev/null
  [ -n "${lag:-}" ] && kill "$lag" 2>/dev/null
  [ "$mode" = perf ] || rm -rf "$w"
}
trap cleanup EXIT
(cd "$tree" && go build -o "$w/fill" ./bench/peers/fill)
if [ -n "${DELAY:-}" ]; then (cd "$(dirname "$0")/lag" && go build -o "$w/lag" .); fi
head -c 3000 /dev/urandom | base64 -w 76 >"$w/body"
{ printf 'From: a@example.com\nTo: b@example.org\nSubject: bench\n\n'; cat "$w/body"; } >"$w/msg"
"$tree/bin/postie-sink" -listen 127.0.0.1:0 -user u -pass p -info "$w/sink.env" -expect "$n" -done "$w/done" 2>"$w/sink.log" &
sink=$!
for _ in $(seq 200); do [ -s "$w/sink.env" ] && break; sleep 0.05; done
# shellcheck disable=SC1091
. "$w/sink.env"
if [ -n "${DELAY:-}" ]; then
  "$w/lag" -to "$ADDR" -delay "$DELAY" >"$w/lag.addr" 2>"$w/lag.log" &
  lag=$!
  for _ in $(seq 200); do [ -s "$w/lag.addr" ] && break; sleep 0.05; done
  ADDR=$(head -1 "$w/lag.addr")
fi
echo p >"$w/password"
chmod 600 "$w/password"
cat >"$w/postie.toml" <<TOML
hostname = "bench.example"
spool_dir = "$w/spool"
[smarthost]
address = "$ADDR"
tls = "starttls"
username = "u"
password_file = "$w/password"
ca_file = "$CA_FILE"
[queue]
deliver = "queue"
connections = $conns
[log]
target = "stderr"
TOML
"$w/fill" -spool "$w/spool" -n "$n" -msg "$w/msg" -c 8 >/dev/null 2>&1
sync
start=$(date +%s.%N)
if [ "$mode" = perf ]; then
  perf record -g -o "$w/perf.data" -- "$tree/bin/mailq" -C "$w/postie.toml" -q 2>"$w/mailq.log"
else
  /usr/bin/time -f "mailq CPU: %U s user, %S s system" "$tree/bin/mailq" -C "$w/postie.toml" -q 2>"$w/mailq.log"
fi
for _ in $(seq 1200); do [ -s "$w/done" ] && break; sleep 0.05; done
end=$(date +%s.%N)
[ -s "$w/done" ] || { echo "ab-flush: the sink did not get all $n messages; see $w" >&2; mode=perf; exit 1; }
echo "$tree: $n messages, $conns connections${DELAY:+, $DELAY each way}: $(awk -v n="$n" -v s="$start" -v e="$end" 'BEGIN { printf "%.0f", n / (e - s) }') msg/s; $(grep 'mailq CPU' "$w/mailq.log" || true)"
if [ "$mode" = perf ]; then echo "perf data: $w/perf.data"; fi
