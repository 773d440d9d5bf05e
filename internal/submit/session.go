package submit

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"
)

// TLSMode selects how the connection to the smarthost is protected.
type TLSMode string

const (
	// TLSStartTLS connects in plain text and upgrades with STARTTLS
	// (RFC 3207) before anything else, typically on port 587. If the
	// server does not offer STARTTLS, the session fails: there is no
	// fallback to plain text.
	TLSStartTLS TLSMode = "starttls"
	// TLSImplicit starts TLS on connect (RFC 8314 section 3.3), typically
	// on port 465.
	TLSImplicit TLSMode = "implicit"
	// TLSNone never uses TLS. AUTH is then refused unless
	// InsecureAllowPlainAuth is set and the server is on loopback.
	TLSNone TLSMode = "none"
)

// Default timeouts.
const (
	DefaultConnectTimeout = 30 * time.Second
	// DefaultCommandTimeout is RFC 5321 section 4.5.3.2's 5 minutes, the
	// longest it recommends for a command reply (MAIL, RCPT, and the
	// greeting).
	DefaultCommandTimeout = 5 * time.Minute
	// DefaultDataTimeout is RFC 5321 section 4.5.3.2.6's 10 minutes for
	// the reply to the final dot; it also bounds each write of the
	// content, for which the RFC recommends 3 minutes per block.
	DefaultDataTimeout = 10 * time.Minute
)

// Config describes the smarthost and how to talk to it.
type Config struct {
	// Address is host:port. The host also names the server for
	// certificate verification and appears in Relay.
	Address string
	// TLS is the TLS mode; "" means TLSStartTLS.
	TLS TLSMode
	// Hostname is the name sent with EHLO, including the EHLO before
	// STARTTLS; "" means os.Hostname.
	Hostname string

	// Username enables AUTH. With a Username, Password or Token (or both)
	// must be set; without one, AUTH is not attempted.
	Username string
	// Password returns the password; it is called once per Dial, when
	// AUTH is about to be sent.
	Password func(ctx context.Context) (string, error)
	// Token returns an OAuth2 access token for OAUTHBEARER or XOAUTH2. It
	// is called with refresh=false first; if the server rejects the token
	// (a 535 reply, or an error challenge), it is called once more with
	// refresh=true and AUTH is retried once.
	Token func(ctx context.Context, refresh bool) (string, error)
	// AuthMechanism forces one mechanism (PLAIN, LOGIN, CRAM-MD5, XOAUTH2,
	// OAUTHBEARER). If the server does not offer it, Dial fails rather
	// than use another. "" picks the strongest offered, in the order the
	// package documentation gives under "Authentication".
	AuthMechanism string

	// CAFile is a PEM bundle trusted in addition to the system roots.
	CAFile string
	// TLSFingerprint pins the server's certificate: the SHA-256 of the
	// leaf certificate's DER or of its SubjectPublicKeyInfo, in hex,
	// colons allowed. With a pin, the pin replaces CA and name checks.
	TLSFingerprint string
	// TLSMinVersion is "1.2" (the default when "") or "1.3".
	TLSMinVersion string
	// ClientCert and ClientKey are PEM files of a client certificate, sent
	// when the server asks for one. Both or neither.
	ClientCert, ClientKey string
	// InsecureAllowPlainAuth permits AUTH with TLS "none", and only when
	// the server's address is loopback (127.0.0.0/8, ::1, "localhost").
	InsecureAllowPlainAuth bool

	// ConnectTimeout bounds the TCP connect and, for implicit TLS, the
	// handshake. CommandTimeout bounds each command's reply, the greeting
	// and the STARTTLS handshake. DataTimeout bounds each write of the
	// message content and the wait for the reply to the final dot. Zero
	// means the Default values.
	ConnectTimeout, CommandTimeout, DataTimeout time.Duration

	// Debug, if set, receives the SMTP dialogue (sendmail -v), with AUTH
	// payloads replaced by "<redacted>" and the message content by its
	// size.
	Debug io.Writer
}

// normalized returns a copy of cfg with defaults filled in, or an error
// describing the first invalid setting.
func (cfg *Config) normalized() (Config, error) {
	c := *cfg
	if c.TLS == "" {
		c.TLS = TLSStartTLS
	}
	switch c.TLS {
	case TLSStartTLS, TLSImplicit, TLSNone:
	default:
		return c, fmt.Errorf("unknown TLS mode %q (use starttls, implicit or none)", c.TLS)
	}
	if _, _, err := net.SplitHostPort(c.Address); err != nil {
		return c, fmt.Errorf("address %q is not host:port: %w", c.Address, err)
	}
	if c.Hostname == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			h = "localhost"
		}
		c.Hostname = h
	}
	if strings.ContainsAny(c.Hostname, " \t\r\n\x00") {
		return c, fmt.Errorf("EHLO hostname %q contains white space or a control character", c.Hostname)
	}
	c.AuthMechanism = strings.ToUpper(strings.TrimSpace(c.AuthMechanism))
	if c.AuthMechanism != "" && !knownMech(c.AuthMechanism) {
		return c, fmt.Errorf("unsupported AUTH mechanism %q (use PLAIN, LOGIN, CRAM-MD5, XOAUTH2 or OAUTHBEARER)", c.AuthMechanism)
	}
	if c.Username != "" {
		if c.Password == nil && c.Token == nil {
			return c, errors.New("a username is configured but neither a password nor a token")
		}
		if c.AuthMechanism != "" && isTokenMech(c.AuthMechanism) && c.Token == nil {
			return c, fmt.Errorf("AUTH mechanism %s needs a token", c.AuthMechanism)
		}
		if c.AuthMechanism != "" && !isTokenMech(c.AuthMechanism) && c.Password == nil {
			return c, fmt.Errorf("AUTH mechanism %s needs a password", c.AuthMechanism)
		}
	}
	if c.ConnectTimeout <= 0 {
		c.ConnectTimeout = DefaultConnectTimeout
	}
	if c.CommandTimeout <= 0 {
		c.CommandTimeout = DefaultCommandTimeout
	}
	if c.DataTimeout <= 0 {
		c.DataTimeout = DefaultDataTimeout
	}
	return c, nil
}

// Session is an SMTP session with the smarthost, ready for transactions
// after Dial. It carries any number of messages in turn (Send), and is not
// safe for concurrent use. After a connection-level failure it is dead:
// Usable reports false and Send fails at once; the caller dials anew.
type Session struct {
	cfg   Config
	host  string // host part of Address
	port  string
	relay string

	raw   net.Conn // the TCP connection
	tap   *tapConn // on the TCP connection, below TLS
	c     *smtp.Client
	debug *debugLog // nil without Config.Debug
	dlg   *dialogue
	tls   tlsCheck

	dead   atomic.Bool // the connection is closed or unusable; set also by context cancellation
	closed bool
	mech   string // the AUTH mechanism used, "" without AUTH
}

// Dial connects to the smarthost and prepares a session: TCP connect, 220
// greeting, EHLO, STARTTLS and EHLO again (or implicit TLS), then AUTH if
// configured. ctx bounds Dial only; each Send takes its own context.
//
// The TLS policy is strict: with TLS "starttls" or "implicit", a server
// that does not offer STARTTLS, a failed handshake or a certificate that
// fails verification ends the session at once with an Error of Step "tls"
// (temporary), and nothing more is sent: no AUTH, no MAIL.
//
// The error is always an *Error, never permanent.
func Dial(ctx context.Context, cfg *Config) (*Session, error) {
	c, err := cfg.normalized()
	if err != nil {
		return nil, &Error{Step: StepConfig, Err: err}
	}
	s := &Session{cfg: c}
	s.host, s.port, _ = net.SplitHostPort(c.Address)
	if c.Debug != nil {
		s.debug = newDebugLog(c.Debug)
	}
	s.dlg = &dialogue{log: s.debug}
	var tc *tls.Config
	if c.TLS != TLSNone {
		if tc, err = tlsConfig(&c, s.host, &s.tls); err != nil {
			return nil, &Error{Step: StepConfig, Err: err}
		}
	}

	d := net.Dialer{Timeout: c.ConnectTimeout}
	raw, err := d.DialContext(ctx, "tcp", c.Address)
	if err != nil {
		return nil, &Error{Step: StepConnect, Text: "cannot connect to " + c.Address, Err: err}
	}
	s.raw = raw
	s.relay = relayName(s.host, raw.RemoteAddr())
	if s.debug != nil {
		s.debug.note("connected to %s", s.relay)
	}

	stop := context.AfterFunc(ctx, s.kill)
	e := s.open(ctx, tc)
	if !stop() && e == nil {
		e = &Error{Step: StepConnect, Text: "cancelled"}
	}
	if e != nil {
		s.annotate(ctx, e)
		if e.Step == StepAuth && !s.connLost() {
			// The session is sound; say goodbye properly.
			s.c.Quit()
		}
		s.kill()
		return nil, e
	}
	return s, nil
}

// open runs the session setup on s.raw.
func (s *Session) open(ctx context.Context, tc *tls.Config) *Error {
	cfg := &s.cfg
	switch cfg.TLS {
	case TLSImplicit:
		// go-smtp recognises TLS by its connection being a *tls.Conn, so
		// the tap goes below TLS here, as it does with STARTTLS.
		s.tap = &tapConn{Conn: s.raw}
		conn := tls.Client(s.tap, tc)
		s.tap.SetDeadline(time.Now().Add(cfg.ConnectTimeout))
		err := conn.HandshakeContext(ctx)
		s.tap.SetDeadline(time.Time{})
		if err != nil {
			return &Error{Step: StepTLS, Text: "TLS handshake with " + s.relay + " failed", Err: err}
		}
		s.c = s.newClient(smtp.NewClient(conn))
		if err := s.c.Hello(cfg.Hostname); err != nil {
			if !s.dlg.helloSent && tlsBroke(err) {
				// For example a client certificate refused: TLS 1.3
				// servers say so only after the client's handshake ends.
				return &Error{Step: StepTLS, Text: "TLS session with " + s.relay + " failed before the greeting", Err: err}
			}
			return s.helloError(err)
		}
		if e := s.checkTLS(); e != nil {
			return e
		}

	case TLSStartTLS:
		s.tap = &tapConn{Conn: s.raw, preTLS: true, maxWait: cfg.CommandTimeout}
		s.tap.debug = s.dlg
		if cfg.Hostname != "localhost" {
			s.tap.ehlo = []byte("EHLO " + cfg.Hostname + "\r\n")
			s.tap.helo = []byte("HELO " + cfg.Hostname + "\r\n")
		}
		c, err := smtp.NewClientStartTLS(s.tap, tc)
		s.tap.maxWait = 0
		if err != nil {
			return s.startTLSError(err)
		}
		s.c = s.newClient(c)
		// The handshake happens here, inside the first command after
		// STARTTLS (go-smtp wraps the connection lazily).
		if err := s.c.Hello(cfg.Hostname); err != nil {
			if !s.tls.verified {
				return &Error{Step: StepTLS, Text: "TLS handshake with " + s.relay + " failed", Err: err}
			}
			if tlsBroke(err) {
				// For example a client certificate refused: TLS 1.3
				// servers say so only after the client's handshake ends.
				return &Error{Step: StepTLS, Text: "TLS session with " + s.relay + " failed after the handshake", Err: err}
			}
			return s.helloError(err)
		}
		if e := s.checkTLS(); e != nil {
			return e
		}

	case TLSNone:
		s.tap = &tapConn{Conn: s.raw}
		s.c = s.newClient(smtp.NewClient(s.tap))
		if err := s.c.Hello(cfg.Hostname); err != nil {
			return s.helloError(err)
		}
	}
	return s.authenticate(ctx)
}

func (s *Session) newClient(c *smtp.Client) *smtp.Client {
	c.CommandTimeout = s.cfg.CommandTimeout
	c.SubmissionTimeout = s.cfg.DataTimeout
	c.DebugWriter = s.dlg
	return c
}

// checkTLS confirms that TLS is in place after the handshake.
func (s *Session) checkTLS() *Error {
	st, ok := s.c.TLSConnectionState()
	if !ok || !st.HandshakeComplete || !s.tls.verified {
		return &Error{Step: StepTLS, Text: "TLS is not established with " + s.relay}
	}
	if s.debug != nil {
		s.debug.note("TLS established: %s, %s, server certificate %s",
			tls.VersionName(st.Version), tls.CipherSuiteName(st.CipherSuite), s.tls.how)
	}
	return nil
}

// tlsBroke reports whether err, from the first exchange over a new TLS
// session, is a failure of the session itself: not a reply and not a
// timeout (a silent server is a greeting or EHLO problem).
func tlsBroke(err error) bool {
	if _, ok := asReply(err); ok {
		return false
	}
	return !errors.Is(err, os.ErrDeadlineExceeded)
}

// helloError classifies a failure of go-smtp's Hello, which reads the
// greeting (if not yet read) and sends EHLO: no EHLO written means the
// greeting failed.
func (s *Session) helloError(err error) *Error {
	step := StepEHLO
	if !s.dlg.helloSent {
		step = StepConnect
	}
	return s.setupError(step, err)
}

// startTLSError classifies a failure of NewClientStartTLS, which reads the
// greeting, sends EHLO, checks that STARTTLS is offered and sends it.
func (s *Session) startTLSError(err error) *Error {
	switch {
	case !s.dlg.helloSent:
		return s.setupError(StepConnect, err)
	case s.tap.sentTLS:
		e := s.setupError(StepTLS, err)
		if e.Code != 0 {
			e.Text = "STARTTLS refused: " + e.Text
		}
		return e
	}
	if _, ok := asReply(err); ok || s.connLost() {
		return s.setupError(StepEHLO, err)
	}
	// go-smtp's "smtp: server doesn't support STARTTLS": no command failed
	// and the connection is intact.
	return &Error{Step: StepTLS, Text: "server " + s.relay + " does not offer STARTTLS; refusing to continue without TLS"}
}

// setupError converts an error of the session setup. Setup failures are
// never permanent, see Error.
func (s *Session) setupError(step string, err error) *Error {
	if se, ok := asReply(err); ok {
		e := replyError(step, se)
		e.Permanent = false
		return e
	}
	text := "connection to " + s.relay + " failed"
	if step == StepConnect {
		text = "no greeting from " + s.relay
	}
	return &Error{Step: step, Text: text, Err: err}
}

// Relay names the server for logs as Postfix does: "host[ip]:port", from
// the configured host and the address actually connected to.
func (s *Session) Relay() string { return s.relay }

func relayName(host string, remote net.Addr) string {
	if ta, ok := remote.(*net.TCPAddr); ok {
		return fmt.Sprintf("%s[%s]:%d", host, ta.IP.String(), ta.Port)
	}
	return host + "[" + remote.String() + "]"
}

// Usable reports whether Send may be called: the connection is open and
// in a known state. It is false after Close, after a connection-level
// failure (network error, timeout, a 421 reply, context cancellation, an
// aborted DATA), and after an Uncertain result.
func (s *Session) Usable() bool { return !s.closed && !s.dead.Load() }

// Reset sends RSET, aborting any transaction, and then EHLO again: go-smtp
// forgets the EHLO after RSET and would otherwise repeat it before the
// next MAIL anyway. Send resets by itself when a transaction is left open
// (all recipients rejected, DATA refused); Reset is for callers that want
// to check the session between messages.
func (s *Session) Reset() error {
	if e := s.reset(); e != nil {
		return e
	}
	return nil
}

func (s *Session) reset() *Error {
	if !s.Usable() {
		return &Error{Step: StepConnect, Text: "session is no longer usable"}
	}
	if err := s.c.Reset(); err != nil {
		e := s.cmdError(StepMail, err)
		e.Permanent = false
		e.Text = "RSET: " + e.Text
		s.kill()
		return e
	}
	if err := s.c.Hello(s.cfg.Hostname); err != nil {
		e := s.cmdError(StepEHLO, err)
		e.Permanent = false
		s.kill()
		return e
	}
	return nil
}

// Close ends the session: QUIT, then close the connection. A session that
// is already dead is just closed.
func (s *Session) Close() error {
	if s.closed {
		return nil
	}
	s.closed = true
	if s.dead.Load() {
		s.kill()
		return nil
	}
	err := s.c.Quit()
	s.kill()
	if err != nil {
		return fmt.Errorf("submit: quit %s: %w", s.relay, err)
	}
	return nil
}

// kill closes the connection and marks the session dead. It is safe to
// call from another goroutine (context cancellation).
func (s *Session) kill() {
	s.dead.Store(true)
	s.raw.Close()
}

// connLost reports whether the connection has failed or been closed.
func (s *Session) connLost() bool {
	return s.dead.Load() || (s.tap != nil && s.tap.ioErr != nil)
}

// cmdError converts an error of a command in a transaction: a reply
// (permanent if 5xx), or a connection failure, which kills the session.
// A 421 reply also kills it: the server is closing the connection (RFC
// 5321 section 3.8).
func (s *Session) cmdError(step string, err error) *Error {
	if se, ok := asReply(err); ok {
		if se.Code == 421 {
			s.kill()
		}
		return replyError(step, se)
	}
	s.kill()
	return &Error{Step: step, Text: "connection to " + s.relay + " lost", Err: err}
}

// annotate adds the context's cause to e when ctx ended, since the
// connection error it produced (use of closed connection) says nothing.
func (s *Session) annotate(ctx context.Context, e *Error) {
	if ctx.Err() == nil || e.Code != 0 {
		return
	}
	cause := context.Cause(ctx)
	if e.Err == nil {
		e.Err = cause
	} else if !errors.Is(e.Err, cause) {
		e.Err = fmt.Errorf("%w (after: %w)", cause, e.Err)
	}
}

// loopback reports whether the server is on this host: the configured host
// is "localhost" or a loopback IP, and the address connected to is a
// loopback IP too.
func (s *Session) loopback() bool {
	if !isLoopbackHost(s.host) {
		return false
	}
	ta, ok := s.raw.RemoteAddr().(*net.TCPAddr)
	return ok && ta.IP.IsLoopback()
}

func isLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
