#!/bin/bash
# postfix-lag.sh: the flush of ab-flush.sh with DELAY, for Postfix: a null
# client (smtp_tls_connection_reuse = REUSE, default yes) flushing N queued
# 4 KB messages to postie-sink behind bench/peers/lag, DELAY each way.
#
#   apt-get install -y --no-install-recommends postfix libsasl2-modules
#   make build
#   DELAY=5ms REUSE=yes bash bench/peers/experiments/postfix-lag.sh 2000
#   apt-get purge -y postfix    # then scripts/test.sh installs exim4 again
#
# As root; it overwrites /etc/postfix/main.cf through bench/peers/postfix.sh
# as run.sh does, queues with delivery held (defer_transports), releases it,
# and times `postqueue -f` until the sink has every message, as run.sh does.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../../.." && pwd)
# shellcheck source=bench/peers/postfix.sh
. "$repo/bench/peers/postfix.sh"
tools=$(mktemp -d)
(cd "$repo" && go build -o "$tools/timeit" ./bench/peers/timeit && go build -o "$tools/lag" ./bench/peers/lag)
n=${1:-2000} delay=${DELAY:-5ms} reuse=${REUSE:-yes}
w=/var/tmp/pf-lag; rm -rf $w; mkdir -p $w; chmod 755 $w
head -c 3000 /dev/urandom | base64 -w 76 >"$w/body"
{ printf 'From: a@example.com\nTo: b@example.org\nSubject: bench\n\n'; cat "$w/body"; } >"$w/msg"
start_sink() { # EXPECT
  [ -n "${sink:-}" ] && kill $sink 2>/dev/null && sleep 0.3
  rm -f $w/done $w/sink.env
  "$repo/bin/postie-sink" -listen 127.0.0.1:${sinkport:-0} -user u -pass p -info $w/sink.env -expect "$1" -done $w/done 2>>$w/sink.log &
  sink=$!
  for _ in $(seq 200); do [ -s $w/sink.env ] && break; sleep 0.05; done
  . $w/sink.env; sinkport=${ADDR##*:}
  cp "$CA_FILE" $w/ca.pem; chmod 644 $w/ca.pem
}
trap 'kill ${sink:-} ${lag:-} 2>/dev/null; postfix stop >/dev/null 2>&1 || true; rm -rf "$tools"' EXIT
start_sink 1
"$tools/lag" -to "$ADDR" -delay "$delay" >$w/lag.addr 2>$w/lag.log & lag=$!
sleep 0.3; lagport=$(head -1 $w/lag.addr | cut -d: -f2)
postfix_null_client "$lagport" "$w/ca.pem" u p "$w/postfix.log" "$reuse"
postconf -e defer_transports=smtp
postfix stop >/dev/null 2>&1 || true; sleep 1; postfix start >/dev/null 2>&1; sleep 1
postsuper -d ALL >/dev/null 2>&1 || true
"$tools/timeit" -n "$n" -c 32 -in $w/msg -- /usr/sbin/sendmail -t -i >/dev/null
for _ in $(seq 600); do
  pend=$(find /var/spool/postfix/maildrop /var/spool/postfix/incoming /var/spool/postfix/active -type f | wc -l)
  def=$(find /var/spool/postfix/deferred -type f | wc -l)
  [ "$pend" = 0 ] && [ "$def" = "$n" ] && break; sleep 0.5
done
echo "queued: $def deferred"
start_sink "$n"
postconf -e defer_transports=; postfix reload >/dev/null 2>&1; sleep 2
r=$("$tools/timeit" -done $w/done -timeout 10m -- postqueue -f)
done_s=$(printf '%s' "$r" | sed -n 's/.*"done_s":\([0-9.]*\).*/\1/p')
echo "postfix reuse=$reuse, $n messages, $delay each way: $(awk -v n="$n" -v s="$done_s" 'BEGIN { printf "%.0f", n / s }') msg/s"
postsuper -d ALL >/dev/null 2>&1 || true
