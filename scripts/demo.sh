#!/usr/bin/env bash
# Postie end to end, no root, no config editing: start a loopback smarthost
# (STARTTLS + AUTH), queue a message with sendmail -t as cron or PHP would,
# list the queue, flush it, and show what the smarthost received.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x bin/sendmail ] || make build >/dev/null
work=$(mktemp -d)
trap 'kill "$sink_pid" 2>/dev/null || true; rm -rf "$work"' EXIT
mkdir -p "$work/received"
bin/postie-sink -dir "$work/received" -user demo -pass demo-secret -info "$work/sink.env" 2>/dev/null &
sink_pid=$!
for _ in $(seq 100); do [ -s "$work/sink.env" ] && break; sleep 0.05; done
# shellcheck disable=SC1091
. "$work/sink.env"
printf 'demo-secret\n' >"$work/password"
chmod 600 "$work/password"
cat >"$work/postie.toml" <<TOML
hostname = "demo.example"
spool_dir = "$work/spool"

[smarthost]
address = "$ADDR"
tls = "starttls"
username = "demo"
password_file = "$work/password"
ca_file = "$CA_FILE"

[queue]
deliver = "queue"   # the demo flushes by hand to show the queue first
TOML
export POSTIE_CONFIG="$work/postie.toml"

echo "== sendmail -t -i  (a message as PHP's mail() hands it over)"
printf 'To: Alice <alice@example.com>\nCc: bob@example.com\nBcc: audit@example.com\nSubject: Hello from Postie\n\nIt works.\n' | bin/sendmail -t -i
echo "exit $?"
echo
echo "== mailq"
bin/mailq
echo
echo "== mailq -q  (deliver to the smarthost at $ADDR over STARTTLS with AUTH)"
bin/mailq -q
echo
echo "== mailq"
bin/mailq
echo
echo "== what the smarthost received"
for f in "$work"/received/*.eml; do cat "$f"; done | tr -d '\r'
