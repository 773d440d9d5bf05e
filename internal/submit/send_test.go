package submit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// wire is what the server must receive for testBody: dot-stuffing undone.
const wire = testBody

func TestSendDelivers(t *testing.T) {
	for _, mode := range []TLSMode{TLSStartTLS, TLSImplicit, TLSNone} {
		t.Run(string(mode), func(t *testing.T) {
			tlsKind := string(mode)
			if mode == TLSNone {
				tlsKind = ""
			}
			ts := newTestServer(t, serverOpts{tls: tlsKind})
			s := dial(t, ts.config(mode))
			r := s.Send(context.Background(), textMessage("a@client.test", []string{"b@example.org", "c@example.org"}, testBody))
			if r.Err != nil || r.Uncertain {
				t.Fatalf("Send: %v (uncertain %v)", r.Err, r.Uncertain)
			}
			if r.Reply != "250 2.0.0 OK: queued" {
				t.Errorf("Reply = %q", r.Reply)
			}
			for _, rr := range r.Rcpts {
				if !rr.Accepted {
					t.Errorf("recipient %+v not accepted", rr)
				}
			}
			msgs := ts.Msgs()
			if len(msgs) != 1 {
				t.Fatalf("server got %d messages", len(msgs))
			}
			m := msgs[0]
			if m.from != "a@client.test" || !slices.Equal(m.rcpts, []string{"b@example.org", "c@example.org"}) {
				t.Errorf("envelope %q -> %q", m.from, m.rcpts)
			}
			if string(m.data) != wire {
				t.Errorf("content %q, want %q", m.data, wire)
			}
			if m.opts.Size != int64(len(testBody)) {
				t.Errorf("SIZE=%d, want %d", m.opts.Size, len(testBody))
			}
			if !s.Usable() {
				t.Error("session not usable after a delivery")
			}
			if err := s.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
			if s.Usable() {
				t.Error("session usable after Close")
			}
		})
	}
}

func TestSendNullSender(t *testing.T) {
	ts := newTestServer(t, serverOpts{})
	s := dial(t, ts.config(TLSNone))
	if r := s.Send(context.Background(), textMessage("", []string{"b@example.org"}, testBody)); r.Err != nil {
		t.Fatal(r.Err)
	}
	if !ts.saw("MAIL ") || ts.Msgs()[0].from != "" {
		t.Errorf("events %q", ts.Events())
	}
}

func TestSendRecipients(t *testing.T) {
	ts := newTestServer(t, serverOpts{rcpt: func(to string) error {
		switch {
		case strings.HasPrefix(to, "unknown"):
			return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "No such user"}
		case strings.HasPrefix(to, "full"):
			return &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 2, 2}, Message: "Mailbox full"}
		}
		return nil
	}})
	s := dial(t, ts.config(TLSNone))

	r := s.Send(context.Background(), textMessage("a@client.test",
		[]string{"ok1@example.org", "unknown@example.org", "full@example.org", "ok2@example.org"}, testBody))
	if r.Err != nil {
		t.Fatalf("Send: %v", r.Err)
	}
	want := []RcptResult{
		{Addr: "ok1@example.org", Accepted: true},
		{Addr: "unknown@example.org", Code: 550, Enhanced: [3]int{5, 1, 1}, Text: "No such user", Permanent: true},
		{Addr: "full@example.org", Code: 452, Enhanced: [3]int{4, 2, 2}, Text: "Mailbox full"},
		{Addr: "ok2@example.org", Accepted: true},
	}
	if !slices.Equal(r.Rcpts, want) {
		t.Errorf("Rcpts:\n%+v\nwant\n%+v", r.Rcpts, want)
	}
	if got := r.Rcpts[1].Reply(); got != "550 5.1.1 No such user" {
		t.Errorf("Reply() = %q", got)
	}
	if m := ts.Msgs(); len(m) != 1 || !slices.Equal(m[0].rcpts, []string{"ok1@example.org", "ok2@example.org"}) {
		t.Errorf("server got %+v", m)
	}

	// No recipient accepted: RSET, no DATA, the session goes on.
	before := len(ts.Events())
	r = s.Send(context.Background(), textMessage("a@client.test", []string{"unknown@example.org", "unknown2@example.org"}, testBody))
	e := asError(t, r.Err, StepRcpt)
	if !e.Permanent || r.Uncertain {
		t.Errorf("all rejected with 5xx: %v permanent=%v uncertain=%v", e, e.Permanent, r.Uncertain)
	}
	if r.Reply != "550 5.1.1 No such user" {
		t.Errorf("Reply = %q", r.Reply)
	}
	after := ts.Events()[before:]
	if slices.Contains(after, "DATA") {
		t.Errorf("DATA sent with no recipient: %q", after)
	}
	if !s.Usable() {
		t.Fatal("session not usable after rejected recipients")
	}
	r = s.Send(context.Background(), textMessage("a@client.test", []string{"unknown@example.org", "full@example.org"}, testBody))
	if e := asError(t, r.Err, StepRcpt); e.Permanent {
		t.Errorf("one 4xx among the rejections: %v must be temporary", e)
	}
	if !r.Rcpts[0].Permanent || r.Rcpts[1].Permanent {
		t.Errorf("Rcpts %+v", r.Rcpts)
	}
	r = s.Send(context.Background(), textMessage("a@client.test", []string{"ok3@example.org"}, testBody))
	if r.Err != nil {
		t.Fatalf("Send after RSET: %v", r.Err)
	}
	if n := len(ts.Msgs()); n != 2 {
		t.Errorf("server has %d messages, want 2", n)
	}
}

// TestSendSeveral sends several messages on one session, with failures
// between them that leave the session usable.
func TestSendSeveral(t *testing.T) {
	ts := newTestServer(t, serverOpts{
		tls: "starttls",
		mail: func(from string) error {
			if from == "blocked@client.test" {
				return &smtp.SMTPError{Code: 553, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "Sender not allowed"}
			}
			return nil
		},
		rcpt: func(to string) error {
			if to == "nobody@example.org" {
				return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "No such user"}
			}
			return nil
		},
	})
	var calls atomic.Int32
	ts.o.data = func(_ *smtp.Conn, r io.Reader) error {
		io.Copy(io.Discard, r)
		n := calls.Add(1)
		if n == 3 {
			return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Try again later"}
		}
		if n == 4 {
			return &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 6, 0}, Message: "Content rejected"}
		}
		return nil
	}
	s := dial(t, ts.config(TLSStartTLS))
	send := func(from string, to ...string) *Result {
		return s.Send(context.Background(), textMessage(from, to, testBody))
	}
	steps := []struct {
		r         *Result
		step      string
		code      int
		permanent bool
	}{
		{r: send("a@client.test", "b@example.org")}, // DATA #1
		{r: send("blocked@client.test", "b@example.org"), step: StepMail, code: 553, permanent: true},
		{r: send("a@client.test", "nobody@example.org"), step: StepRcpt, permanent: true},
		{r: send("a@client.test", "c@example.org")},                                                              // DATA #2
		{r: send("a@client.test", "d@example.org"), step: StepData, code: 451},                                   // DATA #3
		{r: send("a@client.test", "e@example.org", "f@example.org"), step: StepData, code: 554, permanent: true}, // DATA #4
		{r: send("a@client.test", "g@example.org")},                                                              // DATA #5
	}
	for i, st := range steps {
		r := st.r
		if r.Uncertain {
			t.Errorf("message %d: uncertain", i)
		}
		if st.step == "" {
			if r.Err != nil {
				t.Errorf("message %d: %v", i, r.Err)
			}
			continue
		}
		if r.Err == nil {
			t.Errorf("message %d: no error, want step %s", i, st.step)
			continue
		}
		if e := r.Failure(); e.Step != st.step || e.Code != st.code || e.Permanent != st.permanent {
			t.Errorf("message %d: %v (permanent %v), want step %s code %d permanent %v", i, e, e.Permanent, st.step, st.code, st.permanent)
		}
		for _, rr := range r.Rcpts {
			if rr.Permanent != st.permanent {
				t.Errorf("message %d: recipient %+v, want permanent %v", i, rr, st.permanent)
			}
		}
	}
	if !s.Usable() {
		t.Error("session not usable")
	}
	if r := steps[5].r; !r.Rcpts[0].Accepted || r.Rcpts[0].Code != 554 || r.Reply != "554 5.6.0 Content rejected" {
		t.Errorf("a 554 to the final dot applies to accepted recipients: %+v, reply %q", r.Rcpts, r.Reply)
	}
	if n := calls.Load(); n != 5 {
		t.Errorf("server took content %d times, want 5", n)
	}
}

// TestSendScripted covers replies the go-smtp server cannot produce.
func TestSendScripted(t *testing.T) {
	tests := []struct {
		name      string
		sc        script
		step      string
		code      int
		permanent bool
		usable    bool
		cmds      []string // commands the server must have seen, in order, after EHLO
	}{
		{name: "451 to DATA", sc: script{"DATA": "451 4.3.0 Queue full"}, step: StepData, code: 451, usable: true,
			cmds: []string{"MAIL FROM:<a@client.test> BODY=8BITMIME SIZE=95", "RCPT TO:<b@example.org>", "DATA", "RSET", "EHLO client.test"}},
		{name: "554 to DATA", sc: script{"DATA": "554 5.5.1 No valid recipients"}, step: StepData, code: 554, permanent: true, usable: true},
		{name: "421 to RCPT", sc: script{"RCPT": "421 4.3.2 Shutting down"}, step: StepRcpt, code: 421},
		{name: "421 to MAIL", sc: script{"MAIL": "421 4.3.2 Shutting down"}, step: StepMail, code: 421},
		{name: "421 to the dot", sc: script{".": "421 4.3.2 Shutting down"}, step: StepData, code: 421},
		{name: "multi-line rejection", sc: script{"MAIL": "550-5.7.1 Sender rejected\n550 5.7.1 see https://example.org/why"},
			step: StepMail, code: 550, permanent: true, usable: true},
		{name: "RCPT dropped", sc: script{"RCPT": "close"}, step: StepRcpt},
		{name: "MAIL dropped", sc: script{"MAIL": "close"}, step: StepMail},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ss := newScriptServer(t, tt.sc)
			s := dial(t, &Config{Address: ss.addr, TLS: TLSNone, Hostname: "client.test", CommandTimeout: time.Second})
			r := s.Send(context.Background(), textMessage("a@client.test", []string{"b@example.org"}, testBody))
			if r.Err == nil {
				t.Fatal("Send succeeded")
			}
			if r.Uncertain {
				t.Error("uncertain")
			}
			if e := r.Failure(); e.Step != tt.step || e.Code != tt.code || e.Permanent != tt.permanent {
				t.Errorf("%v: step %s code %d permanent %v; want %s %d %v", e, e.Step, e.Code, e.Permanent, tt.step, tt.code, tt.permanent)
			}
			if s.Usable() != tt.usable {
				t.Errorf("Usable() = %v, want %v", s.Usable(), tt.usable)
			}
			if rr := r.Rcpts[0]; rr.Code != tt.code || rr.Permanent != tt.permanent {
				t.Errorf("recipient %+v", rr)
			}
			if tt.cmds != nil {
				got := ss.Cmds()[1:]
				if !slices.Equal(got, tt.cmds) {
					t.Errorf("server saw %q, want %q", got, tt.cmds)
				}
			}
			if tt.name == "multi-line rejection" && r.Failure().Text != "Sender rejected see https://example.org/why" {
				t.Errorf("Text %q", r.Failure().Text)
			}
		})
	}
}

func TestDialGreeting(t *testing.T) {
	tests := []struct {
		name string
		sc   script
		mode TLSMode
		step string
		code int
		text string
	}{
		{name: "421 greeting", sc: script{"greeting": "421 4.3.2 Too busy"}, mode: TLSNone, step: StepConnect, code: 421},
		{name: "421 greeting starttls", sc: script{"greeting": "421 4.3.2 Too busy"}, mode: TLSStartTLS, step: StepConnect, code: 421},
		{name: "554 greeting is not permanent", sc: script{"greeting": "554 5.7.1 Go away"}, mode: TLSNone, step: StepConnect, code: 554},
		{name: "no greeting", sc: script{"greeting": "hang"}, mode: TLSNone, step: StepConnect, text: "timeout"},
		{name: "no greeting starttls", sc: script{"greeting": "hang"}, mode: TLSStartTLS, step: StepConnect, text: "timeout"},
		{name: "closed at greeting", sc: script{"greeting": "close"}, mode: TLSStartTLS, step: StepConnect, text: "EOF"},
		{name: "EHLO refused", sc: script{"EHLO": "550 5.7.1 Bad HELO"}, mode: TLSNone, step: StepEHLO, code: 550},
		{name: "EHLO refused starttls", sc: script{"EHLO": "550 5.7.1 Bad HELO"}, mode: TLSStartTLS, step: StepEHLO, code: 550},
		{name: "no reply to EHLO", sc: script{"EHLO": "hang"}, mode: TLSStartTLS, step: StepEHLO, text: "timeout"},
		{name: "STARTTLS refused", sc: script{"EHLO": "250-mx.test\n250 STARTTLS", "STARTTLS": "454 4.7.0 TLS not available"},
			mode: TLSStartTLS, step: StepTLS, code: 454, text: "STARTTLS refused"},
		{name: "STARTTLS not answered", sc: script{"EHLO": "250-mx.test\n250 STARTTLS", "STARTTLS": "close"},
			mode: TLSStartTLS, step: StepTLS},
		{name: "STARTTLS then no handshake", sc: script{"EHLO": "250-mx.test\n250 STARTTLS", "STARTTLS": "220 go ahead"},
			mode: TLSStartTLS, step: StepTLS, text: "handshake"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ss := newScriptServer(t, tt.sc)
			// Short only where the server hangs: a loaded machine (-race)
			// must not turn other cases into timeouts.
			timeout := 2 * time.Second
			if slices.Contains(slices.Collect(maps.Values(tt.sc)), "hang") || tt.text == "handshake" {
				timeout = 300 * time.Millisecond
			}
			start := time.Now()
			_, err := Dial(context.Background(), &Config{Address: ss.addr, TLS: tt.mode, Hostname: "client.test",
				CAFile: pki.caFile, CommandTimeout: timeout})
			if err == nil {
				t.Fatal("Dial succeeded")
			}
			if d := time.Since(start); d > timeout+time.Second {
				t.Errorf("Dial took %v", d)
			}
			e := asError(t, err, tt.step)
			if e.Code != tt.code || e.Permanent || !strings.Contains(e.Error(), tt.text) {
				t.Errorf("%v: code %d permanent %v; want code %d, temporary, mentioning %q", e, e.Code, e.Permanent, tt.code, tt.text)
			}
			for _, c := range ss.Cmds() {
				if strings.HasPrefix(c, "MAIL") || strings.HasPrefix(c, "AUTH") {
					t.Errorf("server saw %q", c)
				}
			}
		})
	}
}

func TestDialUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	_, err = Dial(context.Background(), &Config{Address: addr, TLS: TLSNone})
	e := asError(t, err, StepConnect)
	if e.Permanent || !strings.Contains(e.Error(), "refused") {
		t.Errorf("%v", e)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = Dial(ctx, &Config{Address: addr, TLS: TLSNone})
	if e := asError(t, err, StepConnect); !errors.Is(e, context.Canceled) {
		t.Errorf("%v does not wrap context.Canceled", e)
	}
}

// faultSync lets a test's server hooks and message callbacks take turns.
type faultSync struct {
	dropped chan struct{} // the server has closed the connection
	written chan struct{} // the client has written the content
}

// TestSendUncertainty checks the line between "certainly not delivered"
// and "maybe delivered" when the connection fails during DATA.
func TestSendUncertainty(t *testing.T) {
	type fault struct {
		name      string
		data      func(ts *testServer, f *faultSync) func(*smtp.Conn, io.Reader) error
		body      func(f *faultSync) func(io.Writer) error
		beforeDot func() error
		cancel    bool // cancel the context while the content is written
		hang      bool // the server stops: use a short DataTimeout
		uncertain bool
		text      string
	}
	bigBody := func(f *faultSync) func(io.Writer) error {
		return func(w io.Writer) error {
			chunk := bytes.Repeat([]byte("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd\r\n"), 512)
			if _, err := w.Write(chunk); err != nil {
				return err
			}
			select {
			case <-f.dropped:
			case <-time.After(2 * time.Second):
				return errors.New("server did not drop the connection")
			}
			// Until the connection fails: at most the socket buffers (a
			// few MiB on loopback) go through once the server stops.
			for range 2048 {
				if _, err := w.Write(chunk); err != nil {
					return err
				}
			}
			return errors.New("64 MiB went through a dropped connection")
		}
	}
	tests := []fault{
		{
			name: "dropped mid-content: not delivered",
			data: func(ts *testServer, f *faultSync) func(*smtp.Conn, io.Reader) error {
				return func(c *smtp.Conn, r io.Reader) error {
					io.CopyN(io.Discard, r, 1024)
					c.Conn().Close()
					close(f.dropped)
					return nil
				}
			},
			body: bigBody,
			text: "lost while sending the content",
		},
		{
			// The server resets the connection after the content but
			// before the final flush: the write carrying the dot fails, so
			// the dot provably never left.
			name: "reset before the final flush: not delivered",
			data: func(ts *testServer, f *faultSync) func(*smtp.Conn, io.Reader) error {
				return func(c *smtp.Conn, r io.Reader) error {
					io.CopyN(io.Discard, r, 1024)
					<-f.written
					c.Conn().Close() // unread data: the kernel sends RST
					close(f.dropped)
					return nil
				}
			},
			body: func(f *faultSync) func(io.Writer) error {
				return func(w io.Writer) error {
					_, err := w.Write(bytes.Repeat([]byte("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd\r\n"), 512))
					close(f.written)
					return err
				}
			},
			text: "lost before the final dot was sent",
		},
		{
			name: "dropped after the dot, before the reply: uncertain",
			data: func(ts *testServer, f *faultSync) func(*smtp.Conn, io.Reader) error {
				return func(c *smtp.Conn, r io.Reader) error {
					io.Copy(io.Discard, r)
					c.Conn().Close()
					return nil
				}
			},
			uncertain: true,
			text:      "may have been delivered",
		},
		{
			name: "no reply to the dot within DataTimeout: uncertain",
			data: func(ts *testServer, f *faultSync) func(*smtp.Conn, io.Reader) error {
				return func(c *smtp.Conn, r io.Reader) error {
					io.Copy(io.Discard, r)
					<-ts.done
					return nil
				}
			},
			hang:      true,
			uncertain: true,
			text:      "timeout",
		},
		{
			name: "server stops reading: content write times out, not delivered",
			data: func(ts *testServer, f *faultSync) func(*smtp.Conn, io.Reader) error {
				return func(c *smtp.Conn, r io.Reader) error {
					close(f.dropped)
					<-ts.done
					return nil
				}
			},
			body: bigBody,
			hang: true,
			text: "timeout",
		},
		{
			name: "WriteBody fails: not delivered",
			body: func(*faultSync) func(io.Writer) error {
				return func(w io.Writer) error {
					io.WriteString(w, "Subject: partial\r\n\r\n")
					return errors.New("spool read error")
				}
			},
			text: "spool read error",
		},
		{
			name:      "BeforeDot fails: not delivered",
			beforeDot: func() error { return errors.New("cannot record sending state") },
			text:      "cannot record sending state",
		},
		{
			name: "context cancelled during the content: not delivered",
			body: func(*faultSync) func(io.Writer) error {
				return func(w io.Writer) error {
					io.WriteString(w, "Subject: x\r\n\r\n")
					time.Sleep(300 * time.Millisecond) // the context ends meanwhile
					_, err := io.WriteString(w, strings.Repeat("x\r\n", 10000))
					return err
				}
			},
			cancel: true,
			text:   "context deadline exceeded",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := newTestServer(t, serverOpts{tls: "starttls"})
			f := &faultSync{dropped: make(chan struct{}), written: make(chan struct{})}
			if tt.data != nil {
				ts.o.data = tt.data(ts, f)
			}
			cfg := ts.config(TLSStartTLS)
			if tt.hang {
				cfg.DataTimeout = 300 * time.Millisecond
			}
			s := dial(t, cfg)
			m := textMessage("a@client.test", []string{"b@example.org", "c@example.org"}, testBody)
			if tt.body != nil {
				m.WriteBody = tt.body(f)
			}
			m.BeforeDot = tt.beforeDot
			if strings.HasPrefix(tt.name, "reset before the final flush") {
				m.BeforeDot = func() error {
					<-f.dropped
					time.Sleep(100 * time.Millisecond) // let the RST arrive
					return nil
				}
			}
			ctx := context.Background()
			if tt.cancel {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, 100*time.Millisecond)
				defer cancel()
			}
			start := time.Now()
			r := s.Send(ctx, m)
			if d := time.Since(start); d > 8*time.Second {
				t.Errorf("Send took %v", d)
			}
			if r.Err == nil {
				t.Fatal("Send succeeded")
			}
			e := asError(t, r.Err, StepData)
			if r.Uncertain != tt.uncertain {
				t.Errorf("Uncertain = %v, want %v (%v)", r.Uncertain, tt.uncertain, e)
			}
			if e.Permanent {
				t.Errorf("%v is permanent", e)
			}
			if !strings.Contains(e.Error(), tt.text) {
				t.Errorf("error %q does not mention %q", e, tt.text)
			}
			if s.Usable() {
				t.Error("session usable after a connection-level failure")
			}
			for _, rr := range r.Rcpts {
				if !rr.Accepted || rr.Permanent {
					t.Errorf("recipient %+v", rr)
				}
			}
			if len(ts.Msgs()) != 0 {
				t.Error("server stored the message")
			}
			// A dead session fails at once.
			r2 := s.Send(context.Background(), textMessage("a@client.test", []string{"b@example.org"}, testBody))
			if e := r2.Failure(); e == nil || e.Step != StepConnect {
				t.Errorf("Send on a dead session: %v", r2.Err)
			}
		})
	}
}

// TestBeforeDotOrder checks that BeforeDot runs after the whole content
// is handed over and before the server has the dot.
func TestSendCancelledContext(t *testing.T) {
	ts := newTestServer(t, serverOpts{})
	s := dial(t, ts.config(TLSNone))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r := s.Send(ctx, textMessage("a@client.test", []string{"b@example.org"}, testBody))
	if e := asError(t, r.Err, StepMail); e.Permanent || !errors.Is(e, context.Canceled) {
		t.Errorf("%v", e)
	}
	if !s.Usable() || ts.saw("MAIL") {
		t.Errorf("usable %v, events %q", s.Usable(), ts.Events())
	}
}

func TestBeforeDotOrder(t *testing.T) {
	ts := newTestServer(t, serverOpts{})
	s := dial(t, ts.config(TLSNone))
	var order []string
	m := textMessage("a@client.test", []string{"b@example.org"}, testBody)
	body := m.WriteBody
	m.WriteBody = func(w io.Writer) error {
		order = append(order, "body")
		return body(w)
	}
	m.BeforeDot = func() error {
		order = append(order, fmt.Sprintf("before-dot stored=%d", len(ts.Msgs())))
		return nil
	}
	if r := s.Send(context.Background(), m); r.Err != nil {
		t.Fatal(r.Err)
	}
	if want := []string{"body", "before-dot stored=0"}; !slices.Equal(order, want) {
		t.Errorf("order %q, want %q", order, want)
	}
	if len(ts.Msgs()) != 1 {
		t.Error("message not stored")
	}
}

func TestSendHangingRcpt(t *testing.T) {
	ts := newTestServer(t, serverOpts{})
	ts.o.rcpt = func(string) error { <-ts.done; return nil }
	cfg := ts.config(TLSNone)
	cfg.CommandTimeout = 300 * time.Millisecond
	s := dial(t, cfg)
	start := time.Now()
	r := s.Send(context.Background(), textMessage("a@client.test", []string{"b@example.org"}, testBody))
	if time.Since(start) > 2*time.Second {
		t.Errorf("Send took %v", time.Since(start))
	}
	e := asError(t, r.Err, StepRcpt)
	if e.Permanent || r.Uncertain || s.Usable() || !strings.Contains(e.Error(), "timeout") {
		t.Errorf("%v: permanent %v uncertain %v usable %v", e, e.Permanent, r.Uncertain, s.Usable())
	}
	if r.Rcpts[0].Text == "" {
		t.Errorf("recipient %+v carries no reason", r.Rcpts[0])
	}
}

func TestSendSize(t *testing.T) {
	ts := newTestServer(t, serverOpts{maxSize: 1000})
	s := dial(t, ts.config(TLSNone))
	m := textMessage("a@client.test", []string{"b@example.org"}, testBody)
	m.Size = 5000
	r := s.Send(context.Background(), m)
	e := asError(t, r.Err, StepMail)
	if !e.Permanent || e.Text != "message size 5000 exceeds the server's limit 1000" || e.Enhanced != [3]int{5, 3, 4} {
		t.Errorf("%v: permanent %v enhanced %v", e, e.Permanent, e.Enhanced)
	}
	if !r.Rcpts[0].Permanent {
		t.Errorf("recipient %+v", r.Rcpts[0])
	}
	if ts.saw("MAIL") {
		t.Errorf("MAIL sent for an oversized message: %q", ts.Events())
	}
	if !s.Usable() {
		t.Fatal("session not usable")
	}
	m.Size = 999
	if r := s.Send(context.Background(), m); r.Err != nil {
		t.Fatal(r.Err)
	}
	if got := ts.Msgs()[0].opts.Size; got != 999 {
		t.Errorf("SIZE=%d, want 999", got)
	}
}

func TestSendMailParams(t *testing.T) {
	tests := []struct {
		name    string
		srv     serverOpts
		msg     func(*Message)
		check   func(t *testing.T, m received)
		wantErr string
	}{
		{
			name: "8BITMIME",
			msg:  func(m *Message) { m.EightBit = true },
			check: func(t *testing.T, m received) {
				if m.opts.Body != smtp.Body8BitMIME {
					t.Errorf("BODY=%q", m.opts.Body)
				}
			},
		},
		{
			name: "DSN offered",
			srv:  serverOpts{dsn: true},
			msg: func(m *Message) {
				m.Notify = []string{"success", "FAILURE"}
				m.Ret = "hdrs"
				m.EnvID = "QQ314159+x=y"
			},
			check: func(t *testing.T, m received) {
				if m.opts.Return != smtp.DSNReturnHeaders || m.opts.EnvelopeID != "QQ314159+x=y" {
					t.Errorf("MAIL options %+v", m.opts)
				}
				want := []smtp.DSNNotify{smtp.DSNNotifySuccess, smtp.DSNNotifyFailure}
				if len(m.rcptOpts) != 1 || !slices.Equal(m.rcptOpts[0].Notify, want) {
					t.Errorf("RCPT options %+v", m.rcptOpts)
				}
			},
		},
		{
			// go-smtp's server answers 504 to RET or ENVID without DSN, so
			// a delivery proves they were left out.
			name: "DSN not offered: parameters left out",
			msg: func(m *Message) {
				m.Notify = []string{"never"}
				m.Ret = "full"
				m.EnvID = "abc"
			},
			check: func(t *testing.T, m received) {
				if m.opts.Return != "" || m.opts.EnvelopeID != "" || len(m.rcptOpts[0].Notify) != 0 {
					t.Errorf("DSN parameters sent: %+v %+v", m.opts, m.rcptOpts)
				}
			},
		},
		{name: "NOTIFY never with others", msg: func(m *Message) { m.Notify = []string{"never", "delay"} }, wantErr: "cannot be combined"},
		{name: "NOTIFY unknown", msg: func(m *Message) { m.Notify = []string{"always"} }, wantErr: "is not never"},
		{name: "RET unknown", msg: func(m *Message) { m.Ret = "body" }, wantErr: "RET"},
		{name: "ENVID not ASCII", msg: func(m *Message) { m.EnvID = "é" }, wantErr: "ENVID"},
		{name: "line break in address", msg: func(m *Message) { m.To = []string{"b@example.org\r\nDATA"} }, wantErr: "line break"},
		{name: "no recipients", msg: func(m *Message) { m.To = nil }, wantErr: "no recipients"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := newTestServer(t, tt.srv)
			s := dial(t, ts.config(TLSNone))
			m := textMessage("a@client.test", []string{"b@example.org"}, testBody)
			tt.msg(m)
			r := s.Send(context.Background(), m)
			if tt.wantErr != "" {
				e := asError(t, r.Err, StepConfig)
				if !e.Permanent || !strings.Contains(e.Error(), tt.wantErr) {
					t.Errorf("%v: permanent %v, want mention of %q", e, e.Permanent, tt.wantErr)
				}
				if ts.saw("MAIL") {
					t.Error("MAIL sent")
				}
				if !s.Usable() {
					t.Error("session not usable")
				}
				return
			}
			if r.Err != nil {
				t.Fatal(r.Err)
			}
			tt.check(t, ts.Msgs()[0])
		})
	}
}

func TestSendSMTPUTF8(t *testing.T) {
	to := []string{"a@bücher.example", "jörg@example.com", "b@example.org", "c@ex ample..com\u00e9"}
	t.Run("server without SMTPUTF8", func(t *testing.T) {
		ts := newTestServer(t, serverOpts{})
		s := dial(t, ts.config(TLSNone))
		m := textMessage("sender@bücher.example", to, testBody)
		r := s.Send(context.Background(), m)
		if r.Err != nil {
			t.Fatal(r.Err)
		}
		msgs := ts.Msgs()
		if msgs[0].from != "sender@xn--bcher-kva.example" || msgs[0].opts.UTF8 {
			t.Errorf("MAIL FROM %q, SMTPUTF8 %v", msgs[0].from, msgs[0].opts.UTF8)
		}
		if want := []string{"a@xn--bcher-kva.example", "b@example.org"}; !slices.Equal(msgs[0].rcpts, want) {
			t.Errorf("RCPT %q, want %q", msgs[0].rcpts, want)
		}
		if !r.Rcpts[0].Accepted || !r.Rcpts[2].Accepted {
			t.Errorf("Rcpts %+v", r.Rcpts)
		}
		for _, i := range []int{1, 3} {
			rr := r.Rcpts[i]
			if rr.Accepted || !rr.Permanent || rr.Code != 0 {
				t.Errorf("recipient %+v, want a local permanent failure", rr)
			}
		}
		if rr := r.Rcpts[1]; rr.Enhanced != [3]int{5, 6, 7} || !strings.Contains(rr.Text, "server lacks SMTPUTF8") {
			t.Errorf("recipient %+v", rr)
		}

		// A sender that cannot be written in ASCII fails the message.
		r = s.Send(context.Background(), textMessage("jörg@example.com", []string{"b@example.org"}, testBody))
		e := asError(t, r.Err, StepMail)
		if !e.Permanent || !strings.Contains(e.Error(), "server lacks SMTPUTF8") || !r.Rcpts[0].Permanent {
			t.Errorf("%v; recipients %+v", e, r.Rcpts)
		}
		// So does a message none of whose recipients can be.
		r = s.Send(context.Background(), textMessage("a@client.test", []string{"jörg@example.com"}, testBody))
		if e := asError(t, r.Err, StepRcpt); !e.Permanent {
			t.Errorf("%v", e)
		}
		if n := strings.Count(strings.Join(ts.Events(), "\n"), "MAIL"); n != 1 {
			t.Errorf("%d MAIL commands, want 1", n)
		}
		if !s.Usable() {
			t.Error("session not usable")
		}
	})
	t.Run("server with SMTPUTF8", func(t *testing.T) {
		ts := newTestServer(t, serverOpts{utf8: true})
		s := dial(t, ts.config(TLSNone))
		r := s.Send(context.Background(), textMessage("jörg@bücher.example", to[:3], testBody))
		if r.Err != nil {
			t.Fatal(r.Err)
		}
		m := ts.Msgs()[0]
		if !m.opts.UTF8 || m.from != "jörg@bücher.example" || !slices.Equal(m.rcpts, to[:3]) {
			t.Errorf("SMTPUTF8 %v, MAIL FROM %q, RCPT %q", m.opts.UTF8, m.from, m.rcpts)
		}
		// UTF8 set by the caller for header content, addresses ASCII.
		msg := textMessage("a@client.test", []string{"b@example.org"}, testBody)
		msg.UTF8 = true
		if r := s.Send(context.Background(), msg); r.Err != nil || !ts.Msgs()[1].opts.UTF8 {
			t.Errorf("%v", r.Err)
		}
		// ASCII only: no SMTPUTF8 parameter.
		if r := s.Send(context.Background(), textMessage("a@client.test", []string{"b@example.org"}, testBody)); r.Err != nil || ts.Msgs()[2].opts.UTF8 {
			t.Errorf("%v", r.Err)
		}
	})
}

func TestASCIIAddress(t *testing.T) {
	tests := []struct{ in, want, err string }{
		{"a@example.org", "a@example.org", ""},
		{"a@bücher.example", "a@xn--bcher-kva.example", ""},
		{"a@BÜCHER.example", "a@xn--bcher-kva.example", ""},
		{`"x@y"@bücher.example`, `"x@y"@xn--bcher-kva.example`, ""},
		{"jörg@example.com", "", "local part"},
		{"a@[192.0.2.1]", "a@[192.0.2.1]", ""},
		{"postmaster", "postmaster", ""},
	}
	for _, tt := range tests {
		got, err := asciiAddress(tt.in)
		if got != tt.want || (tt.err == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tt.err)) {
			t.Errorf("asciiAddress(%q) = %q, %v; want %q, %q", tt.in, got, err, tt.want, tt.err)
		}
	}
}

func TestRelay(t *testing.T) {
	ts := newTestServer(t, serverOpts{})
	for _, host := range []string{"127.0.0.1", "localhost"} {
		cfg := ts.config(TLSNone)
		cfg.Address = host + ":" + ts.port
		s := dial(t, cfg)
		if want := host + "[127.0.0.1]:" + ts.port; s.Relay() != want {
			t.Errorf("Relay() = %q, want %q", s.Relay(), want)
		}
		s.Close()
	}
}

func TestReset(t *testing.T) {
	ss := newScriptServer(t, script{})
	s := dial(t, &Config{Address: ss.addr, TLS: TLSNone, Hostname: "client.test"})
	if err := s.Reset(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if got, want := ss.Cmds(), []string{"EHLO client.test", "RSET", "EHLO client.test", "QUIT"}; !slices.Equal(got, want) {
		t.Errorf("server saw %q, want %q", got, want)
	}
	if err := s.Reset(); err == nil {
		t.Error("Reset after Close succeeded")
	}
}
