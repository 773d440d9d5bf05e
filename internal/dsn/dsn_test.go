package dsn

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-message"
	"github.com/emersion/go-message/textproto"

	"github.com/postie-mail/postie/internal/conform"
)

func tcheck(t testing.TB, err error, what string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

var (
	arrival = time.Date(2025, 3, 1, 8, 0, 0, 0, time.UTC)
	now     = time.Date(2025, 3, 1, 10, 30, 0, 0, time.UTC)
)

const original = "Received: from localhost by host.example.org\r\n" +
	"From: Cron Daemon <root@host.example.org>\r\n" +
	"To: ops@example.net\r\n" +
	"Subject: Cron <root@host> backup\r\n" +
	"Message-ID: <1@host.example.org>\r\n" +
	"\r\n" +
	"backup done\r\n"

func baseReport() *Report {
	return &Report{
		ReportingMTA: "host.example.org",
		QueueID:      "4F1A2B3C",
		ArrivalDate:  arrival,
		Sender:       "root@host.example.org",
		From:         "MAILER-DAEMON@host.example.org",
		Recipients: []Recipient{{
			Address:    "ops@example.net",
			Action:     "failed",
			Status:     "5.1.1",
			Diagnostic: "smtp; 550 5.1.1 <ops@example.net>: no such user",
			RemoteMTA:  "mx.example.net",
		}},
		EnvID:           "env-42",
		Now:             now,
		MessageIDDomain: "host.example.org",
	}
}

// A parsed notification.
type parsed struct {
	header   message.Header
	parts    []*part
	raw      []byte
	perMsg   textproto.Header
	perRcpts []textproto.Header
}

type part struct {
	mediaType string
	params    map[string]string
	header    message.Header
	body      []byte
}

func write(t *testing.T, rep *Report, orig io.Reader) *parsed {
	t.Helper()
	var b bytes.Buffer
	tcheck(t, Write(&b, rep, orig), "Write")
	return parse(t, b.Bytes())
}

func parse(t *testing.T, raw []byte) *parsed {
	t.Helper()
	checkLines(t, raw)
	e, err := message.Read(bytes.NewReader(raw))
	tcheck(t, err, "reading the notification")
	p := &parsed{header: e.Header, raw: raw}
	mt, params, err := e.Header.ContentType()
	tcheck(t, err, "Content-Type")
	if mt != "multipart/report" || params["report-type"] != "delivery-status" {
		t.Fatalf("Content-Type %s %v", mt, params)
	}
	mr := e.MultipartReader()
	for {
		pe, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		tcheck(t, err, "reading a part")
		pt := &part{header: pe.Header}
		pt.mediaType, pt.params, _ = pe.Header.ContentType()
		pt.body, err = io.ReadAll(pe.Body)
		tcheck(t, err, "reading a part's body")
		p.parts = append(p.parts, pt)
	}
	if len(p.parts) < 2 {
		t.Fatalf("%d parts", len(p.parts))
	}
	if p.parts[0].mediaType != "text/plain" || p.parts[1].mediaType != "message/delivery-status" {
		t.Fatalf("parts %s, %s", p.parts[0].mediaType, p.parts[1].mediaType)
	}
	br := bufio.NewReader(bytes.NewReader(p.parts[1].body))
	p.perMsg, err = textproto.ReadHeader(br)
	tcheck(t, err, "per-message fields")
	for {
		h, err := textproto.ReadHeader(br)
		tcheck(t, err, "per-recipient fields")
		if h.Len() == 0 {
			break
		}
		p.perRcpts = append(p.perRcpts, h)
	}
	return p
}

// checkLines checks that raw is CRLF lines of at most 998 octets, and
// that conform would have nothing to do.
func checkLines(t *testing.T, raw []byte) {
	t.Helper()
	f, err := conform.Scan(bytes.NewReader(raw))
	tcheck(t, err, "scanning")
	if f.NeedsWork() {
		t.Errorf("the notification is not conformant: %+v", f)
	}
	if !bytes.HasSuffix(raw, []byte("\r\n")) {
		t.Errorf("no final CRLF")
	}
}

func wantField(t *testing.T, h interface{ Get(string) string }, k, want string) {
	t.Helper()
	if got := h.Get(k); got != want {
		t.Errorf("%s: %q, want %q", k, got, want)
	}
}

func TestFailedHeaders(t *testing.T) {
	p := write(t, baseReport(), strings.NewReader(original))
	h := p.header
	wantField(t, &h, "From", "Mail Delivery System <MAILER-DAEMON@host.example.org>")
	wantField(t, &h, "To", "<root@host.example.org>")
	wantField(t, &h, "Subject", "Undelivered Mail Returned to Sender")
	wantField(t, &h, "Date", "Sat, 01 Mar 2025 10:30:00 +0000")
	if id := h.Get("Message-Id"); !regexp.MustCompile(`^<20250301103000\.4F1A2B3C\.[0-9a-f]{12}\.bounce@host\.example\.org>$`).MatchString(id) {
		t.Errorf("Message-Id %q", id)
	}
	wantField(t, &h, "Auto-Submitted", "auto-replied")
	wantField(t, &h, "Mime-Version", "1.0")

	if len(p.parts) != 3 {
		t.Fatalf("%d parts, want 3", len(p.parts))
	}
	text := string(p.parts[0].body)
	for _, s := range []string{
		"This is the mail system at host host.example.org.\r\n",
		"I'm sorry to have to inform you that your message could not\r\nbe delivered to one or more recipients. Its header is attached below.\r\n",
		"<ops@example.net>: host mx.example.net said: 550 5.1.1 <ops@example.net>: no\r\n    such user\r\n",
	} {
		if !strings.Contains(text, s) {
			t.Errorf("the text lacks %q:\n%s", s, text)
		}
	}
	if p.parts[0].params["charset"] != "us-ascii" {
		t.Errorf("text charset %q", p.parts[0].params["charset"])
	}

	wantField(t, &p.perMsg, "Reporting-MTA", "dns; host.example.org")
	wantField(t, &p.perMsg, "X-Postie-Queue-ID", "4F1A2B3C")
	wantField(t, &p.perMsg, "X-Postie-Sender", "rfc822; root@host.example.org")
	wantField(t, &p.perMsg, "Original-Envelope-Id", "env-42")
	wantField(t, &p.perMsg, "Arrival-Date", "Sat, 01 Mar 2025 08:00:00 +0000")
	if len(p.perRcpts) != 1 {
		t.Fatalf("%d recipient groups", len(p.perRcpts))
	}
	r := p.perRcpts[0]
	wantField(t, &r, "Final-Recipient", "rfc822; ops@example.net")
	wantField(t, &r, "Action", "failed")
	wantField(t, &r, "Status", "5.1.1")
	wantField(t, &r, "Remote-MTA", "dns; mx.example.net")
	wantField(t, &r, "Diagnostic-Code", "smtp; 550 5.1.1 <ops@example.net>: no such user")

	if p.parts[2].mediaType != "text/rfc822-headers" {
		t.Errorf("third part is %s", p.parts[2].mediaType)
	}
	hdrs := original[:strings.Index(original, "\r\n\r\n")+2]
	if got := string(p.parts[2].body); got != hdrs {
		t.Errorf("returned header section:\n%q\nwant\n%q", got, hdrs)
	}
}

func TestRetFull(t *testing.T) {
	rep := baseReport()
	rep.Ret = "FULL"
	p := write(t, rep, strings.NewReader(original))
	if p.parts[2].mediaType != "message/rfc822" || string(p.parts[2].body) != original {
		t.Errorf("third part %s:\n%q", p.parts[2].mediaType, p.parts[2].body)
	}
	if !strings.Contains(string(p.parts[0].body), "It's attached below.") {
		t.Errorf("text does not say the message is attached")
	}
}

func TestNoOriginal(t *testing.T) {
	p := write(t, baseReport(), nil)
	if len(p.parts) != 2 {
		t.Errorf("%d parts, want 2", len(p.parts))
	}
}

func TestOriginalOddEndings(t *testing.T) {
	for _, tt := range []struct{ name, orig, hdrs, full string }{
		{"header only, no final newline", "Subject: x\r\nFrom: y", "Subject: x\r\nFrom: y\r\n", "Subject: x\r\nFrom: y\r\n"},
		{"empty", "", "\r\n", "\r\n"},
		{"empty header", "\r\nbody\r\n", "\r\n", "\r\nbody\r\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rep := baseReport()
			p := write(t, rep, strings.NewReader(tt.orig))
			if got := string(p.parts[2].body); got != tt.hdrs && !(tt.hdrs == "\r\n" && got == "") {
				t.Errorf("hdrs: %q, want %q", got, tt.hdrs)
			}
			rep.Ret = "full"
			p = write(t, rep, strings.NewReader(tt.orig))
			if got := string(p.parts[2].body); got != tt.full && !(tt.full == "\r\n" && got == "") {
				t.Errorf("full: %q, want %q", got, tt.full)
			}
		})
	}
}

func TestDelayed(t *testing.T) {
	rep := baseReport()
	rep.Recipients = []Recipient{{
		Address: "ops@example.net", Action: "delayed", Status: "4.4.1",
		Diagnostic:  "connect to mx.example.net[192.0.2.1]:25: Connection timed out",
		LastAttempt: now, RetryUntil: arrival.Add(5 * 24 * time.Hour),
	}}
	p := write(t, rep, strings.NewReader(original))
	wantField(t, &p.header, "Subject", "Delayed Mail (still being retried)")
	if id := p.header.Get("Message-Id"); !regexp.MustCompile(`^<20250301103000\.4F1A2B3C\.[0-9a-f]{12}\.delay@host\.example\.org>$`).MatchString(id) {
		t.Errorf("Message-Id %q", id)
	}
	text := string(p.parts[0].body)
	for _, s := range []string{"THIS IS A WARNING ONLY", "for more than 2 hour(s)", "retried until Thu, 06 Mar 2025 08:00:00 +0000",
		"<ops@example.net>: connect to mx.example.net[192.0.2.1]:25: Connection timed\r\n    out (still being retried)"} {
		if !strings.Contains(text, s) {
			t.Errorf("text lacks %q:\n%s", s, text)
		}
	}
	r := p.perRcpts[0]
	wantField(t, &r, "Action", "delayed")
	wantField(t, &r, "Status", "4.4.1")
	wantField(t, &r, "Diagnostic-Code", "X-Postie; connect to mx.example.net[192.0.2.1]:25: Connection timed out")
	wantField(t, &r, "Last-Attempt-Date", "Sat, 01 Mar 2025 10:30:00 +0000")
	wantField(t, &r, "Will-Retry-Until", "Thu, 06 Mar 2025 08:00:00 +0000")
	if r.Has("Remote-MTA") {
		t.Errorf("Remote-MTA without a remote MTA")
	}
	wantField(t, &p.parts[2].header, "Content-Description", "Delayed Message Headers")
}

func TestMixed(t *testing.T) {
	rep := baseReport()
	rep.Recipients = append(rep.Recipients, Recipient{Address: "b@example.net", Action: "Delayed", Status: "4.2.2"},
		Recipient{Address: "c@example.net", Action: "failed", Status: "bogus"})
	rep.Sender = "<root@host.example.org>"
	p := write(t, rep, nil)
	wantField(t, &p.header, "Subject", "Undelivered Mail Returned to Sender")
	wantField(t, &p.header, "To", "<root@host.example.org>")
	if len(p.perRcpts) != 3 {
		t.Fatalf("%d recipient groups", len(p.perRcpts))
	}
	wantField(t, &p.perRcpts[1], "Action", "delayed")
	wantField(t, &p.perRcpts[2], "Status", "5.0.0")
	if p.perRcpts[1].Has("Diagnostic-Code") {
		t.Errorf("Diagnostic-Code without a diagnostic")
	}
}

// TestInjection checks that CR and LF from outside cannot add fields,
// lines or parts.
func TestInjection(t *testing.T) {
	rep := baseReport()
	rep.QueueID = "Q1\r\nX-Evil: 1"
	rep.EnvID = "e\r\n\r\nFinal-Recipient: rfc822; evil@example.com"
	rep.Sender = "root@host.example.org\r\nBcc: evil@example.com"
	rep.Recipients = []Recipient{{
		Address:    "ops@example.net\nAction: delivered",
		Action:     "failed",
		Status:     "5.1.1\r\nStatus: 2.0.0",
		Diagnostic: "smtp; 550 no\r\nAction: delivered\r\n\r\nFinal-Recipient: rfc822; evil@example.com\r\n.\r\n",
		RemoteMTA:  "mx.example.net\r\nRemote-MTA: dns; evil",
	}}
	p := write(t, rep, strings.NewReader(original))
	if p.header.Has("Bcc") || p.header.Has("X-Evil") {
		t.Errorf("a field was injected into the header")
	}
	wantField(t, &p.header, "To", "<root@host.example.org Bcc: evil@example.com>")
	if p.perMsg.Has("X-Evil") || p.perMsg.Has("Final-Recipient") {
		t.Errorf("a field was injected into the per-message fields")
	}
	if len(p.perRcpts) != 1 {
		t.Fatalf("%d recipient groups, want 1", len(p.perRcpts))
	}
	r := p.perRcpts[0]
	for _, k := range []string{"Action", "Status", "Remote-MTA", "Final-Recipient", "Diagnostic-Code"} {
		if n := len(r.Values(k)); n != 1 {
			t.Errorf("%d %s fields", n, k)
		}
	}
	wantField(t, &r, "Action", "failed")
	wantField(t, &r, "Status", "5.0.0")
	wantField(t, &r, "Diagnostic-Code", "smtp; 550 no Action: delivered Final-Recipient: rfc822; evil@example.com .")
	if strings.Contains(string(p.raw), "\r\n.\r\n") {
		t.Errorf("a lone dot line")
	}
}

func TestLongReply(t *testing.T) {
	var reply strings.Builder
	reply.WriteString("smtp; 550-5.7.1 [192.0.2.1] Our system has detected that this message is likely unsolicited mail.")
	for i := 0; reply.Len() < 6000; i++ {
		reply.WriteString(" 550-5.7.1 To reduce the amount of spam sent to this service, please visit https://support.example.com/mail/?p=UnsolicitedMessageError")
	}
	reply.WriteString(" " + strings.Repeat("x", 2000))
	rep := baseReport()
	rep.Recipients = append(rep.Recipients, Recipient{Address: "b@example.net", Action: "failed",
		Diagnostic: "smtp; 550 " + strings.Repeat("y", 3000) + " end"})
	rep.Recipients[0].Diagnostic = reply.String()
	p := write(t, rep, strings.NewReader(original))
	for i, line := range strings.Split(string(p.raw), "\r\n") {
		if len(line) > 998 {
			t.Errorf("line %d has %d octets", i+1, len(line))
		}
	}
	got := p.perRcpts[0].Get("Diagnostic-Code")
	want := clean(reply.String())[:len("smtp; ")+maxDiagnostic]
	if !strings.HasPrefix(got, want) || !strings.HasSuffix(got, " [...]") {
		t.Errorf("Diagnostic-Code:\n%q\nwant it to start with\n%q", got, want)
	}
	got = p.perRcpts[1].Get("Diagnostic-Code")
	if want := "smtp; 550 " + strings.Repeat("y", 3000) + " end"; strings.ReplaceAll(got, " ", "") != strings.ReplaceAll(want, " ", "") {
		t.Errorf("Diagnostic-Code with a long word: %q", got)
	}
	text := string(p.parts[0].body)
	for _, line := range strings.Split(text, "\r\n") {
		if len(line) > 76 && strings.Contains(line, " ") && !strings.Contains(line, "yyyy") {
			t.Errorf("text line of %d octets: %q", len(line), line)
		}
	}
}

func TestNonASCII(t *testing.T) {
	rep := baseReport()
	rep.Recipients[0].Address = "jürgen+x@bücher.example"
	rep.Recipients[0].Diagnostic = "smtp; 550 Benutzer unbekannt: jürgen \xff"
	p := write(t, rep, strings.NewReader(original))
	wantField(t, &p.perRcpts[0], "Final-Recipient", `utf-8; j\x{FC}rgen\x{2B}x@b\x{FC}cher.example`)
	wantField(t, &p.perRcpts[0], "Diagnostic-Code", "smtp; 550 Benutzer unbekannt: j?rgen ?")
	if p.parts[0].params["charset"] != "utf-8" || !strings.Contains(string(p.parts[0].body), "<jürgen+x@bücher.example>") {
		t.Errorf("text part: %v\n%s", p.parts[0].params, p.parts[0].body)
	}
	if bytes.ContainsAny(p.parts[1].body, "\x80\xff") {
		t.Errorf("8-bit in the delivery-status part")
	}
}

func TestErrors(t *testing.T) {
	for name, mod := range map[string]func(*Report){
		"no sender":       func(r *Report) { r.Sender = "" },
		"sender is space": func(r *Report) { r.Sender = " \r\n" },
		"null sender":     func(r *Report) { r.Sender = "<>" },
		"no host":         func(r *Report) { r.ReportingMTA = "" },
		"no recipients":   func(r *Report) { r.Recipients = nil },
		"bad action":      func(r *Report) { r.Recipients[0].Action = "bounced" },
		"no address":      func(r *Report) { r.Recipients[0].Address = "" },
	} {
		rep := baseReport()
		mod(rep)
		var b bytes.Buffer
		if err := Write(&b, rep, strings.NewReader(original)); err == nil {
			t.Errorf("%s: no error", name)
		} else if b.Len() != 0 {
			t.Errorf("%s: wrote %d bytes", name, b.Len())
		}
	}
	errRead := errors.New("spool read failed")
	err := Write(io.Discard, baseReport(), io.MultiReader(strings.NewReader("Subject: x\r\n"), &errReader{errRead}))
	if !errors.Is(err, errRead) {
		t.Errorf("read error: got %v", err)
	}
}

type errReader struct{ err error }

func (r *errReader) Read([]byte) (int, error) { return 0, r.err }

// bigOriginal generates a message of n bytes without holding it.
type bigOriginal struct {
	n, off int
	line   []byte
}

func (b *bigOriginal) Read(p []byte) (int, error) {
	if b.off >= b.n {
		return 0, io.EOF
	}
	if b.off == 0 && len(b.line) == 0 {
		b.line = []byte("Subject: big\r\nFrom: a@example.org\r\n\r\n")
	}
	k := 0
	for k < len(p) && b.off < b.n {
		if len(b.line) == 0 {
			b.line = []byte("0123456789 the quick brown fox jumps over the lazy dog 0123456789\r\n")
		}
		c := copy(p[k:], b.line[:min(len(b.line), b.n-b.off)])
		b.line = b.line[c:]
		k += c
		b.off += c
	}
	return k, nil
}

// TestRetFullLarge streams a 64 MB original through Write and back through
// go-message, and checks that it arrives whole.
func TestRetFullLarge(t *testing.T) {
	const size = 64 << 20
	rep := baseReport()
	rep.Ret = "full"
	pr, pw := io.Pipe()
	go func() {
		pw.CloseWithError(Write(pw, rep, &bigOriginal{n: size - 4}))
	}()
	e, err := message.Read(pr)
	tcheck(t, err, "reading")
	mr := e.MultipartReader()
	var got []byte
	var n int64
	for i := 0; ; i++ {
		pe, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		tcheck(t, err, "next part")
		if i == 2 {
			h := sha256.New()
			n, err = io.Copy(h, pe.Body)
			tcheck(t, err, "reading the original")
			got = h.Sum(nil)
		}
	}
	want := sha256.New()
	io.Copy(want, &bigOriginal{n: size - 4})
	want.Write([]byte("\r\n")) // the original lacked its final line ending
	if n < size-4 || !bytes.Equal(got, want.Sum(nil)) {
		t.Errorf("the returned original (%d bytes) differs", n)
	}
}
