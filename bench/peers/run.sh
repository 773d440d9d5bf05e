#!/usr/bin/env bash
# Postie against the small MTAs Debian ships, on the same machine, through
# the same smarthost (tools/postie-sink: STARTTLS + AUTH PLAIN/LOGIN,
# certificate checked against the sink's own CA by every client that can).
#
#   sudo bash bench/peers/run.sh            # the whole run, ~20-30 minutes
#   QUICK=1 PEERS="" sudo bash bench/peers/run.sh   # Postie only, small counts
#   POSTIE=0 SCALE=0 PEERS=dma MERGE=old/results.jsonl sudo bash bench/peers/run.sh
#                                          # measure one peer again, keep the rest
#
# It installs each peer from Debian in turn (they conflict as MTAs): postfix
# (null client; once as Debian sets it up, once with
# smtp_tls_connection_reuse), dma, nullmailer and msmtp; each is purged
# before the next, and none is left installed. It then measures, for each
# peer and for Postie (deliver = "queue", connections 4 and 8):
#
#   enqueue   one `sendmail -t -i` of a 4 KB message, delivery deferred:
#             median and p90 of SEQ_RUNS runs in a row; then CONC callers at
#             once: messages per second over FLUSH_MSGS messages
#             (msmtp has no queue: it sends before it exits)
#   flush     FLUSH_MSGS queued 4 KB messages until the sink has them all
#             (postie-sink -expect/-done); msmtp: MSMTP_FLUSH_MSGS runs of
#             msmtp, CONC at once
#   memory    peak RSS enqueueing and flushing a BIG_MB MB message
#             (Postie with DKIM signing, RSA 2048)
#   scale     Postie only: mailq and mailq --json over SCALE_MSGS queued
#             messages; flush of 1,000 and 10,000 (and SCALE_MSGS with
#             SCALE_FLUSH_BIG=1)
#
# plus the sink's own rate (bench/peers/blast: 4 and 8 STARTTLS+AUTH
# connections, BLAST_MSGS messages) and /bin/true as the floor of any
# process start. Every run is timed by bench/peers/timeit (fork, exec,
# wait; wall clock). Results go to bench/peers/results/DATE.json, the
# chart to bench/peers/results/chart.png, the summary to BENCHMARKS.md.
#
# The sink is restarted (same port, same flags) before each flush, since
# -expect counts from its start; its certificate changes each time, so it
# is copied to one path that every contender trusts, and Postfix is
# reloaded after it changes.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD
# shellcheck source=bench/peers/postfix.sh
. bench/peers/postfix.sh

if [ -n "${QUICK:-}" ]; then
  : "${SEQ_RUNS:=20}" "${FLUSH_MSGS:=300}" "${MSMTP_FLUSH_MSGS:=100}" "${BLAST_MSGS:=1000}"
  : "${BIG_MB:=8}" "${SCALE_MSGS:=3000}" "${SCALE_FLUSHES:=300 1000}"
fi
SEQ_RUNS=${SEQ_RUNS:-300}
CONC=${CONC:-32}
FLUSH_MSGS=${FLUSH_MSGS:-10000}
MSMTP_FLUSH_MSGS=${MSMTP_FLUSH_MSGS:-1000}
BLAST_MSGS=${BLAST_MSGS:-10000}
BIG_MB=${BIG_MB:-60}
SCALE_MSGS=${SCALE_MSGS:-100000}
SCALE_FLUSHES=${SCALE_FLUSHES:-1000 10000}
[ -n "${SCALE_FLUSH_BIG:-}" ] && SCALE_FLUSHES="$SCALE_FLUSHES $SCALE_MSGS"
PEERS=${PEERS-postfix dma nullmailer msmtp}
POSTIE_CONNS=${POSTIE_CONNS:-4 8}
FLUSH_TIMEOUT=${FLUSH_TIMEOUT:-6m}
USER_NAME=benchuser
USER_PASS='bench-secret-1'

say() { printf '\n== %s  [%s]\n' "$*" "$(date +%T)"; }
die() { echo "run.sh: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root (it installs and purges Debian packages)"
for tool in go openssl setpriv apt-get; do
  command -v "$tool" >/dev/null || die "$tool not found"
done

apt_install() {
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends "$@" >>"$work/apt.log" 2>&1
}

work=/var/tmp/postie-peers
rm -rf "$work"
mkdir -p "$work/bin"
chmod 755 "$work"
results=$work/results.jsonl
# MERGE=FILE starts from an earlier run's records; a figure measured again
# replaces the earlier one in the report.
if [ -n "${MERGE:-}" ]; then cp "$MERGE" "$results"; else : >"$results"; fi
bench=$work/bin
sink_pid=
current_peer=

route_orig=
monitor_pid=
cleanup() {
  set +e
  if [ -n "$monitor_pid" ]; then kill "$monitor_pid" 2>/dev/null; fi
  sink_stop
  if [ -n "$current_peer" ]; then peer_purge "$current_peer"; fi
  # shellcheck disable=SC2086
  if [ -n "$route_orig" ]; then ip route change $route_orig table local; fi
}
# --- tools -----------------------------------------------------------------

command -v gnuplot >/dev/null || apt_install gnuplot-nox
command -v /usr/bin/time >/dev/null || apt_install time

say "build"
make build >/dev/null
for t in timeit blast fill report; do
  go build -o "$bench/$t" "./bench/peers/$t"
done
timeit=$bench/timeit

# --- messages ----------------------------------------------------------------

# msg4k.eml: a 4096-byte plain-text message with LF line endings, as PHP's
# mail() hands it to sendmail.
{
  printf 'To: Bench Recipient <bench@example.org>\nFrom: Bench Sender <bench@example.com>\nSubject: benchmark message\n\n'
  for _ in $(seq 60); do printf 'The quick brown fox jumps over the lazy dog. 0123456789abcdefghijkl\n'; done
} >"$work/msg4k.eml"
truncate -s 4095 "$work/msg4k.eml"
printf '\n' >>"$work/msg4k.eml"

# big.eml: BIG_MB MB, a short text part and a base64 attachment with
# 76-character lines, as a mail client would send a large file.
{
  printf 'To: bench@example.org\nFrom: bench@example.com\nSubject: big\nMIME-Version: 1.0\n'
  printf 'Content-Type: multipart/mixed; boundary="b0undary"\n\n--b0undary\nContent-Type: text/plain\n\nAttached.\n'
  printf -- '--b0undary\nContent-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\n'
  head -c $((BIG_MB * 1048576 * 57 / 77)) /dev/urandom | base64 -w 76
  printf -- '--b0undary--\n'
} >"$work/big.eml"

openssl genrsa -out "$work/dkim.pem" 2048 2>/dev/null
chmod 600 "$work/dkim.pem"

# --- the sink ------------------------------------------------------------------

port=0
sink_stop() {
  if [ -n "$sink_pid" ]; then
    kill "$sink_pid" 2>/dev/null || true
    wait "$sink_pid" 2>/dev/null || true
    sink_pid=
  fi
}
# sink_start [N]: a fresh sink on the same port; with N it writes
# $work/sink.done once N messages have arrived.
sink_start() {
  sink_stop
  rm -f "$work/sink.env" "$work/sink.done"
  local args=(-listen "127.0.0.1:$port" -user "$USER_NAME" -pass "$USER_PASS" -info "$work/sink.env")
  if [ "${1:-0}" -gt 0 ]; then args+=(-expect "$1" -done "$work/sink.done"); fi
  bin/postie-sink "${args[@]}" 2>>"$work/sink.log" &
  sink_pid=$!
  for _ in $(seq 200); do [ -s "$work/sink.env" ] && break; sleep 0.05; done
  [ -s "$work/sink.env" ] || die "postie-sink did not start: $(tail -3 "$work/sink.log")"
  # shellcheck disable=SC1091
  . "$work/sink.env"
  port=${ADDR##*:}
  cp "$CA_FILE" "$work/sink-ca.pem"
  chmod 644 "$work/sink-ca.pem"
}
trap cleanup EXIT
sink_seconds() { sed -n 's/^SECONDS=//p' "$work/sink.done" 2>/dev/null || echo null; }

# --- recording -----------------------------------------------------------------

# rec CONTENDER VARIANT WORKLOAD JSON: one line of results.jsonl.
rec() {
  local json=${4:-null}
  [ -n "$json" ] || json=null
  printf '{"contender":"%s","variant":"%s","workload":"%s","result":%s}\n' "$1" "$2" "$3" "$json" >>"$results"
  printf '   %-10s %-12s %-14s %s\n' "$1" "$2" "$3" "$json"
}
# with_sink N JSON: JSON (a flush) with the number of messages and the
# sink's seconds from first to last message added.
with_sink() {
  local json=$2
  [ -n "$json" ] || json='{"failed":true}'
  printf '%s%s,"sink_seconds":%s}' "${json%\}}" "${1:+,\"messages\":$1}" "$(sink_seconds)"
}

# settle_fs: on ext4 without a journal (this kind of machine: see
# BENCHMARKS.md, "The machine"), creating a file skips the inodes freed
# recently (ialloc.c, recently_deleted), reading the inode table for each:
# right after a flush or an `rm -rf` of 10,000 queue files, a Postie
# enqueue took 8.3-8.9 ms median instead of 6.0-6.2, and still 7.8 ms 45 s
# later; after 70 s it was back to 6.2. Every timed enqueue waits that
# out, whoever deleted what before it; on a journalled file system there
# is nothing to wait for.
settle_wait=0
fs_dev=$(findmnt -no SOURCE --target "$work" 2>/dev/null || true)
if [ "$(cat "/sys/fs/ext4/${fs_dev#/dev/}/journal_task" 2>/dev/null)" = "<none>" ]; then settle_wait=75; fi
settle_fs() { [ "$settle_wait" = 0 ] || sleep "$settle_wait"; }

# enqueue_seq and enqueue_conc CONTENDER VARIANT COMMAND...
enqueue_seq() {
  local c=$1 v=$2; shift 2
  settle_fs
  rec "$c" "$v" enqueue "$("$timeit" -n "$SEQ_RUNS" -warmup 5 -in "$work/msg4k.eml" -- "$@" || true)"
}
enqueue_conc() {
  local c=$1 v=$2 n=$3; shift 3
  settle_fs
  rec "$c" "$v" enqueue_conc "$("$timeit" -n "$n" -c "$CONC" -in "$work/msg4k.eml" -- "$@" || true)"
}
# rss COMMAND...: peak RSS in KB (/usr/bin/time's %M) of COMMAND < big.eml.
rss() {
  /usr/bin/time -f 'RSS=%M' "$@" <"$work/big.eml" >/dev/null 2>"$work/rss.err" || true
  sed -n 's/^RSS=//p' "$work/rss.err" | tail -1
}
# wait_count N COMMAND...: wait (up to 5 min) until COMMAND prints N.
wait_count() {
  local n=$1; shift
  for _ in $(seq 3000); do
    [ "$("$@")" = "$n" ] && return 0
    sleep 0.1
  done
  echo "run.sh: queue has $("$@") messages, not $n" >&2
  return 1
}

# --- machine -----------------------------------------------------------------

say "machine"
cat >"$work/machine.json" <<JSON
{"date":"$(date -u +%Y-%m-%dT%H:%M:%SZ)","nproc":$(nproc),
 "memory_mb":$(free -m | awk '/^Mem:/{print $2}'),
 "kernel":"$(uname -r)","cpu":"$(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)",
 "go":"$(go version | sed 's/^go version //')","postie":"$(git describe --tags --always --dirty 2>/dev/null || echo dev)",
 "fs":"$(findmnt -no FSTYPE --target "$work")$([ "$settle_wait" = 0 ] || echo ", no journal: each timed enqueue waits ${settle_wait} s after what came before")",
 "load_start":"$(cut -d' ' -f1-3 /proc/loadavg)",
 "counts":{"seq_runs":$SEQ_RUNS,"concurrency":$CONC,"flush_msgs":$FLUSH_MSGS,"msmtp_flush_msgs":$MSMTP_FLUSH_MSGS,"blast_msgs":$BLAST_MSGS,"big_mb":$BIG_MB,"scale_msgs":$SCALE_MSGS}}
JSON
cat "$work/machine.json"

# Linux delays an ACK by up to 40 ms; a client that sends two small
# segments in a row without TCP_NODELAY waits for that ACK under Nagle's
# rule. Against postie-sink on loopback msmtp stalls so twice per message
# (~100 ms a message instead of ~10; dma and nullmailer showed the same
# ~100 ms), which says nothing about the clients' own work. quickack on
# the loopback route removes the stall for every contender alike (Postie
# and blast set TCP_NODELAY and are not affected); QUICKACK=0 keeps the
# kernel default.
if [ "${QUICKACK:-1}" = 1 ]; then
  route_orig=$(ip route show table local exact 127.0.0.1/32 | head -1)
  if [ -n "$route_orig" ] && [[ $route_orig != *quickack* ]]; then
    # shellcheck disable=SC2086
    ip route change $route_orig table local quickack 1
    echo "loopback route: $(ip route show table local exact 127.0.0.1/32)"
  else
    route_orig=
  fi
fi
sed -i "s|\"load_start\"|\"quickack\":\"${QUICKACK:-1}\",\"load_start\"|" "$work/machine.json"

# This machine may be shared: before each contender, wait (up to
# QUIET_WAIT seconds) until no test suite runs, and log every moment one
# runs during the measurements, so that a disturbed figure is known.
busy() {
  local p
  for p in $(pgrep -f 'scripts/test\.sh|\.ci/run|go test |\.test( |$)|torture|fuzz' || true); do
    # Not this script's own pgrep, nor one that is already gone.
    case $(tr '\0' ' ' </proc/"$p"/cmdline 2>/dev/null) in
      '' | pgrep*) ;;
      *) echo "$p"; return ;;
    esac
  done
}
quiet_wait() {
  local i
  for i in $(seq "${QUIET_WAIT:-600}"); do
    [ -z "$(busy)" ] && return 0
    [ "$i" = 1 ] && echo "   waiting for another test suite to finish"
    sleep 1
  done
  echo "$(date +%T) still busy after ${QUIET_WAIT:-600}s; measuring anyway" | tee -a "$work/interference.log"
}
: >"$work/interference.log"
( set +e
  while sleep 2; do
    p=$(busy)
    [ -n "$p" ] && echo "$(date +%T) $(tr '\0' ' ' </proc/"$p"/cmdline 2>/dev/null | cut -c1-100)"
  done >>"$work/interference.log" ) &
monitor_pid=$!

say "floor: /bin/true"
rec true - enqueue "$("$timeit" -n "$SEQ_RUNS" -warmup 5 -- /bin/true)"
rec true - enqueue_conc "$("$timeit" -n "$FLUSH_MSGS" -c "$CONC" -- /bin/true)"

say "the sink's own rate"
for c in 4 8; do
  sink_start "$BLAST_MSGS"
  out=$("$bench/blast" -addr "$ADDR" -ca "$work/sink-ca.pem" -user "$USER_NAME" -pass "$USER_PASS" -n "$BLAST_MSGS" -c "$c" -file "$work/msg4k.eml")
  for _ in $(seq 100); do [ -s "$work/sink.done" ] && break; sleep 0.05; done
  rec sink "conns=$c" flush "$(with_sink "" "$out")"
done
sink_start

# --- Postie ----------------------------------------------------------------------

postie_conf() { # FILE CONNECTIONS [dkim]
  cat >"$1" <<TOML
hostname = "bench.example"
spool_dir = "$work/postie-spool"

[smarthost]
address = "127.0.0.1:$port"
tls = "starttls"
username = "$USER_NAME"
password_file = "$work/postie-password"
ca_file = "$work/sink-ca.pem"

[queue]
deliver = "queue"
connections = $2

[log]
target = "stderr"
TOML
  if [ "${3:-}" = dkim ]; then
    cat >>"$1" <<TOML

[dkim]
domain = "example.com"
selector = "bench"
private_key_file = "$work/dkim.pem"
TOML
  fi
}
printf '%s\n' "$USER_PASS" >"$work/postie-password"
chmod 600 "$work/postie-password"
postie_queued() { find "$work/postie-spool/incoming" "$work/postie-spool/queue" -maxdepth 1 -type f -name '[0-9A-Z]*' 2>/dev/null | wc -l; }

bench_postie() {
  local first=1 conns conf
  for conns in $POSTIE_CONNS; do
    say "postie (connections = $conns)"
    conf=$work/postie-$conns.toml
    postie_conf "$conf" "$conns"
    rm -rf "$work/postie-spool"
    local send=("$repo/bin/sendmail" -C "$conf" -t -i)
    if [ $first = 1 ]; then
      enqueue_seq postie - "${send[@]}"
      rm -rf "$work/postie-spool"
    fi
    if [ $first = 1 ]; then
      enqueue_conc postie "conns=$conns" "$FLUSH_MSGS" "${send[@]}"
    else
      # The same workload as the first configuration's, so not timed again:
      # right after Postie's own flush it pays for the inodes that flush
      # freed (see settle_fs), which no peer's sample does.
      "$timeit" -n "$FLUSH_MSGS" -c "$CONC" -in "$work/msg4k.eml" -- "${send[@]}" >/dev/null
    fi
    wait_count "$FLUSH_MSGS" postie_queued
    sink_start "$FLUSH_MSGS"
    rec postie "conns=$conns" flush "$(with_sink "$FLUSH_MSGS" "$("$timeit" -done "$work/sink.done" -timeout "$FLUSH_TIMEOUT" -- "$repo/bin/mailq" -C "$conf" -q || true)")"
    first=0
  done
  say "postie: peak RSS, $BIG_MB MB message, DKIM (RSA 2048) on"
  conf=$work/postie-dkim.toml
  postie_conf "$conf" 4 dkim
  rm -rf "$work/postie-spool"
  local e f
  e=$(rss "$repo/bin/sendmail" -C "$conf" -t -i)
  sink_start 1
  f=$(rss "$repo/bin/mailq" -C "$conf" -q)
  [ -s "$work/sink.done" ] || f=null
  rec postie dkim memory "{\"enqueue_kb\":${e:-null},\"flush_kb\":${f:-null}}"
}

scale_postie() {
  local conf=$work/postie-4.toml n
  postie_conf "$conf" 4
  say "postie scale: mailq over $SCALE_MSGS queued messages"
  rm -rf "$work/postie-spool"
  "$bench/fill" -spool "$work/postie-spool" -n "$SCALE_MSGS" -msg "$work/msg4k.eml" -c 16
  rec postie incoming mailq "$("$timeit" -n 3 -warmup 1 -- sh -c "exec '$repo/bin/mailq' -C '$conf' >/dev/null")"
  rec postie incoming mailq_json "$("$timeit" -n 3 -warmup 1 -- sh -c "exec '$repo/bin/mailq' -C '$conf' --json >/dev/null")"
  # After a flush that could not deliver, the messages are in queue/.
  "$bench/fill" -spool "$work/postie-spool" -n 0 -pickup
  rec postie queue mailq "$("$timeit" -n 3 -warmup 1 -- sh -c "exec '$repo/bin/mailq' -C '$conf' >/dev/null")"
  rec postie queue mailq_json "$("$timeit" -n 3 -warmup 1 -- sh -c "exec '$repo/bin/mailq' -C '$conf' --json >/dev/null")"
  for n in $SCALE_FLUSHES; do
    say "postie scale: flush $n"
    rm -rf "$work/postie-spool"
    "$bench/fill" -spool "$work/postie-spool" -n "$n" -msg "$work/msg4k.eml" -c 16
    sink_start "$n"
    rec postie "n=$n" scale_flush "$(with_sink "$n" "$("$timeit" -done "$work/sink.done" -timeout "$FLUSH_TIMEOUT" -- "$repo/bin/mailq" -C "$conf" -q || true)")"
  done
  rm -rf "$work/postie-spool"
}

# --- peers ---------------------------------------------------------------------------

# Packages a peer pulls in that were not installed before are purged with it.
peer_install() { # PEER PACKAGE...
  local peer=$1; shift
  dpkg-query -W -f '${Package}\n' | sort >"$work/pkgs.before"
  current_peer=$peer
  apt_install "$@" || { echo "run.sh: apt-get install $* failed (see $work/apt.log)" >&2; return 1; }
  dpkg-query -W -f '${Package}\n' | sort >"$work/pkgs.after"
  comm -13 "$work/pkgs.before" "$work/pkgs.after" >"$work/pkgs.$peer"
  echo "   installed: $(tr '\n' ' ' <"$work/pkgs.$peer")"
}
peer_purge() {
  local peer=$1
  [ "$peer" = postfix ] && { postfix stop >/dev/null 2>&1 || true; }
  if [ -s "$work/pkgs.$peer" ]; then
    # shellcheck disable=SC2046
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 purge -y $(cat "$work/pkgs.$peer") >>"$work/apt.log" 2>&1 || true
  fi
  current_peer=
}
# smoke PEER COMMAND...: with a sink expecting one message, run COMMAND
# (which must get one message to the sink) and wait up to 60 s for it.
smoke() {
  local peer=$1; shift
  sink_start 1
  "$@" >"$work/smoke.$peer" 2>&1 || true
  for _ in $(seq 600); do [ -s "$work/sink.done" ] && return 0; sleep 0.1; done
  echo "run.sh: $peer did not deliver a test message to the sink; skipping it. Its output:" >&2
  cat "$work/smoke.$peer" >&2
  rec "$peer" - failed '{"failed":true}'
  return 1
}
# flush_timed PEER VARIANT N [-kill] COMMAND...: a fresh sink expecting N
# messages, then COMMAND timed until the sink has them all.
flush_timed() {
  local peer=$1 variant=$2 n=$3; shift 3
  local kill=()
  [ "$1" = -kill ] && { kill=(-kill); shift; }
  sink_start "$n"
  rec "$peer" "$variant" flush "$(with_sink "$n" "$("$timeit" "${kill[@]}" -done "$work/sink.done" -timeout "$FLUSH_TIMEOUT" -- "$@" || true)")"
}

# --- postfix
postfix_conf() { # REUSE
  postfix_null_client "$port" "$work/sink-ca.pem" "$USER_NAME" "$USER_PASS" "$work/postfix.log" "$1"
}
postfix_deferred() { find /var/spool/postfix/deferred -type f | wc -l; }
postfix_pending() { find /var/spool/postfix/maildrop /var/spool/postfix/incoming /var/spool/postfix/active -type f | wc -l; }
postfix_settled() { # the number deferred, once nothing is in flight
  if [ "$(postfix_pending)" = 0 ]; then postfix_deferred; else echo busy; fi
}
# postfix_hold / postfix_release: defer_transports on and off (the sink's
# certificate may have changed too: the reload makes new smtp processes
# read it).
postfix_hold() { postconf -e defer_transports=smtp; postfix reload >/dev/null 2>&1; sleep 1; }
postfix_release() { postconf -e defer_transports=; postfix reload >/dev/null 2>&1; sleep 2; }
postfix_fill_and_flush() { # VARIANT
  postfix_hold
  postsuper -d ALL >/dev/null 2>&1 || true
  enqueue_conc postfix "$1" "$FLUSH_MSGS" /usr/sbin/sendmail -t -i
  wait_count "$FLUSH_MSGS" postfix_settled || true
  say "postfix ($1): flush"
  sink_start "$FLUSH_MSGS"
  postfix_release
  rec postfix "$1" flush "$(with_sink "$FLUSH_MSGS" "$("$timeit" -done "$work/sink.done" -timeout "$FLUSH_TIMEOUT" -- postqueue -f || true)")"
  postsuper -d ALL >/dev/null 2>&1 || true
}
bench_postfix() {
  say "postfix: install"
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
  peer_install postfix postfix libsasl2-modules || return 1
  postfix_conf no
  postfix start >/dev/null 2>&1 || postfix reload >/dev/null 2>&1
  sleep 1
  smoke postfix /usr/sbin/sendmail -t -i <"$work/msg4k.eml" || { tail -20 "$work/postfix.log" >&2; return 1; }
  say "postfix: enqueue"
  postfix_hold
  enqueue_seq postfix - /usr/sbin/sendmail -t -i
  wait_count "$((SEQ_RUNS + 5))" postfix_settled || true
  postfix_fill_and_flush -
  say "postfix: smtp_tls_connection_reuse = yes"
  postconf -e smtp_tls_connection_reuse=yes
  postfix_fill_and_flush reuse
  say "postfix: peak RSS, $BIG_MB MB message"
  # A restart, so that the daemons' peak RSS is this message's alone.
  postconf -e defer_transports=smtp
  postfix stop >/dev/null 2>&1; sleep 1; postfix start >/dev/null 2>&1; sleep 1
  local e f
  e=$(rss /usr/sbin/sendmail -t -i)
  wait_count 1 postfix_settled || true
  sink_start 1
  postfix_release
  postqueue -f
  for _ in $(seq 1200); do [ -s "$work/sink.done" ] && break; sleep 0.1; done
  # Postfix delivers from daemons, not from a child of postqueue: take
  # the largest peak RSS of its processes (the smtp client, or tlsproxy).
  f=$(for p in $(pgrep -f '^(/usr/lib/postfix/sbin/)?(smtp|tlsproxy|qmgr|cleanup|pickup|scache|tlsmgr)( |$)'); do
        awk -v n="$(cat /proc/"$p"/comm 2>/dev/null)" '/^VmHWM:/{print $2, n}' /proc/"$p"/status 2>/dev/null
      done | sort -n | tail -1)
  if [ -s "$work/sink.done" ] && [ -n "$f" ]; then
    rec postfix reuse memory "{\"enqueue_kb\":${e:-null},\"flush_kb\":${f%% *},\"flush_process\":\"${f#* }\"}"
  else
    rec postfix reuse memory "{\"enqueue_kb\":${e:-null},\"flush_kb\":null}"
  fi
}

# --- dma
dma_queued() { find /var/spool/dma -maxdepth 1 -type f -name 'Q*' | wc -l; }
bench_dma() {
  say "dma: install"
  printf 'dma dma/mailname string bench.example\ndma dma/relayhost string 127.0.0.1\n' | debconf-set-selections
  peer_install dma dma || return 1
  cat >/etc/dma/dma.conf <<CF
SMARTHOST 127.0.0.1
PORT $port
AUTHPATH /etc/dma/auth.conf
SECURETRANSFER
STARTTLS
MAILNAME bench.example
CF
  printf '%s|127.0.0.1:%s\n' "$USER_NAME" "$USER_PASS" >/etc/dma/auth.conf
  chown root:mail /etc/dma/auth.conf
  chmod 640 /etc/dma/auth.conf
  smoke dma /usr/sbin/sendmail -t -i <"$work/msg4k.eml" || return 1
  echo DEFER >>/etc/dma/dma.conf
  say "dma: enqueue"
  enqueue_seq dma - /usr/sbin/sendmail -t -i
  rm -f /var/spool/dma/*
  enqueue_conc dma - "$FLUSH_MSGS" /usr/sbin/sendmail -t -i
  wait_count "$FLUSH_MSGS" dma_queued || true
  say "dma: flush"
  flush_timed dma - "$FLUSH_MSGS" dma -q
  rm -f /var/spool/dma/*
  say "dma: peak RSS, $BIG_MB MB message"
  local e f
  e=$(rss /usr/sbin/sendmail -t -i)
  sink_start 1
  # dma -q forks a process per message and exits at once: timeit -reap
  # waits for those too and reports the largest peak RSS among them.
  f=$("$timeit" -reap -done "$work/sink.done" -timeout 10m -- dma -q || true)
  f=$(printf '%s' "$f" | sed -n 's/.*"max_rss_kb":\([0-9]*\).*/\1/p')
  [ -s "$work/sink.done" ] || f=
  rec dma - memory "{\"enqueue_kb\":${e:-null},\"flush_kb\":${f:-null}}"
  rm -f /var/spool/dma/*
}

# --- nullmailer
nm_queued() { find /var/spool/nullmailer/queue -maxdepth 1 -type f | wc -l; }
bench_nullmailer() {
  say "nullmailer: install"
  printf 'nullmailer shared/mailname string bench.example\nnullmailer nullmailer/relayhost string 127.0.0.1\n' | debconf-set-selections
  peer_install nullmailer nullmailer || return 1
  echo bench.example >/etc/nullmailer/me
  echo bench.example >/etc/nullmailer/defaultdomain
  printf '127.0.0.1 smtp --port=%s --starttls --user=%s --pass=%s --x509cafile=%s\n' \
    "$port" "$USER_NAME" "$USER_PASS" "$work/sink-ca.pem" >/etc/nullmailer/remotes
  chown mail:mail /etc/nullmailer/remotes
  chmod 600 /etc/nullmailer/remotes
  # nullmailer-send, as its service runs it; started and stopped by timeit.
  local send=(setpriv --reuid=mail --regid=mail --init-groups /usr/sbin/nullmailer-send)
  /usr/sbin/sendmail -t -i <"$work/msg4k.eml"
  smoke nullmailer "$timeit" -kill -done "$work/sink.done" -timeout 60s -- "${send[@]}" || return 1
  say "nullmailer: enqueue (nullmailer-send not running)"
  enqueue_seq nullmailer - /usr/sbin/sendmail -t -i
  rm -f /var/spool/nullmailer/queue/*
  enqueue_conc nullmailer - "$FLUSH_MSGS" /usr/sbin/sendmail -t -i
  wait_count "$FLUSH_MSGS" nm_queued || true
  say "nullmailer: flush (start nullmailer-send)"
  flush_timed nullmailer - "$FLUSH_MSGS" -kill "${send[@]}"
  rm -f /var/spool/nullmailer/queue/*
  say "nullmailer: peak RSS, $BIG_MB MB message"
  local e f
  e=$(rss /usr/sbin/sendmail -t -i)
  sink_start 1
  f=$("$timeit" -kill -done "$work/sink.done" -timeout 10m -- "${send[@]}" || true)
  f=$(printf '%s' "$f" | sed -n 's/.*"max_rss_kb":\([0-9]*\).*/\1/p')
  [ -s "$work/sink.done" ] || f=
  rec nullmailer - memory "{\"enqueue_kb\":${e:-null},\"flush_kb\":${f:-null}}"
  rm -f /var/spool/nullmailer/queue/*
}

# --- msmtp
bench_msmtp() {
  say "msmtp: install"
  echo "msmtp msmtp/apparmor boolean false" | debconf-set-selections
  peer_install msmtp msmtp msmtp-mta || return 1
  cat >/root/.msmtprc <<RC
defaults
tls on
tls_starttls on
tls_trust_file $work/sink-ca.pem
auth on
account default
host 127.0.0.1
port $port
from bench@example.com
user $USER_NAME
password $USER_PASS
RC
  chmod 600 /root/.msmtprc
  smoke msmtp /usr/sbin/sendmail -t -i <"$work/msg4k.eml" || return 1
  say "msmtp: enqueue (it sends before it exits)"
  sink_start
  enqueue_seq msmtp - /usr/sbin/sendmail -t -i
  enqueue_conc msmtp - "$MSMTP_FLUSH_MSGS" /usr/sbin/sendmail -t -i
  say "msmtp: flush ($MSMTP_FLUSH_MSGS runs of msmtp, $CONC at once)"
  sink_start "$MSMTP_FLUSH_MSGS"
  rec msmtp - flush "$(with_sink "$MSMTP_FLUSH_MSGS" "$("$timeit" -n "$MSMTP_FLUSH_MSGS" -c "$CONC" -in "$work/msg4k.eml" -done "$work/sink.done" -timeout "$FLUSH_TIMEOUT" -- msmtp -t || true)")"
  say "msmtp: peak RSS, $BIG_MB MB message"
  local e
  sink_start 1
  e=$(rss /usr/sbin/sendmail -t -i)
  [ -s "$work/sink.done" ] || e=
  rec msmtp - memory "{\"enqueue_kb\":${e:-null},\"flush_kb\":${e:-null}}"
  rm -f /root/.msmtprc
}

# --- the run ------------------------------------------------------------------------

if [ "${POSTIE:-1}" = 1 ]; then
  quiet_wait
  bench_postie
fi
for peer in $PEERS; do
  quiet_wait
  sink_start
  # A peer that fails is reported and skipped, not the end of the run.
  "bench_$peer" || echo "run.sh: $peer: failed; see above and $work" >&2
  peer_purge "$peer"
done
if [ "${SCALE:-1}" = 1 ]; then
  quiet_wait
  scale_postie
fi
sink_stop
kill "$monitor_pid" 2>/dev/null || true
monitor_pid=
samples=$(grep -c . "$work/interference.log" || true)
if [ "$samples" -gt 0 ]; then
  echo "run.sh: other test suites ran during the measurements ($work/interference.log):" >&2
  head -20 "$work/interference.log" >&2
fi
sed -i "s|\"load_start\"|\"interference_samples\":$samples,\"load_start\"|" "$work/machine.json"

sed -i "s|\"load_start\"|\"load_end\":\"$(cut -d' ' -f1-3 /proc/loadavg)\",\"load_start\"|" "$work/machine.json"
say "report"
mkdir -p bench/peers/results
date=$(date +%Y-%m-%d)
"$bench/report" -results "$results" -machine "$work/machine.json" \
  -json "bench/peers/results/$date.json" -chart bench/peers/results/chart.png -md BENCHMARKS.md
echo "run.sh: bench/peers/results/$date.json, bench/peers/results/chart.png, BENCHMARKS.md"
