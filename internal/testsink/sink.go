// Package testsink is a loopback SMTP server for Postie's tests, demo and
// benchmarks: a smarthost with STARTTLS or implicit TLS, AUTH PLAIN and
// LOGIN, that records every message it accepts and can be told to fail.
// It is built on go-smtp's server, not on Postie's client code, so what it
// records is an independent view of what Postie sent.
package testsink

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// Message is one accepted message.
type Message struct {
	From string
	To   []string
	Data []byte
	// Opts are the MAIL FROM parameters.
	Opts smtp.MailOptions
	TLS  bool
	User string
}

// Fault lets a test change the server's answer at each step. Returning a
// non-nil error answers with it (use *smtp.SMTPError for exact codes).
type Fault struct {
	Mail func(from string) error
	Rcpt func(to string) error
	// Data is called with the whole message; returning ErrDrop closes
	// the connection without a reply (after the final dot).
	Data func(m *Message) error
	// DataStart is called when DATA begins, before the content is read;
	// returning ErrDrop closes the connection in the middle of the
	// content.
	DataStart func() error
}

// ErrDrop makes the server close the connection without replying.
var ErrDrop = errors.New("testsink: drop connection")

// Options configure a Sink.
type Options struct {
	// TLS is "starttls" (default), "implicit" or "none".
	TLS string
	// Users maps user names to passwords; empty disables AUTH.
	Users map[string]string
	// Tokens maps user names to the OAuth2 access token accepted for
	// them (AUTH OAUTHBEARER); it may be changed with SetToken.
	Tokens map[string]string
	// RequireAuth refuses MAIL before AUTH.
	RequireAuth bool
	// Dir, when set, receives each message as a file (for tests of other
	// processes); otherwise messages are kept in memory.
	Dir string
	// Discard keeps only a count (benchmarks).
	Discard bool
	// Cert, when set, is used instead of a fresh self-signed one; CertPEM
	// is then written as the CAFile.
	Cert    *tls.Certificate
	CertPEM []byte
	// MaxMessageBytes is the SIZE limit (0: none).
	MaxMessageBytes int64
	// Addr to listen on; default 127.0.0.1:0.
	Addr string
}

// Sink is a running server.
type Sink struct {
	Addr string
	// CAFile is a PEM file with the server's certificate, for ca_file.
	CAFile string
	// Fingerprint is the SHA-256 of the certificate, hex.
	Fingerprint string

	opts   Options
	srv    *smtp.Server
	ln     net.Listener
	mu     sync.Mutex
	msgs   []*Message
	count  atomic.Int64
	auths  atomic.Int64
	faults Fault
	arrive chan struct{}
}

// Start starts a sink on loopback.
func Start(opts Options) (*Sink, error) {
	s := &Sink{opts: opts, arrive: make(chan struct{}, 1)}
	if opts.TLS == "" {
		opts.TLS = "starttls"
		s.opts.TLS = "starttls"
	}
	cert := opts.Cert
	if cert != nil && opts.CertPEM != nil {
		dir, err := os.MkdirTemp("", "testsink")
		if err != nil {
			return nil, err
		}
		s.CAFile = filepath.Join(dir, "ca.pem")
		if err := os.WriteFile(s.CAFile, opts.CertPEM, 0o644); err != nil {
			return nil, err
		}
	}
	if cert == nil {
		c, pemBytes, err := SelfSigned("localhost", "127.0.0.1", "::1")
		if err != nil {
			return nil, err
		}
		cert = c
		dir, err := os.MkdirTemp("", "testsink")
		if err != nil {
			return nil, err
		}
		s.CAFile = filepath.Join(dir, "ca.pem")
		if err := os.WriteFile(s.CAFile, pemBytes, 0o644); err != nil {
			return nil, err
		}
	}
	sum := sha256.Sum256(cert.Certificate[0])
	s.Fingerprint = hex.EncodeToString(sum[:])
	srv := smtp.NewServer(s)
	srv.Domain = "sink.test"
	srv.ReadTimeout = 60 * time.Second
	srv.WriteTimeout = 60 * time.Second
	srv.MaxMessageBytes = opts.MaxMessageBytes
	srv.MaxRecipients = 100000
	srv.EnableSMTPUTF8 = true
	srv.EnableDSN = true
	srv.EnableBINARYMIME = false
	if opts.TLS != "none" {
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{*cert}}
	}
	srv.AllowInsecureAuth = opts.TLS == "none"
	addr := opts.Addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	var ln net.Listener
	var err error
	if opts.TLS == "implicit" {
		ln, err = tls.Listen("tcp", addr, srv.TLSConfig)
	} else {
		ln, err = net.Listen("tcp", addr)
	}
	if err != nil {
		return nil, err
	}
	s.srv, s.ln, s.Addr = srv, ln, ln.Addr().String()
	go srv.Serve(ln)
	return s, nil
}

// Close stops the server.
func (s *Sink) Close() error {
	if s.CAFile != "" {
		os.RemoveAll(filepath.Dir(s.CAFile))
	}
	return s.srv.Close()
}

// SetFault replaces the fault hooks.
func (s *Sink) SetFault(f Fault) {
	s.mu.Lock()
	s.faults = f
	s.mu.Unlock()
}

func (s *Sink) fault() Fault {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.faults
}

// Messages returns the messages received so far.
func (s *Sink) Messages() []*Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*Message(nil), s.msgs...)
}

// Count returns the number of messages accepted.
func (s *Sink) Count() int64 { return s.count.Load() }

// AuthAttempts counts AUTH commands seen.
func (s *Sink) AuthAttempts() int64 { return s.auths.Load() }

// Wait waits until n messages have arrived or the timeout passes.
func (s *Sink) Wait(n int64, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for s.Count() < n {
		if time.Now().After(deadline) {
			return false
		}
		select {
		case <-s.arrive:
		case <-time.After(10 * time.Millisecond):
		}
	}
	return true
}

// NewSession implements smtp.Backend.
func (s *Sink) NewSession(c *smtp.Conn) (smtp.Session, error) {
	return &session{s: s, c: c}, nil
}

type session struct {
	s    *Sink
	c    *smtp.Conn
	user string
	msg  *Message
}

func (se *session) AuthMechanisms() []string {
	var m []string
	if se.s.hasTokens() {
		m = append(m, sasl.OAuthBearer)
	}
	if len(se.s.opts.Users) > 0 {
		m = append(m, sasl.Plain, sasl.Login)
	}
	return m
}

func (s *Sink) hasTokens() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.opts.Tokens) > 0
}

// SetToken changes the access token accepted for user.
func (s *Sink) SetToken(user, token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.opts.Tokens == nil {
		s.opts.Tokens = map[string]string{}
	}
	s.opts.Tokens[user] = token
}

func (se *session) Auth(mech string) (sasl.Server, error) {
	se.s.auths.Add(1)
	check := func(user, pass string) error {
		if want, ok := se.s.opts.Users[user]; !ok || want != pass {
			return &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8}, Message: "Authentication credentials invalid"}
		}
		se.user = user
		return nil
	}
	switch mech {
	case sasl.Plain:
		return sasl.NewPlainServer(func(identity, user, pass string) error { return check(user, pass) }), nil
	case sasl.Login:
		return newLoginServer(check), nil
	case sasl.OAuthBearer:
		return sasl.NewOAuthBearerServer(func(o sasl.OAuthBearerOptions) *sasl.OAuthBearerError {
			se.s.mu.Lock()
			want, ok := se.s.opts.Tokens[o.Username]
			se.s.mu.Unlock()
			if !ok || want != o.Token {
				return &sasl.OAuthBearerError{Status: "invalid_token", Schemes: "bearer"}
			}
			se.user = o.Username
			return nil
		}), nil
	}
	return nil, smtp.ErrAuthUnknownMechanism
}

func (se *session) Mail(from string, opts *smtp.MailOptions) error {
	if se.s.opts.RequireAuth && se.user == "" {
		return smtp.ErrAuthRequired
	}
	if f := se.s.fault().Mail; f != nil {
		if err := f(from); err != nil {
			return err
		}
	}
	m := &Message{From: from, User: se.user}
	if opts != nil {
		m.Opts = *opts
	}
	_, m.TLS = se.c.TLSConnectionState()
	se.msg = m
	return nil
}

func (se *session) Rcpt(to string, opts *smtp.RcptOptions) error {
	if f := se.s.fault().Rcpt; f != nil {
		if err := f(to); err != nil {
			return err
		}
	}
	se.msg.To = append(se.msg.To, to)
	return nil
}

func (se *session) Data(r io.Reader) error {
	if f := se.s.fault().DataStart; f != nil {
		if err := f(); err != nil {
			if errors.Is(err, ErrDrop) {
				se.c.Conn().Close()
			}
			return err
		}
	}
	var buf bytes.Buffer
	var err error
	if se.s.opts.Discard {
		_, err = io.Copy(io.Discard, r)
	} else {
		_, err = io.Copy(&buf, r)
	}
	if err != nil {
		return err
	}
	se.msg.Data = buf.Bytes()
	if f := se.s.fault().Data; f != nil {
		if err := f(se.msg); err != nil {
			if errors.Is(err, ErrDrop) {
				se.c.Conn().Close()
				// go-smtp will fail writing the reply.
				return err
			}
			return err
		}
	}
	if se.s.opts.Dir != "" {
		name := filepath.Join(se.s.opts.Dir, fmt.Sprintf("%d-%d.eml", time.Now().UnixNano(), se.s.count.Load()))
		env := "X-Sink-From: " + se.msg.From + "\r\nX-Sink-To: " + strings.Join(se.msg.To, ",") + "\r\n"
		if err := os.WriteFile(name+".tmp", append([]byte(env), se.msg.Data...), 0o644); err != nil {
			return err
		}
		if err := os.Rename(name+".tmp", name); err != nil {
			return err
		}
	}
	if !se.s.opts.Discard {
		se.s.mu.Lock()
		se.s.msgs = append(se.s.msgs, se.msg)
		se.s.mu.Unlock()
	}
	se.s.count.Add(1)
	select {
	case se.s.arrive <- struct{}{}:
	default:
	}
	return nil
}

func (se *session) Reset() { se.msg = nil }

func (se *session) Logout() error { return nil }

// loginServer is the server side of AUTH LOGIN, which go-sasl lacks.
type loginServer struct {
	step  int
	user  string
	check func(user, pass string) error
}

func newLoginServer(check func(user, pass string) error) sasl.Server {
	return &loginServer{check: check}
}

func (l *loginServer) Next(response []byte) ([]byte, bool, error) {
	switch l.step {
	case 0:
		l.step++
		if response != nil {
			l.user = string(response)
			l.step++
			return []byte("Password:"), false, nil
		}
		return []byte("Username:"), false, nil
	case 1:
		l.user = string(response)
		l.step++
		return []byte("Password:"), false, nil
	default:
		return nil, true, l.check(l.user, string(response))
	}
}

// SelfSigned makes a self-signed certificate for the given names and IPs,
// returned with its PEM encoding.
func SelfSigned(names ...string) (*tls.Certificate, []byte, error) {
	return SelfSignedValid(time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour), names...)
}

// SelfSignedValid is SelfSigned with a chosen validity period (an expired
// certificate, for tests of diagnostics).
func SelfSignedValid(notBefore, notAfter time.Time, names ...string) (*tls.Certificate, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: names[0], Organization: []string{"Postie test sink"}},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, pemBytes, nil
}
