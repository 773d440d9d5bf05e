package enqueue

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/postie-mail/postie/internal/address"
	"github.com/postie-mail/postie/internal/spool"
)

var fixedNow = time.Date(2026, 11, 23, 17, 51, 0, 0, time.UTC)

func testEnv(t *testing.T) *Env {
	t.Helper()
	sp := spool.New(t.TempDir())
	if err := sp.Init(); err != nil {
		t.Fatal(err)
	}
	aliases, err := address.NewAliases(map[string]string{"root": "admin@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	return &Env{
		Hostname: "web1.example.com",
		Resolver: &address.Resolver{Aliases: aliases, Hostname: "web1.example.com"},
		Spool:    sp,
		MaxSize:  10 << 20,
		Caller:   Caller{UID: 33, User: "www-data", FullName: "Web Server"},
		Now:      func() time.Time { return fixedNow },
	}
}

// queued returns the envelope and message text of the one queued message.
func queued(t *testing.T, env *Env, id string) (*spool.Envelope, string) {
	t.Helper()
	q, err := spool.OpenFile(filepath.Join(env.Spool.Dir, spool.IncomingDir, id))
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	b, err := io.ReadAll(q.Message())
	if err != nil {
		t.Fatal(err)
	}
	return q.Env, string(b)
}

func header(msg string) string {
	h, _, _ := strings.Cut(msg, "\r\n\r\n")
	return h + "\r\n"
}

func body(msg string) string {
	_, b, _ := strings.Cut(msg, "\r\n\r\n")
	return b
}

func TestEnvelope(t *testing.T) {
	tests := []struct {
		name     string
		req      Request
		in       string
		sender   string
		rcpts    []string
		hasHdr   []string // substrings the header must contain
		notInHdr []string
	}{
		{
			name:   "php mail -t -i",
			req:    Request{FromHeader: true},
			in:     "To: a@example.com\nSubject: hi\n\nbody\n",
			sender: "www-data@web1.example.com",
			rcpts:  []string{"a@example.com"},
			hasHdr: []string{"To: a@example.com\r\n", "Subject: hi\r\n", "From: Web Server <www-data@web1.example.com>\r\n", "Message-ID: <", "Date: Mon, 23 Nov 2026 17:51:00 +0000\r\n", "Received: by web1.example.com (Postie, from userid 33 www-data)\r\n\tid "},
		},
		{
			name:     "-t with To Cc Bcc, several To lines",
			req:      Request{FromHeader: true},
			in:       "From: app@example.com\nTo: a@example.com\nTo: b@example.com, c@example.com\nCc: \"Doe, J\" <d@example.com>\nBcc: secret@example.com\nSubject: x\n\nbody\n",
			sender:   "www-data@web1.example.com",
			rcpts:    []string{"a@example.com", "b@example.com", "c@example.com", "d@example.com", "secret@example.com"},
			hasHdr:   []string{"From: app@example.com\r\n"},
			notInHdr: []string{"Bcc", "secret"},
		},
		{
			name:     "Resent- fields take over",
			req:      Request{FromHeader: true},
			in:       "From: a@example.com\nTo: old@example.com\nResent-From: b@example.com\nResent-To: new@example.com\nResent-Bcc: hidden@example.com\n\nbody\n",
			sender:   "www-data@web1.example.com",
			rcpts:    []string{"new@example.com", "hidden@example.com"},
			notInHdr: []string{"hidden"},
		},
		{
			name:   "argv union -t, duplicates removed",
			req:    Request{FromHeader: true, Recipients: []string{"a@example.com,x@example.com"}},
			in:     "To: a@example.com\n\nbody\n",
			sender: "www-data@web1.example.com",
			rcpts:  []string{"a@example.com", "x@example.com"},
		},
		{
			name:   "no -t: header recipients ignored",
			req:    Request{Recipients: []string{"x@example.com"}},
			in:     "To: a@example.com\n\nbody\n",
			sender: "www-data@web1.example.com",
			rcpts:  []string{"x@example.com"},
			hasHdr: []string{"To: a@example.com\r\n"},
		},
		{
			name:   "cron: alias and -F",
			req:    Request{Recipients: []string{"root"}, FullName: "CronDaemon"},
			in:     "From: root (Cron Daemon)\nTo: root\nSubject: Cron <root@web1> ls\n\nout\n",
			sender: "www-data@web1.example.com",
			rcpts:  []string{"admin@example.com"},
			hasHdr: []string{"From: Cron Daemon <root@web1.example.com>\r\n", "To: root@web1.example.com\r\n"},
		},
		{
			name:   "null sender",
			req:    Request{Recipients: []string{"a@example.com"}, Sender: ptr("<>")},
			in:     "Subject: bounce\n\nx\n",
			sender: "",
			rcpts:  []string{"a@example.com"},
		},
		{
			name:   "-f bare name qualified",
			req:    Request{Recipients: []string{"a@example.com"}, Sender: ptr("root")},
			in:     "Subject: x\n\nx\n",
			sender: "root@web1.example.com",
			rcpts:  []string{"a@example.com"},
			hasHdr: []string{"From: Web Server <root@web1.example.com>"},
		},
		{
			name:   "undisclosed recipients group and argv",
			req:    Request{FromHeader: true, Recipients: []string{"z@example.com"}},
			in:     "To: undisclosed-recipients:;\n\nx\n",
			sender: "www-data@web1.example.com",
			rcpts:  []string{"z@example.com"},
		},
		{
			name:   "folded To",
			req:    Request{FromHeader: true},
			in:     "To: a@example.com,\n  b@example.com,\n\tc@example.com\n\nx\n",
			sender: "www-data@web1.example.com",
			rcpts:  []string{"a@example.com", "b@example.com", "c@example.com"},
		},
		{
			name:   "quoted local part",
			req:    Request{Recipients: []string{`"a b"@example.org`}},
			in:     "Subject: x\n\nx\n",
			sender: "www-data@web1.example.com",
			rcpts:  []string{`"a b"@example.org`},
		},
		{
			name:   "existing Message-ID and Date kept",
			req:    Request{FromHeader: true},
			in:     "To: a@example.com\nMessage-ID: <keep@example.com>\nDate: Tue, 1 Jan 2019 00:00:00 +0000\n\nx\n",
			sender: "www-data@web1.example.com",
			rcpts:  []string{"a@example.com"},
			hasHdr: []string{"Message-ID: <keep@example.com>\r\n", "Date: Tue, 1 Jan 2019 00:00:00 +0000\r\n"},
		},
		{
			name:     "unix From line dropped",
			req:      Request{FromHeader: true},
			in:       "From someone@example.com Mon Nov 23 17:51:00 2026\nTo: a@example.com\n\nx\n",
			sender:   "www-data@web1.example.com",
			rcpts:    []string{"a@example.com"},
			notInHdr: []string{"From someone"},
		},
		{
			name:   "From that is not an address is kept",
			req:    Request{Recipients: []string{"a@example.com"}},
			in:     "From: Logwatch\nSubject: x\n\nx\n",
			sender: "www-data@web1.example.com",
			rcpts:  []string{"a@example.com"},
			hasHdr: []string{"From: Logwatch@web1.example.com\r\n"},
		},
		{
			name:   "rfc2047 display name with comma",
			req:    Request{FromHeader: true},
			in:     "To: =?utf-8?q?M=C3=BCller=2C_J?= <jm@example.de>\n\nx\n",
			sender: "www-data@web1.example.com",
			rcpts:  []string{"jm@example.de"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := testEnv(t)
			res, err := Enqueue(env, &tt.req, strings.NewReader(tt.in))
			if err != nil {
				t.Fatalf("Enqueue: %v", err)
			}
			qe, msg := queued(t, env, res.ID)
			if qe.Sender != tt.sender {
				t.Errorf("sender = %q, want %q", qe.Sender, tt.sender)
			}
			if !reflect.DeepEqual(qe.Recipients, tt.rcpts) {
				t.Errorf("recipients = %q, want %q", qe.Recipients, tt.rcpts)
			}
			h := header(msg)
			for _, s := range tt.hasHdr {
				if !strings.Contains(h, s) {
					t.Errorf("header lacks %q:\n%s", s, h)
				}
			}
			for _, s := range tt.notInHdr {
				if strings.Contains(h, s) {
					t.Errorf("header has %q:\n%s", s, h)
				}
			}
			if qe.UID != 33 || qe.User != "www-data" {
				t.Errorf("caller = %d %q", qe.UID, qe.User)
			}
		})
	}
}

func ptr(s string) *string { return &s }

func TestBody(t *testing.T) {
	tests := []struct {
		name  string
		dot   bool
		in    string
		body  string
		facts func(e *spool.Envelope) bool
	}{
		{"LF to CRLF", false, "Subject: x\n\na\nb\n", "a\r\nb\r\n", nil},
		{"mixed CRLF and LF", false, "Subject: x\r\n\r\na\r\nb\nc\r\n", "a\r\nb\r\nc\r\n", nil},
		{"no final newline", false, "Subject: x\n\nlast line", "last line\r\n", nil},
		{"no body", false, "Subject: x\n", "", nil},
		{"no body, blank line", false, "Subject: x\n\n", "", nil},
		{"lone dot ends without -i", true, "Subject: x\n\na\n.\nafter\n", "a\r\n", nil},
		{"dot unstuffing without -i", true, "Subject: x\n\n..a\n.b\n", ".a\r\n.b\r\n", nil},
		{"lone dot kept with -i", false, "Subject: x\n\na\n.\nb\n", "a\r\n.\r\nb\r\n", nil},
		{"8-bit", false, "Subject: x\n\ncafé\n", "café\r\n", func(e *spool.Envelope) bool { return e.EightBit }},
		{"bare CR and NUL kept", false, "Subject: x\n\na\rb\x00c\n", "a\rb\x00c\r\n", func(e *spool.Envelope) bool { return e.BareCR && e.NUL }},
		{"long line kept", false, "Subject: x\n\n" + strings.Repeat("x", 2000) + "\n", strings.Repeat("x", 2000) + "\r\n", func(e *spool.Envelope) bool { return e.LongLines }},
		{"no header section", false, "just a body line\nanother\n", "just a body line\r\nanother\r\n", nil},
		{"header ends at non-header line", false, "Subject: x\nthis is body\n", "this is body\r\n", nil},
		{"dot ends header-only message", true, "Subject: x\n.\n", "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := testEnv(t)
			res, err := Enqueue(env, &Request{Recipients: []string{"a@example.com"}, DotEnds: tt.dot}, strings.NewReader(tt.in))
			if err != nil {
				t.Fatalf("Enqueue: %v", err)
			}
			qe, msg := queued(t, env, res.ID)
			if got := body(msg); got != tt.body {
				t.Errorf("body = %q, want %q", got, tt.body)
			}
			if qe.Size != int64(len(msg)) {
				t.Errorf("size = %d, message is %d bytes", qe.Size, len(msg))
			}
			if tt.facts != nil && !tt.facts(qe) {
				t.Errorf("facts wrong: %+v", qe)
			}
		})
	}
}

func TestLongHeaderFolded(t *testing.T) {
	env := testEnv(t)
	var rcpts []string
	for i := range 300 {
		rcpts = append(rcpts, "user"+strings.Repeat("x", i%7)+"@example.com")
	}
	in := "To: " + strings.Join(rcpts, ", ") + "\nSubject: many\n\nx\n"
	res, err := Enqueue(env, &Request{FromHeader: true}, strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	_, msg := queued(t, env, res.ID)
	for _, line := range strings.Split(header(msg), "\r\n") {
		if len(line) > 998 {
			t.Fatalf("header line of %d octets", len(line))
		}
	}
	if len(res.Recipients) != 7 {
		t.Errorf("recipients = %d, want 7 distinct", len(res.Recipients))
	}
}

func TestRefused(t *testing.T) {
	tests := []struct {
		name string
		req  Request
		in   string
		code int
	}{
		{"-t without header", Request{FromHeader: true}, "just body\n", ExDataErr},
		{"-t without recipients", Request{FromHeader: true}, "Subject: x\n\nbody\n", ExDataErr},
		{"no recipients", Request{}, "Subject: x\n\nbody\n", ExUsage},
		{"NUL in header", Request{Recipients: []string{"a@example.com"}}, "Subject: x\x00y\n\nbody\n", ExDataErr},
		{"header over 1 MB", Request{Recipients: []string{"a@example.com"}}, "Subject: " + strings.Repeat("x ", 600000) + "\n\nbody\n", ExDataErr},
		{"bad To with -t", Request{FromHeader: true}, "To: a@\n\nbody\n", ExDataErr},
		{"bad sender", Request{Recipients: []string{"a@example.com"}, Sender: ptr("two words")}, "Subject: x\n\n", ExUsage},
		{"too big", Request{Recipients: []string{"a@example.com"}}, "Subject: x\n\n" + strings.Repeat("y", 11<<20), ExDataErr},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := testEnv(t)
			_, err := Enqueue(env, &tt.req, strings.NewReader(tt.in))
			var e *Error
			if !errors.As(err, &e) || e.Code != tt.code {
				t.Fatalf("err = %v, want code %d", err, tt.code)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error spans lines: %q", err)
			}
			for _, d := range []string{spool.TmpDir, spool.IncomingDir} {
				names, _ := os.ReadDir(filepath.Join(env.Spool.Dir, d))
				if len(names) != 0 {
					t.Errorf("%s/ not empty after refusal: %v", d, names)
				}
			}
		})
	}
}

func TestRewrite(t *testing.T) {
	env := testEnv(t)
	env.RewriteLocal = map[string]string{"root": "server-alerts@example.com", "*": "noreply@example.com"}
	env.Resolver.Aliases = address.Aliases{}
	res, err := Enqueue(env, &Request{Recipients: []string{"ops@example.com"}, Sender: ptr("root")},
		strings.NewReader("From: root (Cron Daemon)\nTo: root\nSubject: x\n\nx\n"))
	if err != nil {
		t.Fatal(err)
	}
	qe, msg := queued(t, env, res.ID)
	if qe.Sender != "server-alerts@example.com" {
		t.Errorf("sender = %q", qe.Sender)
	}
	h := header(msg)
	for _, s := range []string{"From: Cron Daemon <server-alerts@example.com>\r\n", "X-Original-From: Cron Daemon <root>\r\n", "To: server-alerts@example.com\r\n"} {
		if !strings.Contains(h, s) {
			t.Errorf("header lacks %q:\n%s", s, h)
		}
	}
}

func TestForceFrom(t *testing.T) {
	env := testEnv(t)
	env.ForceFrom = "account@example.com"
	res, err := Enqueue(env, &Request{FromHeader: true}, strings.NewReader("From: \"Site\" <site@other.example>\nTo: a@example.com\n\nx\n"))
	if err != nil {
		t.Fatal(err)
	}
	qe, msg := queued(t, env, res.ID)
	if qe.Sender != "account@example.com" {
		t.Errorf("sender = %q", qe.Sender)
	}
	h := header(msg)
	for _, s := range []string{"From: Site <account@example.com>\r\n", "Reply-To: \"Site\" <site@other.example>\r\n"} {
		if !strings.Contains(h, s) {
			t.Errorf("header lacks %q:\n%s", s, h)
		}
	}
}

// A caller killed mid-write leaves nothing: reading fails, nothing queued.
type failingReader struct{ n int }

func (r *failingReader) Read(p []byte) (int, error) {
	if r.n > 0 {
		r.n--
		return copy(p, "Subject: x\n\nsome body\n"), nil
	}
	return 0, errors.New("read /dev/stdin: input/output error")
}

func TestReadErrorLeavesNothing(t *testing.T) {
	env := testEnv(t)
	_, err := Enqueue(env, &Request{Recipients: []string{"a@example.com"}}, &failingReader{n: 1})
	var e *Error
	if !errors.As(err, &e) || e.Code != ExIOErr {
		t.Fatalf("err = %v, want EX_IOERR", err)
	}
	for _, d := range []string{spool.TmpDir, spool.IncomingDir} {
		names, _ := os.ReadDir(filepath.Join(env.Spool.Dir, d))
		if len(names) != 0 {
			t.Errorf("%s/ not empty: %v", d, names)
		}
	}
}

func FuzzEnqueue(f *testing.F) {
	for _, s := range []string{
		"To: a@example.com\nSubject: x\n\nbody\n",
		"From a@b Mon\nTo: a@b\n\n..x\n.\n",
		"To: g: a@b, c@d;\nCc: \"x, y\" <e@f>\n\nb",
		"no header\n",
		"To: a@b\r\nSubject: =?utf-8?q?x?=\r\n\r\n\x00\r\r\n",
	} {
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, in string, dotEnds bool) {
		env := testEnv(t)
		res, err := Enqueue(env, &Request{FromHeader: true, Recipients: []string{"fixed@example.com"}, DotEnds: dotEnds}, strings.NewReader(in))
		if err != nil {
			return
		}
		qe, msg := queued(t, env, res.ID)
		h := header(msg)
		if strings.Contains(h, "\x00") {
			t.Fatal("NUL in queued header")
		}
		if strings.Contains(strings.ReplaceAll(msg, "\r\n", ""), "\n") {
			t.Fatal("bare LF in queued message")
		}
		for _, r := range qe.Recipients {
			if strings.ContainsAny(r, "\r\n\x00<>") {
				t.Fatalf("bad recipient %q", r)
			}
		}
		if strings.Contains(strings.ToLower(h), "\r\nbcc:") || strings.HasPrefix(strings.ToLower(h), "bcc:") {
			t.Fatal("Bcc kept")
		}
	})
}
