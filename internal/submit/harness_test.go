package submit

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/md5"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// Credentials known to the test servers.
const (
	testUser     = "alice@client.test"
	testPassword = "s3cret-Pa55word"
	testToken    = "ya29.fresh-token-value"
	staleToken   = "ya29.stale-token-value"
)

// testPKI holds certificates generated once for the whole test binary.
type testPKI struct {
	dir       string
	caFile    string          // trusts good and wrongName
	good      tls.Certificate // valid for 127.0.0.1, ::1, localhost, mx.test
	wrongName tls.Certificate // trusted, but valid only for other.example
	untrusted tls.Certificate // valid names, not in caFile
	client    tls.Certificate
	clientCAs *x509.CertPool

	goodCert, goodKey     string // files, for aiosmtpd
	clientCert, clientKey string // files
}

var pki *testPKI

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "submit-test-")
	if err != nil {
		log.Fatal(err)
	}
	pki, err = newTestPKI(dir)
	if err != nil {
		log.Fatal(err)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func newTestPKI(dir string) (*testPKI, error) {
	p := &testPKI{dir: dir}
	loopback := []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")}
	gen := func(name string, dns []string, ips []net.IP, usage x509.ExtKeyUsage) (tls.Certificate, []byte, []byte, error) {
		priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return tls.Certificate{}, nil, nil, err
		}
		serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
		tmpl := &x509.Certificate{
			SerialNumber:          serial,
			Subject:               pkix.Name{CommonName: name},
			NotBefore:             time.Now().Add(-time.Hour),
			NotAfter:              time.Now().Add(24 * time.Hour),
			KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
			ExtKeyUsage:           []x509.ExtKeyUsage{usage},
			BasicConstraintsValid: true,
			IsCA:                  true,
			DNSNames:              dns,
			IPAddresses:           ips,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &priv.PublicKey, priv)
		if err != nil {
			return tls.Certificate{}, nil, nil, err
		}
		keyDER, err := x509.MarshalPKCS8PrivateKey(priv)
		if err != nil {
			return tls.Certificate{}, nil, nil, err
		}
		certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
		keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
		c, err := tls.X509KeyPair(certPEM, keyPEM)
		return c, certPEM, keyPEM, err
	}
	var err error
	var goodPEM, goodKey, wrongPEM, clientPEM, clientKey []byte
	if p.good, goodPEM, goodKey, err = gen("mx.test", []string{"localhost", "mx.test"}, loopback, x509.ExtKeyUsageServerAuth); err != nil {
		return nil, err
	}
	if p.wrongName, wrongPEM, _, err = gen("other.example", []string{"other.example"}, nil, x509.ExtKeyUsageServerAuth); err != nil {
		return nil, err
	}
	if p.untrusted, _, _, err = gen("mx.test", []string{"localhost", "mx.test"}, loopback, x509.ExtKeyUsageServerAuth); err != nil {
		return nil, err
	}
	if p.client, clientPEM, clientKey, err = gen("client.test", []string{"client.test"}, nil, x509.ExtKeyUsageClientAuth); err != nil {
		return nil, err
	}
	p.clientCAs = x509.NewCertPool()
	p.clientCAs.AppendCertsFromPEM(clientPEM)
	write := func(name string, data []byte) string {
		f := filepath.Join(dir, name)
		if err == nil {
			err = os.WriteFile(f, data, 0o600)
		}
		return f
	}
	p.caFile = write("ca.pem", append(append([]byte{}, goodPEM...), wrongPEM...))
	p.goodCert = write("good.pem", goodPEM)
	p.goodKey = write("good.key", goodKey)
	p.clientCert = write("client.pem", clientPEM)
	p.clientKey = write("client.key", clientKey)
	return p, err
}

// received is one message as the test server got it.
type received struct {
	helo     string
	tls      bool
	from     string
	opts     smtp.MailOptions
	rcpts    []string
	rcptOpts []smtp.RcptOptions
	data     []byte
}

// serverOpts configures a testServer.
type serverOpts struct {
	tls       string           // "": no TLS; "starttls": STARTTLS offered; "implicit"
	cert      *tls.Certificate // default pki.good
	maxTLS    uint16
	clientCAs *x509.CertPool // require a client certificate from these
	mechs     []string       // AUTH mechanisms offered (also before TLS)
	utf8, dsn bool
	maxSize   int64

	mail func(from string) error
	rcpt func(to string) error
	data func(c *smtp.Conn, r io.Reader) error // replaces reading and storing the content
}

// testServer is an in-process go-smtp server that records what it is sent
// and lets a test inject faults through hooks.
type testServer struct {
	t    *testing.T
	addr string
	port string
	o    serverOpts
	done chan struct{} // closed at cleanup: hanging hooks return

	mu     sync.Mutex
	events []string // "EHLO name tls=…", "AUTH MECH ok|fail", "MAIL from", "RCPT to", "DATA", "RSET"
	msgs   []received
}

func newTestServer(t *testing.T, o serverOpts) *testServer {
	t.Helper()
	ts := &testServer{t: t, o: o, done: make(chan struct{})}
	s := smtp.NewServer(ts)
	s.Domain = "mx.test"
	// AUTH is offered even without TLS, so that the client's refusal to
	// use it is what the tests observe.
	s.AllowInsecureAuth = true
	s.EnableSMTPUTF8 = o.utf8
	s.EnableDSN = o.dsn
	s.MaxMessageBytes = o.maxSize
	s.ErrorLog = log.New(io.Discard, "", 0)
	if o.tls != "" {
		cert := pki.good
		if o.cert != nil {
			cert = *o.cert
		}
		s.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MaxVersion: o.maxTLS}
		if o.clientCAs != nil {
			s.TLSConfig.ClientAuth = tls.RequireAndVerifyClientCert
			s.TLSConfig.ClientCAs = o.clientCAs
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if o.tls == "implicit" {
		ln = tls.NewListener(ln, s.TLSConfig)
	}
	ts.addr = ln.Addr().String()
	_, ts.port, _ = net.SplitHostPort(ts.addr)
	go s.Serve(ln)
	t.Cleanup(func() {
		close(ts.done)
		s.Close()
	})
	return ts
}

func (ts *testServer) event(format string, args ...any) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	ts.events = append(ts.events, fmt.Sprintf(format, args...))
}

func (ts *testServer) Events() []string {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return append([]string(nil), ts.events...)
}

func (ts *testServer) Msgs() []received {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return append([]received(nil), ts.msgs...)
}

// saw reports whether an event starting with prefix was recorded.
func (ts *testServer) saw(prefix string) bool {
	for _, e := range ts.Events() {
		if strings.HasPrefix(e, prefix) {
			return true
		}
	}
	return false
}

// config returns a client configuration for this server with short
// timeouts.
func (ts *testServer) config(mode TLSMode) *Config {
	return &Config{
		Address:        ts.addr,
		TLS:            mode,
		Hostname:       "client.test",
		CAFile:         pki.caFile,
		ConnectTimeout: 2 * time.Second,
		CommandTimeout: 2 * time.Second,
		DataTimeout:    2 * time.Second,
	}
}

// NewSession implements smtp.Backend; it runs at the first EHLO of a
// connection and again after STARTTLS.
func (ts *testServer) NewSession(c *smtp.Conn) (smtp.Session, error) {
	_, isTLS := c.TLSConnectionState()
	ts.event("EHLO %s tls=%v", c.Hostname(), isTLS)
	return &testSession{ts: ts, conn: c, cur: received{helo: c.Hostname(), tls: isTLS}}, nil
}

type testSession struct {
	ts   *testServer
	conn *smtp.Conn
	cur  received
}

func (s *testSession) AuthMechanisms() []string { return s.ts.o.mechs }

func (s *testSession) Auth(mech string) (sasl.Server, error) {
	result := func(err error) error {
		if err != nil {
			s.ts.event("AUTH %s fail", mech)
		} else {
			s.ts.event("AUTH %s ok", mech)
		}
		return err
	}
	check := func(user, pass string) error {
		if user != testUser || pass != testPassword {
			return result(smtp.ErrAuthFailed)
		}
		return result(nil)
	}
	switch mech {
	case MechPlain:
		return sasl.NewPlainServer(func(identity, user, pass string) error { return check(user, pass) }), nil
	case MechLogin:
		return &loginServer{check: check}, nil
	case MechCRAMMD5:
		return &cramMD5Server{check: func(user, digest string, challenge []byte) error {
			m := hmac.New(md5.New, []byte(testPassword))
			m.Write(challenge)
			if user != testUser || digest != hex.EncodeToString(m.Sum(nil)) {
				return result(smtp.ErrAuthFailed)
			}
			return result(nil)
		}}, nil
	case MechXOAuth2:
		return &xoauth2Server{check: func(user, token string) error {
			if user != testUser || token != testToken {
				return result(smtp.ErrAuthFailed)
			}
			return result(nil)
		}}, nil
	case MechOAuthBearer:
		return sasl.NewOAuthBearerServer(func(o sasl.OAuthBearerOptions) *sasl.OAuthBearerError {
			if o.Username != testUser || o.Token != testToken {
				result(errors.New("bad token"))
				return &sasl.OAuthBearerError{Status: "invalid_token", Schemes: "bearer"}
			}
			result(nil)
			return nil
		}), nil
	}
	return nil, smtp.ErrAuthUnknownMechanism
}

func (s *testSession) Mail(from string, opts *smtp.MailOptions) error {
	s.ts.event("MAIL %s", from)
	if s.ts.o.mail != nil {
		if err := s.ts.o.mail(from); err != nil {
			return err
		}
	}
	s.cur.from = from
	if opts != nil {
		s.cur.opts = *opts
	}
	return nil
}

func (s *testSession) Rcpt(to string, opts *smtp.RcptOptions) error {
	s.ts.event("RCPT %s", to)
	if s.ts.o.rcpt != nil {
		if err := s.ts.o.rcpt(to); err != nil {
			return err
		}
	}
	s.cur.rcpts = append(s.cur.rcpts, to)
	if opts != nil {
		s.cur.rcptOpts = append(s.cur.rcptOpts, *opts)
	} else {
		s.cur.rcptOpts = append(s.cur.rcptOpts, smtp.RcptOptions{})
	}
	return nil
}

func (s *testSession) Data(r io.Reader) error {
	s.ts.event("DATA")
	if s.ts.o.data != nil {
		return s.ts.o.data(s.conn, r)
	}
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.cur.data = b
	s.ts.mu.Lock()
	s.ts.msgs = append(s.ts.msgs, s.cur)
	s.ts.mu.Unlock()
	return nil
}

func (s *testSession) Reset() {
	s.cur = received{helo: s.cur.helo, tls: s.cur.tls}
}

func (s *testSession) Logout() error { return nil }

// loginServer is the server side of LOGIN, with the usual challenges.
type loginServer struct {
	check func(user, pass string) error
	user  string
	step  int
}

func (l *loginServer) Next(resp []byte) ([]byte, bool, error) {
	switch {
	case l.step == 0 && resp == nil:
		l.step = 1
		return []byte("Username:"), false, nil
	case l.step == 0, l.step == 1:
		// The username, as an initial response or in answer.
		l.user = string(resp)
		l.step = 2
		return []byte("Password:"), false, nil
	case l.step == 2:
		l.step = 3
		return nil, true, l.check(l.user, string(resp))
	}
	return nil, true, sasl.ErrUnexpectedClientResponse
}

// cramMD5Server is the server side of CRAM-MD5 (RFC 2195).
type cramMD5Server struct {
	check     func(user, digest string, challenge []byte) error
	challenge []byte
}

func (c *cramMD5Server) Next(resp []byte) ([]byte, bool, error) {
	if c.challenge == nil {
		c.challenge = []byte("<1896.697170952@mx.test>")
		return c.challenge, false, nil
	}
	user, digest, ok := strings.Cut(string(resp), " ")
	if !ok {
		return nil, true, smtp.ErrAuthFailed
	}
	return nil, true, c.check(user, digest, c.challenge)
}

// xoauth2Server is the server side of XOAUTH2 as Gmail runs it: a bad
// token gets a 334 JSON error challenge, then 535 after the client's empty
// response.
type xoauth2Server struct {
	check  func(user, token string) error
	failed bool
}

func (x *xoauth2Server) Next(resp []byte) ([]byte, bool, error) {
	if x.failed {
		if len(resp) != 0 {
			return nil, true, errors.New("expected an empty response")
		}
		return nil, true, smtp.ErrAuthFailed
	}
	if resp == nil {
		return []byte{}, false, nil
	}
	var user, token string
	for _, f := range strings.Split(string(resp), "\x01") {
		if v, ok := strings.CutPrefix(f, "user="); ok {
			user = v
		}
		if v, ok := strings.CutPrefix(f, "auth=Bearer "); ok {
			token = v
		}
	}
	if err := x.check(user, token); err != nil {
		x.failed = true
		return []byte(`{"status":"401","schemes":"bearer","scope":"https://mail.google.com/"}`), false, nil
	}
	return nil, true, nil
}

// script answers commands by verb, in the manner of chasquid's fake
// servers. Keys: "greeting", a command verb ("EHLO", "MAIL", "RCPT",
// "DATA", "RSET", "QUIT", ...), and "." for the reply after the content.
// A reply may have several lines separated by "\n". The special replies
// "hang" (wait until the test ends) and "close" (close the connection)
// inject faults. A missing key answers "250 2.0.0 ok" ("354 go ahead" for
// DATA, "221 bye" for QUIT, a plain EHLO reply for EHLO).
type script map[string]string

// scriptServer runs a script on every connection and records the
// commands it receives.
type scriptServer struct {
	addr string
	mu   sync.Mutex
	cmds []string
}

func (ss *scriptServer) Cmds() []string {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return append([]string(nil), ss.cmds...)
}

func newScriptServer(t *testing.T, sc script) *scriptServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ss := &scriptServer{addr: ln.Addr().String()}
	done := make(chan struct{})
	var wg sync.WaitGroup
	t.Cleanup(func() {
		close(done)
		ln.Close()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				go func() { <-done; c.Close() }()
				ss.serve(c, sc, done)
			})
		}
	})
	return ss
}

func (ss *scriptServer) serve(c net.Conn, sc script, done chan struct{}) {
	br := bufio.NewReader(c)
	reply := func(key, def string) bool {
		r, ok := sc[key]
		if !ok {
			r = def
		}
		switch r {
		case "hang":
			<-done
			return false
		case "close":
			return false
		}
		lines := strings.Split(r, "\n")
		var b bytes.Buffer
		for _, l := range lines {
			b.WriteString(l + "\r\n")
		}
		_, err := c.Write(b.Bytes())
		return err == nil
	}
	if !reply("greeting", "220 mx.test ESMTP script") {
		return
	}
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimRight(line, "\r\n")
		ss.mu.Lock()
		ss.cmds = append(ss.cmds, line)
		ss.mu.Unlock()
		verb, _, _ := strings.Cut(line, " ")
		verb = strings.ToUpper(verb)
		switch verb {
		case "EHLO":
			if !reply("EHLO", "250-mx.test\n250-8BITMIME\n250 SIZE") {
				return
			}
		case "QUIT":
			reply("QUIT", "221 2.0.0 bye")
			return
		case "DATA":
			r, ok := sc["DATA"]
			if !ok {
				r = "354 go ahead"
			}
			if !reply("DATA", r) {
				return
			}
			if !strings.HasPrefix(r, "354") {
				continue
			}
			for {
				l, err := br.ReadString('\n')
				if err != nil {
					return
				}
				if l == ".\r\n" {
					break
				}
			}
			if !reply(".", "250 2.0.0 queued as SCRIPT") {
				return
			}
		default:
			if !reply(verb, "250 2.0.0 ok") {
				return
			}
		}
	}
}

// textMessage returns a Message whose content is body.
func textMessage(from string, to []string, body string) *Message {
	return &Message{
		From: from,
		To:   to,
		Size: int64(len(body)),
		WriteBody: func(w io.Writer) error {
			_, err := io.WriteString(w, body)
			return err
		},
	}
}

const testBody = "From: <a@client.test>\r\nTo: <b@example.org>\r\nSubject: test\r\n\r\nHello.\r\n.leading dot\r\n..two dots\r\n"

// dial dials or fails the test.
func dial(t *testing.T, cfg *Config) *Session {
	t.Helper()
	s, err := Dial(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// asError checks that err is an *Error with the given step.
func asError(t *testing.T, err error, step string) *Error {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not an *Error", err, err)
	}
	if e.Step != step {
		t.Fatalf("error %v: step %q, want %q", err, e.Step, step)
	}
	return e
}
