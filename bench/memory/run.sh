#!/usr/bin/env bash
# Peak RSS of Postie with DKIM signing on, for a 60 MiB message and a
# 4 KiB baseline:
#   enqueue  sendmail -t -i < msg
#   flush    mailq -q  (reads the spool file twice through internal/conform:
#            once to DKIM-sign it with an RSA 2048 and an Ed25519 key, once
#            to send it; the text part has lines over 998 octets, so it is
#            re-encoded as quoted-printable on the way)
# to a loopback smarthost (tools/postie-sink, STARTTLS + AUTH), which
# stores what it receives so that the script can check that each message
# went out signed with both keys and, for the large one, re-encoded; then
# it deletes it. Peak RSS is /usr/bin/time's %M (Debian package time). Targets:
# enqueue <= 16 MiB, flush <= 24 MiB; the exit status is 1 if one is
# missed.
#
#   bash bench/memory/run.sh            # RUNS=3 runs per case; the table shows the largest
#   RUNS=1 SIZE=$((200<<20)) bash bench/memory/run.sh
#
# Where the memory goes: the benchmarks in flush_test.go run the same
# enqueue and flush in-process for go test -memprofile (see there).
set -euo pipefail
cd "$(dirname "$0")/../.."

runs=${RUNS:-3}
size=${SIZE:-$((60 << 20))}
enqueue_target_kb=$((16 * 1024))
flush_target_kb=$((24 * 1024))

for tool in /usr/bin/time openssl go; do
  command -v "$tool" >/dev/null || { echo "run.sh: $tool not found (/usr/bin/time: Debian package time)" >&2; exit 2; }
done

work=$(mktemp -d)
sink_pid=
cleanup() {
  if [ -n "$sink_pid" ]; then kill "$sink_pid" 2>/dev/null || true; wait "$sink_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

echo "== build (as make build: CGO_ENABLED=0 -trimpath -ldflags '-s -w')"
CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o "$work/bin/sendmail" ./cmd/sendmail
CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o "$work/bin/mailq" ./cmd/mailq
go build -o "$work/bin/postie-sink" ./tools/postie-sink
go build -o "$work/bin/genmsg" ./bench/memory/genmsg

echo "== keys, smarthost, config"
openssl genrsa -traditional -out "$work/rsa.pem" 2048 2>/dev/null || openssl genrsa -out "$work/rsa.pem" 2048 2>/dev/null
openssl genpkey -algorithm ed25519 -out "$work/ed25519.pem"
chmod 600 "$work/rsa.pem" "$work/ed25519.pem"

mkdir "$work/received"
"$work/bin/postie-sink" -dir "$work/received" -user u -pass p -info "$work/sink.env" 2>"$work/sink.log" &
sink_pid=$!
for _ in $(seq 100); do [ -s "$work/sink.env" ] && break; sleep 0.05; done
[ -s "$work/sink.env" ] || { echo "run.sh: postie-sink did not start" >&2; cat "$work/sink.log" >&2; exit 1; }
# shellcheck disable=SC1091
. "$work/sink.env"

cat >"$work/postie.toml" <<TOML
hostname = "web1.example.com"
spool_dir = "$work/spool"

[smarthost]
address = "$ADDR"
tls = "starttls"
username = "u"
password = "p"
ca_file = "$CA_FILE"

[dkim]
domain = "example.com"
selector = "rsa"
private_key_file = "$work/rsa.pem"

[[dkim.key]]
domain = "example.com"
selector = "ed"
private_key_file = "$work/ed25519.pem"

[queue]
deliver = "queue"

[log]
target = "stderr"
TOML
export POSTIE_CONFIG="$work/postie.toml"

"$work/bin/genmsg" -size 4096 >"$work/msg4k"
"$work/bin/genmsg" -size "$size" >"$work/msgbig"
echo "messages: msg4k $(stat -c %s "$work/msg4k") octets, msgbig $(stat -c %s "$work/msgbig") octets"

# measure NAME CMD...: runs CMD under /usr/bin/time, appends "NAME KB
# seconds" to results, and fails if CMD fails.
measure() {
  local name=$1
  shift
  if ! /usr/bin/time -f '%M %e' -o "$work/time.out" "$@" 2>"$work/cmd.err"; then
    echo "run.sh: $name: $* failed:" >&2
    cat "$work/cmd.err" >&2
    exit 1
  fi
  echo "$name $(cat "$work/time.out")" >>"$work/results"
}

# delivered NAME: the queue must be empty and the smarthost must hold one
# message, signed with both keys (and for the large one, with its text
# part in quoted-printable); then it is removed.
delivered() {
  local out files header
  out=$("$work/bin/mailq")
  [ "$out" = "Mail queue is empty" ] || { echo "run.sh: queue not empty after mailq -q:" >&2; echo "$out" >&2; exit 1; }
  files=("$work"/received/*.eml)
  [ "${#files[@]}" = 1 ] && [ -f "${files[0]}" ] || { echo "run.sh: $1: the smarthost holds ${#files[@]} messages, want 1" >&2; exit 1; }
  header=$(head -c 65536 "${files[0]}" | tr -d '\r\n\t ')
  for sel in rsa ed; do
    [[ $header == *"DKIM-Signature:"*"d=example.com;"*"s=$sel;"* ]] ||
      { echo "run.sh: $1: sent without a DKIM-Signature d=example.com s=$sel" >&2; exit 1; }
  done
  if [ "$1" = msgbig ] && ! grep -q -m1 '^Content-Transfer-Encoding: quoted-printable' "${files[0]}"; then
    echo "run.sh: $1: the text part was not re-encoded as quoted-printable" >&2
    exit 1
  fi
  rm -f "${files[0]}"
}

: >"$work/results"
for i in $(seq "$runs"); do
  echo "== run $i of $runs"
  for m in msg4k msgbig; do
    measure "enqueue-$m" "$work/bin/sendmail" -t -i <"$work/$m"
    measure "flush-$m" "$work/bin/mailq" -q
    delivered "$m"
  done
done

kill "$sink_pid"
wait "$sink_pid" 2>/dev/null || true
sink_pid=
want=$((runs * 2))
got=$(sed -n 's/^postie-sink: \([0-9]*\) messages received$/\1/p' "$work/sink.log")
[ "$got" = "$want" ] || { echo "run.sh: the smarthost received ${got:-?} messages, want $want" >&2; exit 1; }

echo
echo "== peak RSS (largest of $runs runs; all runs in KB in the last column)"
printf '%-30s %10s %8s %8s %7s  %s\n' case "max KB" "max MB" target "" runs
missed=0
row() {
  local key=$1 label=$2 target_kb=$3
  local vals max secs
  vals=$(awk -v k="$key" '$1 == k { print $2 }' "$work/results" | tr '\n' ' ')
  max=$(awk -v k="$key" '$1 == k && $2 > m { m = $2 } END { print m }' "$work/results")
  secs=$(awk -v k="$key" '$1 == k && $3 > s { s = $3 } END { print s }' "$work/results")
  local verdict="-" target="-"
  if [ "$target_kb" -gt 0 ]; then
    target="<=$((target_kb / 1024))MB"
    if [ "$max" -le "$target_kb" ]; then verdict=ok; else verdict=MISSED; missed=1; fi
  fi
  printf '%-30s %10d %8.1f %8s %7s  %s(max %ss)\n' "$label" "$max" "$(awk -v k="$max" 'BEGIN { print k / 1024 }')" "$target" "$verdict" "$vals" "$secs"
}
big_mb=$(( ($(stat -c %s "$work/msgbig") + (1 << 19)) >> 20 ))
row enqueue-msg4k "enqueue 4 KB (sendmail)" 0
row flush-msg4k "flush 4 KB (mailq -q)" 0
row enqueue-msgbig "enqueue ${big_mb} MB (sendmail)" "$enqueue_target_kb"
row flush-msgbig "flush ${big_mb} MB (mailq -q)" "$flush_target_kb"
exit "$missed"
