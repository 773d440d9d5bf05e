package bsmtp

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/postie-mail/postie/internal/spool"
)

// data returns DATA content: a header, a blank line, the body lines, and
// the final dot, with CRLF line ends. Lines are sent as given (callers
// dot-stuff them).
func data(header string, bodyLines ...string) string {
	var b strings.Builder
	for _, l := range strings.Split(header, "\n") {
		b.WriteString(l + "\r\n")
	}
	b.WriteString("\r\n")
	for _, l := range bodyLines {
		b.WriteString(l + "\r\n")
	}
	b.WriteString(".\r\n")
	return b.String()
}

func lines(l ...string) string { return strings.Join(l, "\r\n") + "\r\n" }

// Reply prefixes of go-smtp v0.25.1 and of this package.
const (
	r220    = "220 test.example ESMTP Service Ready"
	rHello  = "250 2.0.0 Hello "
	rMail   = "250 2.0.0 Roger, accepting mail from "
	rRcpt   = "250 2.0.0 I'll make sure "
	r354    = "354 Go ahead"
	rQueued = "250 2.0.0 Ok: queued as "
	r221    = "221 2.0.0 Bye"
	rRset   = "250 2.0.0 Session reset"
	rNoop   = "250 2.0.0 I have successfully done nothing"
	rBadRcp = "553 5.1.3 Bad recipient address syntax: "
	rSize   = "552 5.3.4 "
)

func TestTranscripts(t *testing.T) {
	big := strings.Repeat("0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz\r\n", 100) // 7400 bytes
	tests := []struct {
		name    string
		aliases map[string]string
		maxSize int64 // 0: 1 MiB
		in      string
		want    []string // prefixes of each reply's last line
		wantErr bool
		check   func(t *testing.T, q []queued)
	}{
		{
			name: "HELO session with two messages",
			in: lines("HELO client.example",
				"MAIL FROM:<alice@example.com>", "RCPT TO:<bob@example.org>", "DATA") +
				data("From: Alice <alice@example.com>\nTo: bob@example.org\nSubject: one", "first") +
				lines("MAIL FROM:<carol@example.com>", "RCPT TO:<dave@example.org>", "RCPT TO:<erin@example.net>", "DATA") +
				data("From: carol@example.com\nSubject: two", "second") +
				lines("QUIT"),
			want: []string{r220, rHello + "client.example", rMail + "<alice@example.com>", rRcpt + "<bob@example.org>", r354, rQueued,
				rMail + "<carol@example.com>", rRcpt + "<dave@example.org>", rRcpt + "<erin@example.net>", r354, rQueued, r221},
			check: func(t *testing.T, q []queued) {
				if len(q) != 2 {
					t.Fatalf("queued %d messages", len(q))
				}
				e := q[0].env
				if e.Sender != "alice@example.com" || !slices.Equal(e.Recipients, []string{"bob@example.org"}) {
					t.Errorf("first envelope: %q -> %q", e.Sender, e.Recipients)
				}
				if s, _ := header(q[0].msg, "Subject"); s != "one" || body(q[0].msg) != "first\r\n" {
					t.Errorf("first message: %q", q[0].msg)
				}
				e = q[1].env
				if e.Sender != "carol@example.com" || !slices.Equal(e.Recipients, []string{"dave@example.org", "erin@example.net"}) {
					t.Errorf("second envelope: %q -> %q", e.Sender, e.Recipients)
				}
				if s, _ := header(q[1].msg, "Subject"); s != "two" || body(q[1].msg) != "second\r\n" {
					t.Errorf("second message: %q", q[1].msg)
				}
				// enqueue's header fix-ups applied, as for -t.
				for _, k := range []string{"Message-Id", "Date", "Received"} {
					if _, ok := header(q[1].msg, k); !ok {
						t.Errorf("second message lacks %s: %q", k, q[1].msg)
					}
				}
			},
		},
		{
			name: "null sender",
			in: lines("HELO x", "MAIL FROM:<>", "RCPT TO:<bob@example.org>", "DATA") +
				data("Subject: bounce", "b") + lines("QUIT"),
			want: []string{r220, rHello, rMail + "<>", rRcpt, r354, rQueued, r221},
			check: func(t *testing.T, q []queued) {
				if q[0].env.Sender != "" {
					t.Errorf("sender %q, want null", q[0].env.Sender)
				}
				// The null sender cannot be a From; enqueue uses the caller.
				if f, _ := header(q[0].msg, "From"); f != "Web Server <www-data@test.example>" {
					t.Errorf("From: %q", f)
				}
			},
		},
		{
			name:    "RCPT with aliases",
			aliases: map[string]string{"root": "admin@example.com, ops@example.com", "webmaster": "root"},
			in: lines("EHLO x", "MAIL FROM:<www-data@test.example>",
				"RCPT TO:<root@test.example>", "RCPT TO:<WebMaster@TEST.EXAMPLE>", "RCPT TO:<bob@test.example>", "RCPT TO:<root@elsewhere.example>", "DATA") +
				data("Subject: cron", "x") + lines("QUIT"),
			want: []string{r220, "250 LIMITS", rMail, rRcpt + "<root@test.example>", rRcpt + "<WebMaster@TEST.EXAMPLE>", rRcpt, rRcpt, r354, rQueued, r221},
			check: func(t *testing.T, q []queued) {
				want := []string{"admin@example.com", "ops@example.com", "bob@test.example", "root@elsewhere.example"}
				if !slices.Equal(q[0].env.Recipients, want) {
					t.Errorf("recipients %q, want %q", q[0].env.Recipients, want)
				}
			},
		},
		{
			name:    "alias loop is a temporary RCPT failure",
			aliases: map[string]string{"a": "b", "b": "a"},
			in: lines("HELO x", "MAIL FROM:<s@example.com>", "RCPT TO:<a@test.example>", "RCPT TO:<ok@example.com>", "DATA") +
				data("Subject: s", "x") + lines("QUIT"),
			want: []string{r220, rHello, rMail, "451 4.3.0 Alias configuration error: ", rRcpt, r354, rQueued, r221},
			check: func(t *testing.T, q []queued) {
				if !slices.Equal(q[0].env.Recipients, []string{"ok@example.com"}) {
					t.Errorf("recipients %q", q[0].env.Recipients)
				}
			},
		},
		{
			name: "bad RCPT addresses get 553 and the session continues",
			in: lines("HELO x", "MAIL FROM:<s@example.com>",
				"RCPT TO:<a@b;c>",
				"RCPT TO:<a@x,b@y>",
				"RCPT TO:<x@y:z@w>",
				"RCPT TO:<a@b\rc>",
				"RCPT TO:<a@(x)>",
				`RCPT TO:<"a@b"@example.com>`,
				"RCPT TO:<a@exa mple.com>", // go-smtp's own syntax check
				"RCPT TO:<a@.example.com>",
				"RCPT TO:<a@[1.2.3.4>",
				"RCPT TO:<a b@x>", // go-smtp's own syntax check
				"RCPT TO:<good@example.com>", "DATA") +
				data("Subject: s", "x") + lines("QUIT"),
			want: []string{r220, rHello, rMail, rBadRcp, rBadRcp, rBadRcp, rBadRcp, rBadRcp, rBadRcp,
				"501 5.5.2 Was expecting RCPT arg syntax", rBadRcp, rBadRcp,
				"501 5.5.2 Was expecting RCPT arg syntax", rRcpt + "<good@example.com>", r354, rQueued, r221},
			check: func(t *testing.T, q []queued) {
				if !slices.Equal(q[0].env.Recipients, []string{"good@example.com"}) {
					t.Errorf("recipients %q", q[0].env.Recipients)
				}
			},
		},
		{
			name: "bad sender gets 553 5.1.7",
			in: lines("HELO x", "MAIL FROM:<a@b;c>", "MAIL FROM:<a@b\x00c>", "MAIL FROM:<s@example.com>", "RCPT TO:<r@example.com>", "DATA") +
				data("Subject: s", "x") + lines("QUIT"),
			want: []string{r220, rHello, "553 5.1.7 Bad sender address syntax: ", "553 5.1.7 ", rMail, rRcpt, r354, rQueued, r221},
		},
		{
			name: "quoted local part and UTF-8 addresses",
			in: lines("EHLO x", `MAIL FROM:<"john doe"@example.com> SMTPUTF8`, `RCPT TO:<"a\"b"@example.org>`, "RCPT TO:<jörg@exämple.de>", "RCPT TO:<x@[192.0.2.1]>", "DATA") +
				data("Subject: s", "x") + lines("QUIT"),
			want: []string{r220, "250 LIMITS", rMail, rRcpt, rRcpt, rRcpt, r354, rQueued, r221},
			check: func(t *testing.T, q []queued) {
				e := q[0].env
				if e.Sender != `"john doe"@example.com` {
					t.Errorf("sender %q", e.Sender)
				}
				if want := []string{`"a\"b"@example.org`, "jörg@exämple.de", "x@[192.0.2.1]"}; !slices.Equal(e.Recipients, want) {
					t.Errorf("recipients %q, want %q", e.Recipients, want)
				}
				if !e.UTF8 {
					t.Error("UTF8 not set")
				}
			},
		},
		{
			name: "dot-stuffing is undone",
			in: lines("HELO x", "MAIL FROM:<s@example.com>", "RCPT TO:<r@example.com>", "DATA") +
				data("Subject: dots", "..line", "...", "..", " .x", "a.") + lines("QUIT"),
			want: []string{r220, rHello, rMail, rRcpt, r354, rQueued, r221},
			check: func(t *testing.T, q []queued) {
				if b := body(q[0].msg); b != ".line\r\n..\r\n.\r\n .x\r\na.\r\n" {
					t.Errorf("body %q", b)
				}
			},
		},
		{
			name: "Bcc is removed and not a recipient",
			in: lines("HELO x", "MAIL FROM:<s@example.com>", "RCPT TO:<to@example.com>", "DATA") +
				data("From: s@example.com\nTo: to@example.com\nBcc: hidden@example.com\nSubject: b", "x") + lines("QUIT"),
			want: []string{r220, rHello, rMail, rRcpt, r354, rQueued, r221},
			check: func(t *testing.T, q []queued) {
				if _, ok := header(q[0].msg, "Bcc"); ok || strings.Contains(q[0].msg, "hidden") {
					t.Errorf("Bcc kept: %q", q[0].msg)
				}
				if !slices.Equal(q[0].env.Recipients, []string{"to@example.com"}) {
					t.Errorf("recipients %q", q[0].env.Recipients)
				}
			},
		},
		{
			name: "header recipients are not used",
			in: lines("HELO x", "MAIL FROM:<s@example.com>", "RCPT TO:<env@example.com>", "DATA") +
				data("To: hdr@example.com\nCc: cc@example.com", "x") + lines("QUIT"),
			want: []string{r220, rHello, rMail, rRcpt, r354, rQueued, r221},
			check: func(t *testing.T, q []queued) {
				if !slices.Equal(q[0].env.Recipients, []string{"env@example.com"}) {
					t.Errorf("recipients %q", q[0].env.Recipients)
				}
			},
		},
		{
			name:    "message over go-smtp's limit gets 552, and the session goes on",
			maxSize: 2000,
			in: lines("HELO x", "MAIL FROM:<s@example.com>", "RCPT TO:<r@example.com>", "DATA") +
				"Subject: big\r\n\r\n" + big + ".\r\n" +
				lines("MAIL FROM:<s@example.com>", "RCPT TO:<r@example.com>", "DATA") + data("Subject: small", "x") + lines("QUIT"),
			want: []string{r220, rHello, rMail, rRcpt, r354, rSize + "message exceeds the size limit of 2000 bytes", rMail, rRcpt, r354, rQueued, r221},
			check: func(t *testing.T, q []queued) {
				if s, _ := header(q[0].msg, "Subject"); len(q) != 1 || s != "small" {
					t.Errorf("queued %d, first %q", len(q), q[0].msg)
				}
			},
		},
		{
			name:    "message over enqueue's limit (with the header it adds) gets 552",
			maxSize: 2000,
			in: lines("HELO x", "MAIL FROM:<s@example.com>", "RCPT TO:<r@example.com>", "DATA") +
				"Subject: almost\r\n\r\n" + big[:1900] + "\r\n.\r\n" + lines("QUIT"),
			want: []string{r220, rHello, rMail, rRcpt, r354, rSize + "message exceeds the size limit of 2000 bytes", r221},
		},
		{
			name:    "SIZE over the limit is refused at MAIL",
			maxSize: 2000,
			in:      lines("EHLO x", "MAIL FROM:<s@example.com> SIZE=2001", "QUIT"),
			want:    []string{r220, "250 LIMITS", rSize + "Max message size exceeded", r221},
		},
		{
			name: "RSET mid-transaction",
			in: lines("HELO x", "MAIL FROM:<old@example.com>", "RCPT TO:<old@example.org>", "RSET",
				"MAIL FROM:<new@example.com>", "RCPT TO:<new@example.org>", "DATA") + data("Subject: s", "x") + lines("QUIT"),
			want: []string{r220, rHello, rMail, rRcpt, rRset, rMail, rRcpt, r354, rQueued, r221},
			check: func(t *testing.T, q []queued) {
				if q[0].env.Sender != "new@example.com" || !slices.Equal(q[0].env.Recipients, []string{"new@example.org"}) {
					t.Errorf("envelope %q -> %q", q[0].env.Sender, q[0].env.Recipients)
				}
			},
		},
		{
			name: "NOOP",
			in:   lines("HELO x", "NOOP", "MAIL FROM:<s@example.com>", "NOOP", "QUIT"),
			want: []string{r220, rHello, rNoop, rMail, rNoop, r221},
		},
		{
			name: "unknown command gets 500 and the session survives",
			in: lines("HELO x", "XYZZ", "FOOO bar", "MAIL FROM:<s@example.com>", "RCPT TO:<r@example.com>", "DATA") +
				data("Subject: s", "x") + lines("QUIT"),
			want: []string{r220, rHello, "500 5.5.2 Syntax errors, XYZZ command unrecognized", "500 5.5.2 ", rMail, rRcpt, r354, rQueued, r221},
		},
		{
			name: "go-smtp ends the session after more than three bad commands",
			in:   lines("HELO x", "AAAA", "BBBB", "CCCC x", "DDDD", "NOOP"),
			want: []string{r220, rHello, "500", "500", "500", "500", "500 5.5.1 Too many errors"},
		},
		{
			name: "MAIL before HELO",
			in:   lines("MAIL FROM:<s@example.com>", "HELO x", "QUIT"),
			want: []string{r220, "502 5.5.1 Please introduce yourself first.", rHello, r221},
		},
		{
			name: "nested MAIL",
			in:   lines("HELO x", "MAIL FROM:<s@example.com>", "MAIL FROM:<t@example.com>", "QUIT"),
			want: []string{r220, rHello, rMail, "503 5.5.1 Error: nested MAIL command", r221},
		},
		{
			name: "DATA without recipients",
			in:   lines("HELO x", "MAIL FROM:<s@example.com>", "DATA", "QUIT"),
			want: []string{r220, rHello, rMail, "502 5.5.1 Missing RCPT TO command.", r221},
		},
		{
			name: "DSN parameters are queued",
			in: lines("EHLO x", "MAIL FROM:<s@example.com> RET=HDRS ENVID=abc+2Bdef BODY=8BITMIME",
				"RCPT TO:<a@example.com> NOTIFY=SUCCESS,FAILURE", "RCPT TO:<b@example.com> NOTIFY=failure,success",
				"RCPT TO:<c@example.com>", "DATA") + data("Subject: dsn", "x") + lines("QUIT"),
			want: []string{r220, "250 LIMITS", rMail, rRcpt, rRcpt, "452 4.5.3 Recipients with different DSN NOTIFY", r354, rQueued, r221},
			check: func(t *testing.T, q []queued) {
				e := q[0].env
				if !slices.Equal(e.Recipients, []string{"a@example.com", "b@example.com"}) {
					t.Errorf("recipients %q", e.Recipients)
				}
				if !slices.Equal(e.Notify, []string{"failure", "success"}) || e.Ret != "hdrs" || e.EnvID != "abc+def" || e.BodyType != "8BITMIME" {
					t.Errorf("DSN: notify %q ret %q envid %q body %q", e.Notify, e.Ret, e.EnvID, e.BodyType)
				}
			},
		},
		{
			name: "no DSN parameters",
			in:   lines("HELO x", "MAIL FROM:<s@example.com>", "RCPT TO:<a@example.com>", "DATA") + data("Subject: s", "x") + lines("QUIT"),
			want: []string{r220, rHello, rMail, rRcpt, r354, rQueued, r221},
			check: func(t *testing.T, q []queued) {
				e := q[0].env
				if e.Notify != nil || e.Ret != "" || e.EnvID != "" || e.BodyType != "" {
					t.Errorf("DSN: notify %q ret %q envid %q body %q", e.Notify, e.Ret, e.EnvID, e.BodyType)
				}
			},
		},
		{
			name: "ENVID too long",
			in:   lines("EHLO x", "MAIL FROM:<s@example.com> ENVID="+strings.Repeat("x", 101), "QUIT"),
			want: []string{r220, "250 LIMITS", "501 5.5.4 ENVID longer than 100 characters", r221},
		},
		{
			name: "message that cannot be mail gets 554 5.6.0",
			in: lines("HELO x", "MAIL FROM:<s@example.com>", "RCPT TO:<r@example.com>", "DATA") +
				data("Subject: a\x00b", "x") +
				lines("MAIL FROM:<s@example.com>", "RCPT TO:<r@example.com>", "DATA") + data("Subject: fine", "x") + lines("QUIT"),
			want: []string{r220, rHello, rMail, rRcpt, r354, "554 5.6.0 NUL byte in the header section", rMail, rRcpt, r354, rQueued, r221},
		},
		{
			name: "EOF on stdin without QUIT",
			in: lines("HELO x", "MAIL FROM:<s@example.com>", "RCPT TO:<r@example.com>", "DATA") +
				data("Subject: s", "x"),
			want: []string{r220, rHello, rMail, rRcpt, r354, rQueued},
		},
		{
			name: "EOF in the middle of DATA queues nothing",
			in: lines("HELO x", "MAIL FROM:<s@example.com>", "RCPT TO:<r@example.com>", "DATA") +
				"Subject: cut\r\n\r\nhalf a mess",
			want: []string{r220, rHello, rMail, rRcpt, r354, "451 4.3.0 "},
		},
		{
			name: "bare LF line ends, as from printf or a terminal",
			in: strings.ReplaceAll(lines("HELO x", "MAIL FROM:<s@example.com>", "RCPT TO:<r@example.com>", "DATA")+
				data("Subject: lf", "..x", "y")+lines("QUIT"), "\r\n", "\n"),
			want: []string{r220, rHello, rMail, rRcpt, r354, rQueued, r221},
			check: func(t *testing.T, q []queued) {
				if b := body(q[0].msg); b != ".x\r\ny\r\n" {
					t.Errorf("body %q", b)
				}
			},
		},
		{
			name: "long line in a message is accepted",
			in: lines("HELO x", "MAIL FROM:<s@example.com>", "RCPT TO:<r@example.com>", "DATA") +
				data("Subject: long", strings.Repeat("y", 200000)) + lines("QUIT"),
			want: []string{r220, rHello, rMail, rRcpt, r354, rQueued, r221},
			check: func(t *testing.T, q []queued) {
				if !q[0].env.LongLines || body(q[0].msg) != strings.Repeat("y", 200000)+"\r\n" {
					t.Errorf("long line lost (LongLines %v, body %d bytes)", q[0].env.LongLines, len(body(q[0].msg)))
				}
			},
		},
		{
			name: "overlong command line ends the session",
			in:   lines("HELO x", "NOOP "+strings.Repeat("z", 100000), "NOOP"),
			want: []string{r220, rHello, "500 5.4.0 Too long line, closing connection"},
		},
		{
			name: "commands after QUIT are not served",
			in: lines("HELO x", "MAIL FROM:<s@example.com>", "RCPT TO:<r@example.com>", "QUIT", "DATA") +
				data("Subject: s", "x"),
			want: []string{r220, rHello, rMail, rRcpt, r221},
		},
		{
			name: "a new session after QUIT queues nothing",
			in: lines("HELO x", "QUIT", "HELO y", "MAIL FROM:<s@example.com>", "RCPT TO:<r@example.com>", "DATA") +
				data("Subject: s", "x"),
			want: []string{r220, rHello, r221},
		},
		{
			name: "BDAT is refused, its chunk skipped, and the session goes on",
			in: lines("EHLO x", "MAIL FROM:<s@example.com>", "RCPT TO:<r@example.com>") +
				"BDAT 16\r\nSubject: chunk\r\n" +
				lines("MAIL FROM:<s@example.com>", "RCPT TO:<r@example.com>", "BDAT 8 LAST") + "\r\nbody\r\n" +
				lines("MAIL FROM:<s@example.com>", "RCPT TO:<r@example.com>", "DATA") + data("Subject: s", "x") + lines("QUIT"),
			want: []string{r220, "250 LIMITS", rMail, rRcpt, "502 5.5.1 BDAT is not offered; use DATA",
				rMail, rRcpt, "502 5.5.1 BDAT", rMail, rRcpt, r354, rQueued, r221},
		},
		{
			// go-smtp v0.25.1 would take the short chunk as complete.
			name: "BDAT cut short by EOF queues nothing",
			in: lines("EHLO x", "MAIL FROM:<s@example.com>", "RCPT TO:<r@example.com>") +
				"BDAT 100 LAST\r\nSubject: short\r\n\r\nbody\r\n",
			want: []string{r220, "250 LIMITS", rMail, rRcpt, "502 5.5.1 BDAT"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			max := tt.maxSize
			if max == 0 {
				max = 1 << 20
			}
			f := newFixture(t, tt.aliases, max)
			r := f.run(t, tt.in)
			if (r.err != nil) != tt.wantErr {
				t.Errorf("Serve error %v", r.err)
			}
			checkReplies(t, r.out, tt.want)
			ids := queuedIDs(r.out)
			if r.n != len(ids) {
				t.Errorf("Serve returned %d, replies name %d queued messages", r.n, len(ids))
			}
			q := f.inOrder(t, ids)
			for i, m := range q {
				if m.env.ID != ids[i] {
					t.Errorf("queue file %s holds ID %s", ids[i], m.env.ID)
				}
			}
			f.checkTmpEmpty(t)
			// go-smtp recovers panics and logs them. One is expected:
			// commands it had read ahead of QUIT are handled after
			// the session is gone, and DATA then dereferences the nil
			// session (in go-smtp's own code). A panic in this
			// package would show its frames in the stack.
			if strings.Contains(r.log, "internal/bsmtp") {
				t.Errorf("panic in bsmtp: %s", r.log)
			}
			if tt.check != nil && !t.Failed() {
				tt.check(t, q)
			}
			if t.Failed() {
				t.Logf("input:\n%s\noutput:\n%s", clip(tt.in), r.out)
			}
		})
	}
}

func clip(s string) string {
	if len(s) > 2000 {
		return s[:2000] + "..."
	}
	return s
}

func TestEHLOCapabilities(t *testing.T) {
	f := newFixture(t, nil, 12345)
	r := f.run(t, lines("EHLO client.example", "QUIT"))
	rs := replies(r.out)
	if len(rs) != 3 {
		t.Fatalf("replies %q", rs)
	}
	ehlo := rs[1]
	if ehlo[0] != "250-Hello client.example" {
		t.Errorf("first EHLO line %q", ehlo[0])
	}
	caps := map[string]bool{}
	for _, l := range ehlo[1:] {
		caps[l[4:]] = true
	}
	for _, c := range []string{"PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8", "DSN", "SIZE 12345"} {
		if !caps[c] {
			t.Errorf("EHLO lacks %s: %q", c, ehlo)
		}
	}
	// No AUTH, no STARTTLS; no CHUNKING, since BDAT is refused.
	for c := range caps {
		if strings.HasPrefix(c, "AUTH") || c == "STARTTLS" || c == "CHUNKING" {
			t.Errorf("EHLO offers %s", c)
		}
	}
	r = f.run(t, lines("EHLO x", "AUTH PLAIN AGVtAGU=", "STARTTLS", "QUIT"))
	checkReplies(t, r.out, []string{r220, "250 LIMITS", "523 5.7.10 TLS is required", "502 5.5.1 TLS not supported", r221})
}

// TestSymfonyDialogue replays what Symfony Mailer's SmtpTransport does
// over sendmail -bs, waiting for each reply, and checks every reply byte
// for byte.
func TestSymfonyDialogue(t *testing.T) {
	f := newFixture(t, nil, 1<<20)
	c := f.dial(t)
	if r := c.reply(); r != "220 test.example ESMTP Service Ready\r\n" {
		t.Fatalf("greeting %q", r)
	}
	c.cmd("HELO [127.0.0.1]\r\n", `250 2\.0\.0 Hello \[127\.0\.0\.1\]\r\n`)
	// Symfony's message: no final CRLF (it sends "\r\n.\r\n"), and
	// every "\r\n." stuffed to "\r\n..".
	symfonyData := func(m string) string { return strings.ReplaceAll(m, "\r\n.", "\r\n..") }
	msgs := []string{
		"From: app@example.com\r\nTo: user@example.org\r\nSubject: First\r\nMessage-ID: <m1@example.com>\r\n" +
			"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n" +
			"Hello,\r\n.a line with a dot\r\n..two dots\r\n.\r\nend",
		"From: app@example.com\r\nTo: other@example.org\r\nSubject: Second\r\nMessage-ID: <m2@example.com>\r\n\r\nSecond body\r\n",
	}
	rcpts := []string{"user@example.org", "other@example.org"}
	var ids []string
	for i, m := range msgs {
		if i == 1 {
			c.cmd("NOOP\r\n", `250 2\.0\.0 I have successfully done nothing\r\n`)
		}
		c.cmd("MAIL FROM:<app@example.com>\r\n", `250 2\.0\.0 Roger, accepting mail from <app@example\.com>\r\n`)
		c.cmd("RCPT TO:<"+rcpts[i]+">\r\n", `250 2\.0\.0 I'll make sure <`+strings.ReplaceAll(rcpts[i], ".", `\.`)+`> gets this\r\n`)
		c.cmd("DATA\r\n", `354 Go ahead\. End your data with <CR><LF>\.<CR><LF>\r\n`)
		c.send(symfonyData(m))
		r := c.cmd("\r\n.\r\n", `250 2\.0\.0 Ok: queued as [0-9A-Z]{16}\r\n`)
		ids = append(ids, strings.TrimSuffix(r[len("250 2.0.0 Ok: queued as "):], "\r\n"))
	}
	// After a failed transaction Symfony sends RSET.
	c.cmd("MAIL FROM:<app@example.com>\r\n", `250 .*\r\n`)
	c.cmd("RCPT TO:<bad@b;c>\r\n", `553 5\.1\.3 .*\r\n`)
	c.cmd("RSET\r\n", `250 2\.0\.0 Session reset\r\n`)
	c.cmd("QUIT\r\n", `221 2\.0\.0 Bye\r\n`)
	// Serve returns after QUIT without waiting for stdin to close.
	select {
	case r := <-c.done:
		if r.n != 2 || r.err != nil {
			t.Errorf("Serve returned %d, %v", r.n, r.err)
		}
	case <-timeAfter():
		t.Fatal("Serve did not return after QUIT")
	}

	q := f.inOrder(t, ids)
	wantBodies := []string{"Hello,\r\n.a line with a dot\r\n..two dots\r\n.\r\nend\r\n", "Second body\r\n\r\n"}
	for i := range q {
		if b := body(q[i].msg); b != wantBodies[i] {
			t.Errorf("message %d body %q, want %q", i, b, wantBodies[i])
		}
		if id, _ := header(q[i].msg, "Message-ID"); id != fmt.Sprintf("<m%d@example.com>", i+1) {
			t.Errorf("message %d Message-ID %q", i, id)
		}
		if !slices.Equal(q[i].env.Recipients, []string{rcpts[i]}) || q[i].env.Sender != "app@example.com" {
			t.Errorf("message %d envelope %q -> %q", i, q[i].env.Sender, q[i].env.Recipients)
		}
	}
}

// TestSpoolFailure checks that a spool that cannot take the message gets
// a temporary 451 and that the session carries on once it can.
func TestSpoolFailure(t *testing.T) {
	f := newFixture(t, nil, 1<<20)
	tmp := filepath.Join(f.dir, spool.TmpDir)
	if err := os.Remove(tmp); err != nil {
		t.Fatal(err)
	}
	c := f.dial(t)
	c.reply()
	c.cmd("EHLO x\r\n", `(?s)250-Hello x\r\n.*`)
	c.cmd("MAIL FROM:<s@example.com>\r\n", `250 .*\r\n`)
	c.cmd("RCPT TO:<r@example.com>\r\n", `250 .*\r\n`)
	c.cmd("DATA\r\n", `354 .*\r\n`)
	c.cmd(data("Subject: s", "x"), `451 4\.3\.0 Error: queue file write error: .*\r\n`)
	if err := os.Mkdir(tmp, 0o700); err != nil {
		t.Fatal(err)
	}
	c.cmd("RSET\r\n", `250 2\.0\.0 Session reset\r\n`)
	c.cmd("MAIL FROM:<s@example.com>\r\n", `250 .*\r\n`)
	c.cmd("RCPT TO:<r@example.com>\r\n", `250 .*\r\n`)
	c.cmd("DATA\r\n", `354 .*\r\n`)
	c.cmd(data("Subject: s", "x"), `250 2\.0\.0 Ok: queued as .*\r\n`)
	r := c.wait()
	if r.n != 1 || r.err != nil {
		t.Errorf("Serve returned %d, %v", r.n, r.err)
	}
}

// TestHugeData sends a message far over the limit as a stream and checks
// that it is refused with 552, that nothing is left in the spool, and
// that the session is still in step afterwards.
func TestHugeData(t *testing.T) {
	const limit = 64 << 10
	f := newFixture(t, nil, limit)
	c := f.dial(t)
	c.reply()
	c.cmd("HELO x\r\n", `250 .*\r\n`)
	c.cmd("MAIL FROM:<s@example.com>\r\n", `250 .*\r\n`)
	c.cmd("RCPT TO:<r@example.com>\r\n", `250 .*\r\n`)
	c.cmd("DATA\r\n", `354 .*\r\n`)
	line := strings.Repeat("x", 1000) + "\r\n"
	c.send("Subject: huge\r\n\r\n")
	for range 20000 { // 20 MB
		c.send(line)
	}
	c.cmd(".\r\n", fmt.Sprintf(`552 5\.3\.4 message exceeds the size limit of %d bytes\r\n`, limit))
	for _, d := range []string{spool.TmpDir, spool.IncomingDir} {
		if n := dirNames(t, filepath.Join(f.dir, d)); len(n) != 0 {
			t.Errorf("%s/ holds %q", d, n)
		}
	}
	c.cmd("NOOP\r\n", `250 .*\r\n`)
	c.cmd("QUIT\r\n", `221 .*\r\n`)
	if r := c.wait(); r.n != 0 || r.err != nil {
		t.Errorf("Serve returned %d, %v", r.n, r.err)
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("disk on fire") }

type errReader struct {
	data string
	err  error
}

func (r *errReader) Read(p []byte) (int, error) {
	if r.data == "" {
		return 0, r.err
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	return n, nil
}

func TestIOErrors(t *testing.T) {
	t.Run("write error", func(t *testing.T) {
		f := newFixture(t, nil, 1<<20)
		// Standard input never delivers anything: Serve must not
		// wait for it once it cannot answer.
		inR, inW := io.Pipe()
		defer inW.Close()
		done := make(chan result, 1)
		go func() {
			n, err := Serve(f.env, f.cfg, inR, failWriter{})
			done <- result{n: n, err: err}
		}()
		select {
		case r := <-done:
			if r.err == nil || !strings.Contains(r.err.Error(), "disk on fire") {
				t.Errorf("Serve returned %d, %v", r.n, r.err)
			}
		case <-timeAfter():
			t.Fatal("Serve did not return after a write error")
		}
	})
	t.Run("broken pipe", func(t *testing.T) {
		f := newFixture(t, nil, 1<<20)
		pr, pw, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		pr.Close()
		defer pw.Close()
		_, err = Serve(f.env, f.cfg, strings.NewReader(lines("HELO x", "QUIT")), pw)
		if err == nil || !strings.Contains(err.Error(), "broken pipe") {
			t.Errorf("Serve returned %v", err)
		}
	})
	t.Run("read error", func(t *testing.T) {
		f := newFixture(t, nil, 1<<20)
		// go-smtp's default error log is os.Stderr, captured when the
		// server is made: redirect it to see that nothing is written.
		stderr, err := os.CreateTemp(t.TempDir(), "stderr")
		if err != nil {
			t.Fatal(err)
		}
		saved := os.Stderr
		os.Stderr = stderr
		var out strings.Builder
		n, serr := Serve(f.env, f.cfg, &errReader{
			data: lines("HELO x", "BOGU", "MAIL FROM:<s@example.com>", "RCPT TO:<r@example.com>", "DATA") + data("Subject: s", "x") +
				lines("MAIL FROM:<s@example.com>", "RCPT TO:<r@example.com>", "DATA") + "Subject: cut\r\n",
			err: errors.New("EIO"),
		}, &out)
		os.Stderr = saved
		if n != 1 || serr == nil || !strings.Contains(serr.Error(), "EIO") {
			t.Errorf("Serve returned %d, %v", n, serr)
		}
		checkReplies(t, out.String(), []string{r220, rHello, "500", rMail, rRcpt, r354, rQueued, rMail, rRcpt, r354, "451 4.3.0 ", "421 4.4.0 Connection error"})
		if b, _ := os.ReadFile(stderr.Name()); len(b) != 0 {
			t.Errorf("stderr: %q", b)
		}
		f.checkTmpEmpty(t)
	})
}
