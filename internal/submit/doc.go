// Package submit is Postie's SMTP submission client: it hands spooled
// messages to the configured smarthost, and tells the queue runner, per
// recipient, whether each was delivered, failed temporarily, or failed
// permanently, and whether the outcome is uncertain.
//
// # API
//
//	func Dial(ctx context.Context, cfg *Config) (*Session, error)
//	func (s *Session) Send(ctx context.Context, m *Message) *Result
//	func (s *Session) Reset() error
//	func (s *Session) Usable() bool
//	func (s *Session) Relay() string // "host[ip]:port"
//	func (s *Session) Close() error
//	func (r *Result) Failure() *Error
//
// Dial connects, reads the greeting, sends EHLO, upgrades to TLS (STARTTLS
// and a second EHLO, or implicit TLS), and authenticates. The runner then
// calls Send once per message on the same Session while Usable reports
// true, and Close at the end. Send returns a Result with one RcptResult
// per recipient, the transaction error if any, and whether the outcome is
// Uncertain; the Result doc says how to read it. Every failure, from Dial,
// Reset or in Result.Err, is an *Error naming the Step (config, connect,
// tls, ehlo, auth, mail, rcpt, data) with the server's reply if there was
// one, and Permanent only when retrying cannot help (see Error).
//
// # Protocol
//
// The SMTP dialogue is github.com/emersion/go-smtp's Client; this package
// adds what go-smtp v0.25.1 leaves to the caller:
//
//   - Connecting: go-smtp's Dial functions use a fixed 30 s dialer and no
//     context. Here the connection is made with net.Dialer and
//     DialContext (Config.ConnectTimeout) and handed to go-smtp, wrapped
//     in tls.Client first for implicit TLS.
//   - Timeouts: go-smtp applies CommandTimeout to each command and
//     SubmissionTimeout to the reply after the final dot, set here from
//     Config (RFC 5321 section 4.5.3.2: 5 minutes per command, 10 after
//     the dot). It sets no deadline while the message content is written;
//     here each write extends the write deadline by DataTimeout.
//   - The EHLO name: go-smtp's only STARTTLS entry point
//     (NewClientStartTLS) sends "EHLO localhost" before STARTTLS, which
//     strict relays refuse. The connection under it rewrites that line to
//     Config.Hostname; the EHLO after STARTTLS is sent with Hello.
//     ServerName for certificate verification is the host of
//     Config.Address.
//   - TLS before AUTH: go-smtp's Auth does not check that the connection
//     is encrypted. Here AUTH is sent only after TLSConnectionState shows
//     a completed handshake with a verified certificate; with TLS "none",
//     only if InsecureAllowPlainAuth is set and the server is on loopback.
//     If STARTTLS is not offered or the handshake or verification fails,
//     the session ends with Step "tls" before anything else is sent.
//   - Debug output: go-smtp's DebugWriter shows AUTH payloads in base64;
//     the dialogue written to Config.Debug has them replaced by
//     "<redacted>", and the message content replaced by its size.
//   - Mechanisms: go-sasl provides PLAIN and OAUTHBEARER; CRAM-MD5,
//     XOAUTH2 and a tolerant LOGIN are implemented here (see below).
//
// # Authentication
//
// AUTH is attempted when Config.Username is set. Config.AuthMechanism
// forces one mechanism, and Dial fails if the server does not offer it
// (no downgrade). Otherwise the first one the server offers is taken from:
//
//	with a Token:    OAUTHBEARER, XOAUTH2
//	with a Password: PLAIN, LOGIN, CRAM-MD5
//
// Token mechanisms come first: a bearer token is scoped and revocable, a
// password is neither. PLAIN is preferred to LOGIN and both to CRAM-MD5
// on purpose. AUTH is only ever sent over verified TLS (or, when
// explicitly allowed, over loopback), so the channel already protects the
// password; CRAM-MD5's challenge-response then adds nothing and costs a
// lot: it rests on HMAC-MD5, one observed exchange permits an offline
// dictionary attack on the password, and the server must store the
// password in recoverable form. PLAIN (RFC 4616) is the standard,
// single-round-trip mechanism; LOGIN is its never-standardised twin.
//
// A rejected token (a 535 reply, or an OAUTHBEARER/XOAUTH2 error
// challenge) is refreshed once with Token(ctx, true) and AUTH is retried
// once. AUTH failures are temporary. Neither errors nor the debug log
// contain the password or the token.
//
// # Transactions
//
// MAIL FROM carries SIZE= (RFC 1870) when offered, and a message larger
// than the server's announced limit fails permanently before MAIL;
// BODY=8BITMIME (RFC 6152) when offered; SMTPUTF8 (RFC 6531) when the
// message needs it and the server offers it; the DSN parameters RET and
// ENVID, and NOTIFY on RCPT (RFC 3461), only when the server offers DSN.
// Without SMTPUTF8, domains are sent as A-labels (IDNA) and addresses
// with a non-ASCII local part fail permanently (5.6.7).
//
// Each recipient gets its own result; if none is accepted, the
// transaction is reset with RSET and DATA is not sent. After an SMTP
// rejection the session stays usable for the next message; after a
// network error, a timeout, a 421 reply, an aborted content transfer or
// an uncertain outcome it is dead.
//
// # Uncertain outcomes
//
// Once the final "." may have reached the server, a missing reply
// (connection closed or reset, timeout) does not mean the message was not
// delivered: the server may have queued it and lost the connection before
// replying. Result.Uncertain then tells the runner not to send it again
// as if nothing happened. Failures before the dot are ordinary temporary
// failures: the server discards a transaction whose content did not end
// with the dot. The boundary is exact: the dot is the last thing written,
// so if a write of the final flush came back short the dot was not sent;
// if the flush completed, it may have been received.
package submit
