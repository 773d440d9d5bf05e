# shellcheck shell=bash
# postfix.sh: Postfix as the benchmarks set it up, sourced by run.sh and
# experiments/postfix-lag.sh.

# postfix_null_client PORT CA_FILE USER PASS LOG REUSE writes
# /etc/postfix/main.cf for a null client that relays everything to the
# sink on 127.0.0.1:PORT over STARTTLS (certificate checked against
# CA_FILE) with AUTH USER/PASS, logs to LOG, and sets
# smtp_tls_connection_reuse to REUSE (yes or no); delivery is not held.
postfix_null_client() {
  local port=$1 ca=$2 user=$3 pass=$4 log=$5 reuse=$6
  cat >/etc/postfix/main.cf <<CF
# bench/peers/postfix.sh: a null client relaying everything to the sink.
compatibility_level = 3.6
myhostname = bench.example
myorigin = \$myhostname
inet_interfaces = loopback-only
inet_protocols = ipv4
mydestination =
local_transport = error:local delivery is disabled
alias_maps =
alias_database =
# The sink's certificate names localhost (and 127.0.0.1, which Postfix
# does not match): connect by that name, resolved from /etc/hosts.
relayhost = [localhost]:$port
smtp_host_lookup = native
smtp_tls_security_level = secure
smtp_tls_secure_cert_match = nexthop
smtp_tls_CAfile = $ca
smtp_sasl_auth_enable = yes
smtp_sasl_password_maps = static:$user:$pass
smtp_sasl_security_options = noanonymous
smtp_sasl_tls_security_options = noanonymous
message_size_limit = 209715200
mailbox_size_limit = 0
maillog_file = $log
smtp_tls_connection_reuse = $reuse
defer_transports =
CF
  # The sink's certificate file lives outside the chroot.
  postconf -F '*/*/chroot = n'
  [ -n "$(postconf -M tlsproxy/unix 2>/dev/null)" ] || postconf -Me 'tlsproxy/unix = tlsproxy unix - - n - 0 tlsproxy'
  [ -n "$(postconf -M postlog/unix-dgram 2>/dev/null)" ] || postconf -Me 'postlog/unix-dgram = postlog unix-dgram n - n - 1 postlogd'
}
