package submit

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// findAiosmtpd returns a Python interpreter that can import aiosmtpd. The
// Debian package python3-aiosmtpd installs it for /usr/bin/python3, which
// need not be the python3 first on PATH.
func findAiosmtpd(t *testing.T) string {
	t.Helper()
	var candidates []string
	if p, err := exec.LookPath("python3"); err == nil {
		candidates = append(candidates, p)
	}
	candidates = append(candidates, "/usr/bin/python3")
	for _, py := range candidates {
		if _, err := os.Stat(py); err != nil {
			continue
		}
		if exec.Command(py, "-c", "import aiosmtpd").Run() == nil {
			return py
		}
	}
	t.Skip("no python3 with aiosmtpd (Debian package python3-aiosmtpd): skipping the test against an independent SMTP server")
	return ""
}

// aiosmtpdMessage is what testdata/aiosmtpd_server.py prints per message.
type aiosmtpdMessage struct {
	Helo          string   `json:"helo"`
	TLS           bool     `json:"tls"`
	AuthMechanism string   `json:"auth_mechanism"`
	AuthUser      string   `json:"auth_user"`
	MailFrom      string   `json:"mail_from"`
	MailOptions   []string `json:"mail_options"`
	RcptTos       []string `json:"rcpt_tos"`
	SMTPUTF8      bool     `json:"smtp_utf8"`
	Content       string   `json:"content"`
}

// startAiosmtpd runs the server script and returns its address and the
// messages it reports.
func startAiosmtpd(t *testing.T, py string) (string, <-chan aiosmtpdMessage) {
	t.Helper()
	cmd := exec.Command(py, "testdata/aiosmtpd_server.py",
		"--cert", pki.goodCert, "--key", pki.goodKey,
		"--user", testUser, "--password", testPassword, "--lifetime", "60")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	t.Cleanup(func() {
		stdin.Close() // the script exits when its stdin closes
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("aiosmtpd stderr:\n%s", stderr.String())
		}
	})

	ready := make(chan string, 1)
	msgs := make(chan aiosmtpdMessage, 16)
	var wg sync.WaitGroup
	wg.Go(func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			line := sc.Text()
			if port, ok := strings.CutPrefix(line, "READY "); ok {
				ready <- port
				continue
			}
			var m aiosmtpdMessage
			if err := json.Unmarshal([]byte(line), &m); err != nil {
				t.Errorf("aiosmtpd printed %q: %v", line, err)
				continue
			}
			msgs <- m
		}
	})
	go func() {
		wg.Wait()
		cmd.Wait()
		close(exited)
	}()
	select {
	case port := <-ready:
		return "127.0.0.1:" + port, msgs
	case <-exited:
		t.Fatalf("aiosmtpd exited before it was ready:\n%s", stderr.String())
	case <-time.After(20 * time.Second):
		t.Fatalf("aiosmtpd not ready after 20s:\n%s", stderr.String())
	}
	return "", nil
}

// TestAiosmtpd submits through aiosmtpd, an SMTP server written
// independently of go-smtp: STARTTLS with a CA file, AUTH PLAIN and LOGIN
// (whose challenges aiosmtpd words "User Name\x00" and "Password\x00"),
// SMTPUTF8, 8BITMIME, SIZE, and a refused password.
func TestAiosmtpd(t *testing.T) {
	py := findAiosmtpd(t)
	addr, msgs := startAiosmtpd(t, py)
	config := func(mech string, password string) *Config {
		return &Config{
			Address:        addr,
			TLS:            TLSStartTLS,
			Hostname:       "client.test",
			CAFile:         pki.caFile,
			Username:       testUser,
			Password:       func(context.Context) (string, error) { return password, nil },
			AuthMechanism:  mech,
			ConnectTimeout: 5 * time.Second,
			CommandTimeout: 5 * time.Second,
			DataTimeout:    5 * time.Second,
		}
	}
	receive := func() aiosmtpdMessage {
		t.Helper()
		select {
		case m := <-msgs:
			return m
		case <-time.After(5 * time.Second):
			t.Fatal("aiosmtpd reported no message")
		}
		return aiosmtpdMessage{}
	}

	for _, mech := range []string{"", MechLogin} {
		var debug bytes.Buffer
		cfg := config(mech, testPassword)
		cfg.Debug = &debug
		s, err := Dial(context.Background(), cfg)
		if err != nil {
			t.Fatalf("Dial (mechanism %q): %v\n%s", mech, err, debug.String())
		}
		body := "From: <jörg@bücher.example>\r\nSubject: grüße\r\n\r\n8-bit body: é\r\n.leading dot\r\n"
		m := textMessage("jörg@bücher.example", []string{"b@example.org", "ünicode@bücher.example"}, body)
		m.EightBit = true
		r := s.Send(context.Background(), m)
		if r.Err != nil || r.Reply != "250 2.0.0 Ok: queued as AIOSMTPD" {
			t.Fatalf("Send: %v, reply %q\n%s", r.Err, r.Reply, debug.String())
		}
		// A second message on the same session, ASCII only.
		if r := s.Send(context.Background(), textMessage("", []string{"c@example.org"}, testBody)); r.Err != nil {
			t.Fatalf("second Send: %v", r.Err)
		}
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		assertNoSecrets(t, "debug log", debug.String())

		got := receive()
		wantMech := mech
		if wantMech == "" {
			wantMech = MechPlain
		}
		if !got.TLS || got.Helo != "client.test" || got.AuthMechanism != wantMech || got.AuthUser != testUser {
			t.Errorf("session: tls %v helo %q mechanism %q user %q; want TLS, client.test, %s, %s",
				got.TLS, got.Helo, got.AuthMechanism, got.AuthUser, wantMech, testUser)
		}
		if got.MailFrom != "jörg@bücher.example" || !slices.Equal(got.RcptTos, m.To) || !got.SMTPUTF8 {
			t.Errorf("envelope %q -> %q, SMTPUTF8 %v", got.MailFrom, got.RcptTos, got.SMTPUTF8)
		}
		for _, opt := range []string{"SMTPUTF8", "BODY=8BITMIME"} {
			if !slices.Contains(got.MailOptions, opt) {
				t.Errorf("MAIL options %q lack %s", got.MailOptions, opt)
			}
		}
		if !strings.HasPrefix(got.Content, body[:len(body)-2]) {
			t.Errorf("content %q, want %q", got.Content, body)
		}
		if second := receive(); second.MailFrom != "<>" || !slices.Equal(second.RcptTos, []string{"c@example.org"}) {
			t.Errorf("second message %q -> %q", second.MailFrom, second.RcptTos)
		}
	}

	// A refused password: temporary, with the server's reply, no secret.
	cfg := config(MechPlain, "wrong-"+testPassword)
	var debug bytes.Buffer
	cfg.Debug = &debug
	_, err := Dial(context.Background(), cfg)
	e := asError(t, err, StepAuth)
	if e.Code != 535 || e.Permanent {
		t.Errorf("%v: code %d permanent %v", e, e.Code, e.Permanent)
	}
	assertNoSecrets(t, "error", e.Error())
	assertNoSecrets(t, "debug log", strings.ReplaceAll(debug.String(), "wrong-", ""))
	if strings.Contains(debug.String(), "wrong-") {
		t.Errorf("debug log shows the password:\n%s", debug.String())
	}

	// Without TLS the client refuses AUTH before aiosmtpd could.
	cfg = config("", testPassword)
	cfg.TLS = TLSNone
	_, err = Dial(context.Background(), cfg)
	asError(t, err, StepAuth)

	select {
	case m := <-msgs:
		t.Errorf("unexpected message %+v", m)
	default:
	}
}
