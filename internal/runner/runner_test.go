package runner_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/postie-mail/postie/internal/address"
	"github.com/postie-mail/postie/internal/config"
	"github.com/postie-mail/postie/internal/enqueue"
	"github.com/postie-mail/postie/internal/maillog"
	"github.com/postie-mail/postie/internal/runner"
	"github.com/postie-mail/postie/internal/spool"
	"github.com/postie-mail/postie/internal/testsink"
)

const password = "s3cret-Pa55word"

func tcheck(t *testing.T, err error, what string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// harness is a spool, a sink and a config pointing at it.
type harness struct {
	t    *testing.T
	cfg  *config.Config
	sink *testsink.Sink
	sp   *spool.Spool
	log  bytes.Buffer
	dbg  bytes.Buffer
	logw *syncBuf
	dbgw *syncBuf
}

func newHarness(t *testing.T, sinkOpts testsink.Options, extra string) *harness {
	t.Helper()
	if sinkOpts.Users == nil {
		sinkOpts.Users = map[string]string{"user": password}
		sinkOpts.RequireAuth = true
	}
	sink, err := testsink.Start(sinkOpts)
	tcheck(t, err, "start sink")
	t.Cleanup(func() { sink.Close() })
	dir := t.TempDir()
	pwFile := filepath.Join(dir, "password")
	os.WriteFile(pwFile, []byte(password+"\n"), 0o600)
	tlsMode := sinkOpts.TLS
	if tlsMode == "" {
		tlsMode = "starttls"
	}
	text := fmt.Sprintf(`hostname = "web1.example.com"
spool_dir = %q
[smarthost]
address = %q
tls = %q
username = "user"
password_file = %q
ca_file = %q
command_timeout = "5s"
data_timeout = "5s"
connect_timeout = "5s"
[queue]
deliver = "queue"
connections = 2
%s`, filepath.Join(dir, "spool"), sink.Addr, tlsMode, pwFile, sink.CAFile, extra)
	cfg, err := config.Parse("test.toml", text)
	tcheck(t, err, "config")
	sp := spool.New(cfg.SpoolDir)
	tcheck(t, sp.Init(), "spool init")
	h := &harness{t: t, cfg: cfg, sink: sink, sp: sp}
	h.logw, h.dbgw = &syncBuf{b: &h.log}, &syncBuf{b: &h.dbg}
	return h
}

type syncBuf struct {
	mu sync.Mutex
	b  *bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (h *harness) runner() *runner.Runner {
	h.t.Helper()
	r, err := runner.New(h.cfg, maillog.NewWriter(h.logw), h.dbgw)
	tcheck(h.t, err, "runner")
	return r
}

func (h *harness) enqueue(from string, to []string, body string) string {
	h.t.Helper()
	env := &enqueue.Env{
		Hostname: "web1.example.com",
		Resolver: &address.Resolver{Aliases: address.Aliases{}, Hostname: "web1.example.com"},
		Spool:    h.sp,
		Caller:   enqueue.Caller{UID: 1000, User: "alice"},
		Now:      time.Now,
	}
	res, err := enqueue.Enqueue(env, &enqueue.Request{Sender: &from, Recipients: to},
		strings.NewReader("From: "+from+"\nTo: "+strings.Join(to, ", ")+"\nSubject: test\n\n"+body))
	tcheck(h.t, err, "enqueue")
	return res.ID
}

func (h *harness) run(opts runner.Options) *runner.Summary {
	h.t.Helper()
	sum, err := h.runner().Run(context.Background(), opts)
	tcheck(h.t, err, "run")
	return sum
}

func (h *harness) entries() []spool.Entry {
	h.t.Helper()
	e, err := h.sp.List()
	tcheck(h.t, err, "list")
	return e
}

func TestDeliver(t *testing.T) {
	h := newHarness(t, testsink.Options{}, "")
	id := h.enqueue("alice@example.com", []string{"bob@example.org", "carol@example.org"}, "hello\n")
	sum := h.run(runner.Options{})
	if sum.Sent != 1 || sum.Deferred != 0 {
		t.Fatalf("summary %+v; log:\n%s", sum, h.log.String())
	}
	msgs := h.sink.Messages()
	if len(msgs) != 1 {
		t.Fatalf("sink got %d messages", len(msgs))
	}
	m := msgs[0]
	if m.From != "alice@example.com" || strings.Join(m.To, ",") != "bob@example.org,carol@example.org" || !m.TLS || m.User != "user" {
		t.Errorf("envelope %q %q tls=%v user=%q", m.From, m.To, m.TLS, m.User)
	}
	if !bytes.Contains(m.Data, []byte("\r\n\r\nhello\r\n")) {
		t.Errorf("data %q", m.Data)
	}
	if len(h.entries()) != 0 {
		t.Error("queue not empty")
	}
	line := h.log.String()
	for _, want := range []string{id + ": to=<bob@example.org>,<carol@example.org>, relay=127.0.0.1[127.0.0.1]:", "tries=1, status=sent (250 "} {
		if !strings.Contains(line, want) {
			t.Errorf("log lacks %q:\n%s", want, line)
		}
	}
}

// Two flushes at once over 200 messages: each message is delivered once.
func TestConcurrentFlushesDeliverOnce(t *testing.T) {
	h := newHarness(t, testsink.Options{}, "")
	const n = 200
	for i := range n {
		h.enqueue("alice@example.com", []string{fmt.Sprintf("r%d@example.org", i)}, fmt.Sprintf("message %d\n", i))
	}
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h.runner().Run(context.Background(), runner.Options{})
		}()
	}
	wg.Wait()
	seen := map[string]int{}
	for _, m := range h.sink.Messages() {
		seen[m.To[0]]++
	}
	for i := range n {
		if c := seen[fmt.Sprintf("r%d@example.org", i)]; c != 1 {
			t.Errorf("message %d delivered %d times", i, c)
		}
	}
	if len(h.entries()) != 0 {
		t.Errorf("%d messages left", len(h.entries()))
	}
}

func TestTempFailureThenSuccess(t *testing.T) {
	h := newHarness(t, testsink.Options{}, "")
	var calls atomic.Int32
	h.sink.SetFault(testsink.Fault{Data: func(*testsink.Message) error {
		if calls.Add(1) == 1 {
			return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Try again later"}
		}
		return nil
	}})
	id := h.enqueue("alice@example.com", []string{"bob@example.org"}, "x\n")
	sum := h.run(runner.Options{})
	if sum.Deferred != 1 {
		t.Fatalf("summary %+v", sum)
	}
	e := h.entries()
	if len(e) != 1 || e[0].Status != "deferred" || !strings.Contains(e[0].State.LastError, "451") || e[0].State.Attempts != 1 {
		t.Fatalf("entry %+v", e)
	}
	// A due-only run does not retry before the backoff.
	if sum := h.run(runner.Options{DueOnly: true}); sum.Sent != 0 {
		t.Fatalf("due-only run retried early: %+v", sum)
	}
	// mailq -q retries now, whatever the retry time.
	if sum := h.run(runner.Options{IDs: []string{id}}); sum.Sent != 1 {
		t.Fatalf("retry summary %+v; log:\n%s", sum, h.log.String())
	}
	if h.sink.Count() != 1 {
		t.Errorf("delivered %d times", h.sink.Count())
	}
}

func TestPartialRejectBounces(t *testing.T) {
	h := newHarness(t, testsink.Options{}, "")
	h.sink.SetFault(testsink.Fault{Rcpt: func(to string) error {
		if strings.HasPrefix(to, "nobody@") {
			return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "No such user"}
		}
		return nil
	}})
	h.enqueue("alice@example.com", []string{"bob@example.org", "nobody@example.org"}, "x\n")
	sum := h.run(runner.Options{})
	if sum.Bounced != 1 {
		t.Fatalf("summary %+v; log:\n%s", sum, h.log.String())
	}
	msgs := h.sink.Messages()
	if len(msgs) != 2 {
		t.Fatalf("sink got %d messages, want the original and the bounce", len(msgs))
	}
	if strings.Join(msgs[0].To, ",") != "bob@example.org" {
		t.Errorf("original went to %q", msgs[0].To)
	}
	b := msgs[1]
	if b.From != "" || strings.Join(b.To, ",") != "alice@example.com" {
		t.Errorf("bounce envelope %q -> %q", b.From, b.To)
	}
	for _, want := range []string{"multipart/report", "report-type=delivery-status", "Final-Recipient: rfc822; nobody@example.org", "Status: 5.1.1", "550", "No such user", "Subject: test"} {
		if !bytes.Contains(b.Data, []byte(want)) {
			t.Errorf("bounce lacks %q", want)
		}
	}
	if bytes.Contains(b.Data, []byte("Final-Recipient: rfc822; bob@")) {
		t.Error("bounce names the delivered recipient")
	}
	if len(h.entries()) != 0 {
		t.Errorf("queue not empty: %+v", h.entries())
	}
}

func TestDroppedMidDataIsRetried(t *testing.T) {
	h := newHarness(t, testsink.Options{}, "")
	var drop atomic.Bool
	drop.Store(true)
	h.sink.SetFault(testsink.Fault{DataStart: func() error {
		if drop.Swap(false) {
			return testsink.ErrDrop
		}
		return nil
	}})
	// Large enough that the client is still writing when the server
	// hangs up.
	h.enqueue("alice@example.com", []string{"bob@example.org"}, strings.Repeat("0123456789abcdef\n", 1<<17))
	sum := h.run(runner.Options{})
	if sum.Deferred != 1 || sum.Uncertain != 0 {
		t.Fatalf("summary %+v; log:\n%s", sum, h.log.String())
	}
	if sum := h.run(runner.Options{}); sum.Sent != 1 {
		t.Fatalf("retry summary %+v", sum)
	}
	if h.sink.Count() != 1 {
		t.Errorf("delivered %d times", h.sink.Count())
	}
}

// The connection dies after the final dot: the message may have been
// delivered. It is held, not resent, until the administrator decides.
func TestLostReplyIsUncertain(t *testing.T) {
	h := newHarness(t, testsink.Options{}, "")
	h.sink.SetFault(testsink.Fault{Data: func(*testsink.Message) error { return testsink.ErrDrop }})
	id := h.enqueue("alice@example.com", []string{"bob@example.org"}, "x\n")
	sum := h.run(runner.Options{})
	if sum.Uncertain != 1 {
		t.Fatalf("summary %+v; log:\n%s", sum, h.log.String())
	}
	h.sink.SetFault(testsink.Fault{})
	if sum := h.run(runner.Options{}); sum.Sent != 0 || sum.Held != 1 {
		t.Fatalf("uncertain message resent: %+v", sum)
	}
	e := h.entries()
	if len(e) != 1 || e[0].Status != "uncertain" || e[0].Env.MessageID == "" {
		t.Fatalf("entry %+v", e)
	}
	if !strings.Contains(h.log.String(), "status=uncertain") || !strings.Contains(h.log.String(), e[0].Env.MessageID) {
		t.Errorf("log:\n%s", h.log.String())
	}
	_ = id
}

// A runner killed between the final dot and the reply leaves the sending
// marker; the next runner holds the message as uncertain.
func TestMarkerFromDeadRunner(t *testing.T) {
	h := newHarness(t, testsink.Options{}, "")
	id := h.enqueue("alice@example.com", []string{"bob@example.org"}, "x\n")
	h.sp.Pickup()
	l, err := h.sp.Lock(id)
	tcheck(t, err, "lock")
	tcheck(t, l.MarkSending(), "mark")
	l.Close() // the "dead" runner's lock goes with its process
	sum := h.run(runner.Options{})
	if sum.Uncertain != 1 || h.sink.Count() != 0 {
		t.Fatalf("summary %+v, delivered %d", sum, h.sink.Count())
	}
}

func TestRetryUncertainOption(t *testing.T) {
	h := newHarness(t, testsink.Options{}, "retry_uncertain = true\n")
	var drop atomic.Bool
	drop.Store(true)
	h.sink.SetFault(testsink.Fault{Data: func(*testsink.Message) error {
		if drop.Swap(false) {
			return testsink.ErrDrop
		}
		return nil
	}})
	h.enqueue("alice@example.com", []string{"bob@example.org"}, "x\n")
	h.run(runner.Options{})
	if sum := h.run(runner.Options{}); sum.Sent != 1 {
		t.Fatalf("summary %+v", sum)
	}
}

func TestTLSPolicy(t *testing.T) {
	tests := []struct {
		name   string
		sink   testsink.Options
		extra  string
		mutate func(c *config.Config)
		want   string
	}{
		{"no STARTTLS offered", testsink.Options{TLS: "none"}, "", func(c *config.Config) { c.Smarthost.TLS = "starttls" }, "STARTTLS"},
		{"untrusted certificate", testsink.Options{}, "", func(c *config.Config) { c.Smarthost.CAFile = "" }, "certificate"},
		{"pin mismatch", testsink.Options{}, "", func(c *config.Config) { c.Smarthost.TLSFingerprint = strings.Repeat("ab", 32) }, "fingerprint"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, tt.sink, tt.extra)
			tt.mutate(h.cfg)
			h.enqueue("alice@example.com", []string{"bob@example.org"}, "x\n")
			sum := h.run(runner.Options{})
			if sum.Deferred != 1 {
				t.Fatalf("summary %+v", sum)
			}
			if h.sink.AuthAttempts() != 0 || h.sink.Count() != 0 {
				t.Errorf("auth attempts %d, messages %d", h.sink.AuthAttempts(), h.sink.Count())
			}
			e := h.entries()
			if len(e) != 1 || !strings.Contains(strings.ToLower(e[0].State.LastError), strings.ToLower(tt.want)) {
				t.Errorf("last error %q, want it to mention %q", e[0].State.LastError, tt.want)
			}
		})
	}
}

func TestImplicitTLSAndPin(t *testing.T) {
	h := newHarness(t, testsink.Options{TLS: "implicit"}, "")
	h.cfg.Smarthost.CAFile = ""
	h.cfg.Smarthost.TLSFingerprint = h.sink.Fingerprint
	h.enqueue("alice@example.com", []string{"bob@example.org"}, "x\n")
	if sum := h.run(runner.Options{}); sum.Sent != 1 {
		t.Fatalf("summary %+v; log:\n%s", sum, h.log.String())
	}
	if !h.sink.Messages()[0].TLS {
		t.Error("not over TLS")
	}
}

func TestPasswordNeverShown(t *testing.T) {
	h := newHarness(t, testsink.Options{}, "")
	h.enqueue("alice@example.com", []string{"bob@example.org"}, "x\n")
	h.run(runner.Options{})
	// And a failing login.
	h.sink.Close()
	h2 := newHarness(t, testsink.Options{Users: map[string]string{"user": "other"}, RequireAuth: true}, "")
	h2.enqueue("alice@example.com", []string{"bob@example.org"}, "x\n")
	h2.run(runner.Options{})
	for _, out := range []string{h.log.String(), h.dbg.String(), h2.log.String(), h2.dbg.String(), fmt.Sprint(h2.entries()[0].State)} {
		for _, secret := range []string{password, base64.StdEncoding.EncodeToString([]byte("\x00user\x00" + password)), base64.StdEncoding.EncodeToString([]byte(password))} {
			if strings.Contains(out, secret) {
				t.Fatalf("secret %q in output:\n%s", secret, out)
			}
		}
	}
	if !strings.Contains(h.dbg.String(), "AUTH") {
		t.Errorf("debug output has no dialogue:\n%s", h.dbg.String())
	}
}

func TestExpiryBounces(t *testing.T) {
	h := newHarness(t, testsink.Options{}, `max_age = "1ms"`+"\n")
	h.sink.SetFault(testsink.Fault{Rcpt: func(to string) error {
		if to == "bob@example.org" {
			return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 2, 0}, Message: "mailbox busy"}
		}
		return nil
	}})
	h.enqueue("alice@example.com", []string{"bob@example.org"}, "x\n")
	h.run(runner.Options{})
	time.Sleep(5 * time.Millisecond)
	sum := h.run(runner.Options{})
	if sum.Bounced != 1 {
		t.Fatalf("summary %+v; log:\n%s", sum, h.log.String())
	}
	msgs := h.sink.Messages()
	if len(msgs) != 1 || msgs[0].From != "" || !bytes.Contains(msgs[0].Data, []byte("expired")) {
		t.Fatalf("bounce: %d messages", len(msgs))
	}
}

// A bounce is never bounced: a failed null-sender message goes to failed/.
func TestNoBounceOfBounce(t *testing.T) {
	h := newHarness(t, testsink.Options{}, "")
	h.sink.SetFault(testsink.Fault{Rcpt: func(string) error {
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "No such user"}
	}})
	h.enqueue("", []string{"gone@example.org"}, "x\n")
	sum := h.run(runner.Options{})
	if sum.Bounced != 1 || h.sink.Count() != 0 {
		t.Fatalf("summary %+v", sum)
	}
	failed, _ := os.ReadDir(filepath.Join(h.cfg.SpoolDir, spool.FailedDir))
	if len(failed) != 1 {
		t.Errorf("failed/ = %v", failed)
	}
	if len(h.entries()) != 0 {
		t.Errorf("queue = %+v", h.entries())
	}
}

func TestNoSmarthost(t *testing.T) {
	h := newHarness(t, testsink.Options{}, "")
	h.cfg.Smarthost.Address = ""
	h.enqueue("alice@example.com", []string{"bob@example.org"}, "x\n")
	sum := h.run(runner.Options{})
	if sum.Deferred != 1 || !strings.Contains(sum.LastError, "no smarthost") {
		t.Fatalf("summary %+v, last error %q", sum, sum.LastError)
	}
}

func TestManyOnOneConnection(t *testing.T) {
	h := newHarness(t, testsink.Options{}, "")
	h.cfg.Queue.Connections = 1
	for i := range 20 {
		h.enqueue("alice@example.com", []string{fmt.Sprintf("r%d@example.org", i)}, "x\n")
	}
	if sum := h.run(runner.Options{}); sum.Sent != 20 {
		t.Fatalf("summary %+v", sum)
	}
	if n := strings.Count(h.dbg.String(), "EHLO"); n > 3 {
		t.Errorf("%d EHLOs for 20 messages on one connection", n)
	}
}
