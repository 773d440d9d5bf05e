package conform

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"errors"
	"io"
	"mime/quotedprintable"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/emersion/go-message"
)

// tcopy runs Copy with the Facts Scan finds.
func tcopy(t testing.TB, in []byte) []byte {
	t.Helper()
	f, err := Scan(bytes.NewReader(in))
	if err != nil {
		t.Fatalf("scanning: %v", err)
	}
	return tcopyFacts(t, in, f)
}

func tcopyFacts(t testing.TB, in []byte, f Facts) []byte {
	t.Helper()
	var out bytes.Buffer
	n, err := Copy(&out, bytes.NewReader(in), f)
	if err != nil {
		t.Fatalf("copying: %v", err)
	}
	if n != int64(out.Len()) {
		t.Fatalf("Copy returned %d, wrote %d", n, out.Len())
	}
	return out.Bytes()
}

// crlfs turns "\n" into "\r\n", to keep test messages readable.
func crlfs(s string) string { return strings.ReplaceAll(s, "\n", "\r\n") }

// checkOutput checks what every output must satisfy: CRLF lines only, no
// NUL, no line over MaxLineLen except a header line with nowhere to fold,
// and Copy of the output is the output.
func checkOutput(t testing.TB, out []byte) {
	t.Helper()
	if len(out) > 0 && !bytes.HasSuffix(out, crlf) {
		t.Errorf("output does not end with CRLF: %q", tail(out))
	}
	if bytes.IndexByte(out, 0) >= 0 {
		t.Errorf("output has NUL")
	}
	for i, line := range bytes.SplitAfter(out, []byte("\n")) {
		l := trimEOL(line)
		if bytes.IndexByte(l, '\r') >= 0 || (len(line) > 0 && line[len(line)-1] == '\n' && !bytes.HasSuffix(line, crlf)) {
			t.Errorf("line %d has a bare CR or LF: %q", i+1, trunc(line))
		}
		if len(l) > MaxLineLen && canFold(l) {
			t.Errorf("line %d has %d octets: %q", i+1, len(l), trunc(line))
		}
	}
	if again := tcopy(t, out); !bytes.Equal(again, out) {
		t.Errorf("Copy is not idempotent:\nfirst:  %q\nsecond: %q", trunc(out), trunc(again))
	}
}

func trunc(b []byte) string {
	if len(b) > 300 {
		return string(b[:150]) + "..." + string(b[len(b)-150:])
	}
	return string(b)
}

func tail(b []byte) []byte {
	if len(b) > 20 {
		return b[len(b)-20:]
	}
	return b
}

// A leaf is what a reader sees of a leaf entity: its media type and its
// decoded body.
type leaf struct {
	mediaType string
	body      string
}

// view decodes a message with go-message, following multiparts and
// message/rfc822 parts.
func view(t testing.TB, msg []byte) []leaf {
	t.Helper()
	e, err := message.Read(bytes.NewReader(msg))
	if err != nil && !message.IsUnknownCharset(err) {
		t.Fatalf("reading message: %v", err)
	}
	var leaves []leaf
	var walk func(e *message.Entity, digest bool)
	walk = func(e *message.Entity, digest bool) {
		mt, params, _ := e.Header.ContentType()
		if !e.Header.Has("Content-Type") && digest {
			mt = "message/rfc822"
		}
		if mr := e.MultipartReader(); mr != nil {
			for {
				p, err := mr.NextPart()
				if err == io.EOF {
					return
				}
				if err != nil && !message.IsUnknownCharset(err) {
					t.Fatalf("reading part: %v", err)
				}
				walk(p, params["boundary"] != "" && mt == "multipart/digest")
			}
		}
		body, err := io.ReadAll(e.Body)
		if err != nil {
			t.Fatalf("reading body: %v", err)
		}
		if mt == "message/rfc822" {
			inner, err := message.Read(bytes.NewReader(body))
			if err != nil && !message.IsUnknownCharset(err) {
				t.Fatalf("reading embedded message: %v", err)
			}
			walk(inner, false)
			return
		}
		leaves = append(leaves, leaf{mt, string(body)})
	}
	walk(e, false)
	return leaves
}

func checkView(t testing.TB, in, out []byte) {
	t.Helper()
	want, got := view(t, in), view(t, out)
	if len(want) != len(got) {
		t.Fatalf("%d leaves in the output, want %d", len(got), len(want))
	}
	for i := range want {
		if want[i].mediaType != "" && got[i].mediaType != want[i].mediaType {
			t.Errorf("leaf %d: media type %q, want %q", i, got[i].mediaType, want[i].mediaType)
		}
		if got[i].body != want[i].body {
			t.Errorf("leaf %d: decoded body differs:\n got %q\nwant %q", i, trunc([]byte(got[i].body)), trunc([]byte(want[i].body)))
		}
	}
}

func TestScan(t *testing.T) {
	long := strings.Repeat("x", 999)
	tests := []struct {
		in   string
		want Facts
	}{
		{"", Facts{UTF8: true}},
		{"a\r\nb\r\n", Facts{UTF8: true}},
		{"a\r\nb", Facts{UTF8: true}},
		{"a\rb\r\n", Facts{BareCR: true, UTF8: true}},
		{"a\r\r\n", Facts{BareCR: true, UTF8: true}},
		{"a\r", Facts{BareCR: true, UTF8: true}},
		{"a\nb\r\n", Facts{BareLF: true, UTF8: true}},
		{"a\x00\r\n", Facts{NUL: true, UTF8: true}},
		{"caf\xc3\xa9\r\n", Facts{EightBit: true, UTF8: true}},
		{"caf\xe9\r\n", Facts{EightBit: true}},
		{"caf\xc3", Facts{EightBit: true}},
		{strings.Repeat("x", 998) + "\r\n", Facts{UTF8: true}},
		{long + "\r\n", Facts{LongLines: true, UTF8: true}},
		{long, Facts{LongLines: true, UTF8: true}},
		{"a\r\n" + long + "\n", Facts{LongLines: true, BareLF: true, UTF8: true}},
	}
	for _, tt := range tests {
		got, err := Scan(strings.NewReader(tt.in))
		if err != nil {
			t.Fatal(err)
		}
		if got != tt.want {
			t.Errorf("Scan(%q) = %+v, want %+v", trunc([]byte(tt.in)), got, tt.want)
		}
	}
}

// TestScannerSplit checks that Scanner gives the same Facts whatever way
// the input is cut into writes, a UTF-8 sequence or a CRLF included.
func TestScannerSplit(t *testing.T) {
	inputs := []string{
		"a\r\nb\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\r\n",
		"a\rb\r\n\xe2\x82",
		"\xe2\x82\xe2\x82\xac\r\n",
		"a\r\n" + strings.Repeat("y", 998) + "\r\n" + strings.Repeat("z", 999) + "\r",
	}
	for _, in := range inputs {
		want, _ := Scan(strings.NewReader(in))
		if len(in) > 100 {
			// Cut around the line ends only.
			for _, i := range []int{3, 4, 1001, 1002, 1003, len(in) - 1} {
				var s Scanner
				s.Write([]byte(in[:i]))
				s.Write([]byte(in[i:]))
				if got := s.Facts(); got != want {
					t.Fatalf("cut at %d: %+v, want %+v", i, got, want)
				}
			}
			continue
		}
		for i := 0; i <= len(in); i++ {
			for j := i; j <= len(in); j++ {
				var s Scanner
				s.Write([]byte(in[:i]))
				s.Write([]byte(in[i:j]))
				s.Write([]byte(in[j:]))
				if got := s.Facts(); got != want {
					t.Fatalf("%q cut at %d and %d: %+v, want %+v", in, i, j, got, want)
				}
			}
		}
	}
}

func TestCopyExact(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"plain", "Subject: x\r\n\r\nhello\r\n", "Subject: x\r\n\r\nhello\r\n"},
		{"empty", "", ""},
		{"no final newline", "Subject: x\r\n\r\nhello", "Subject: x\r\n\r\nhello\r\n"},
		{"final bare CR", "Subject: x\r\n\r\nhello\r", "Subject: x\r\n\r\nhello\r\n"},
		{"bare CR in body", "Subject: x\r\n\r\n10%\r20%\r30%\r\n", "Subject: x\r\n\r\n10%\r\n20%\r\n30%\r\n"},
		{"bare CRs in a row", "Subject: x\r\n\r\na\r\rb\r\r\n", "Subject: x\r\n\r\na\r\n\r\nb\r\n\r\n"},
		{"bare CR in header", "Subject: a\rBcc: x@example.com\r\nTo: y\r\r\n\r\nhi\rthere\r\n",
			"Subject: a Bcc: x@example.com\r\nTo: y \r\n\r\nhi\r\nthere\r\n"},
		{"bare CR in header at the end", "Subject: a\r", "Subject: a \r\n"},
		{"bare CR smuggling", "Subject: x\r\n\r\nhi\r.\rMAIL FROM:<a@b>\r\n", "Subject: x\r\n\r\nhi\r\n.\r\nMAIL FROM:<a@b>\r\n"},
		{"bare LF", "Subject: x\nTo: y\r\n\nline\nline\r\n", "Subject: x\r\nTo: y\r\n\r\nline\r\nline\r\n"},
		{"bare LF ends the header", "Subject: x\n\na\rb\n", "Subject: x\r\n\r\na\r\nb\r\n"},
		{"NUL", "Subj\x00ect: x\r\n\r\nhel\x00lo\x00\r\n", "Subject: x\r\n\r\nhello\r\n"},
		{"only NUL", "\x00\x00", ""},
		{"8-bit needs nothing", "Subject: x\r\n\r\ncaf\xe9\r\n", "Subject: x\r\n\r\ncaf\xe9\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := tcopy(t, []byte(tt.in))
			if string(out) != tt.want {
				t.Errorf("got  %q\nwant %q", out, tt.want)
			}
			checkOutput(t, out)
		})
	}
}

// longText returns a line of n octets of text, with spaces.
func longText(n int) string {
	var b strings.Builder
	for i := 0; b.Len() < n; i++ {
		b.WriteString("word")
		b.WriteByte(byte('0' + i%10))
		b.WriteByte(' ')
	}
	return b.String()[:n]
}

func TestCopyLongLines(t *testing.T) {
	long := longText(2000)
	longUTF8 := strings.Repeat("Grüße, ", 300)
	longLatin1 := strings.Repeat("Gr\xfc\xdfe, ", 300)
	binary := strings.Repeat("\x01\x02\xff\xfe abc", 200)
	b64 := base64.StdEncoding.EncodeToString([]byte(strings.Repeat("data", 600)))
	var qpBuf bytes.Buffer
	qw := quotedprintable.NewWriter(&qpBuf)
	qw.Write([]byte(strings.Repeat("Grüße, ", 200)))
	qw.Close()
	qpLong := strings.ReplaceAll(qpBuf.String(), "=\r\n", "") // one long QP line

	tests := []struct {
		name string
		in   string
		// has and hasNot are substrings the output must and must not have.
		has, hasNot []string
	}{
		{
			name: "non-MIME 7-bit",
			in:   "From: a@example.com\nSubject: cron\n\nshort\n" + long + "\nend\n",
			has: []string{"Subject: cron\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n" +
				"Content-Transfer-Encoding: quoted-printable\r\n\r\nshort\r\n"},
		},
		{
			name: "non-MIME UTF-8",
			in:   "Subject: cron\n\n" + longUTF8 + "\n",
			has:  []string{"Content-Type: text/plain; charset=utf-8\r\n", "Gr=C3=BC=C3=9Fe"},
		},
		{
			name: "non-MIME 8-bit not UTF-8",
			in:   "Subject: cron\n\n" + longLatin1 + "\n",
			has:  []string{"Content-Type: text/plain; charset=unknown-8bit\r\n", "Gr=FC=DFe"},
		},
		{
			name: "Content-Type without MIME-Version",
			in:   "Subject: x\nContent-Type: text/plain; charset=iso-8859-1\n\n" + longLatin1 + "\n",
			has: []string{"Content-Type: text/plain; charset=iso-8859-1\r\nMIME-Version: 1.0\r\n" +
				"Content-Transfer-Encoding: quoted-printable\r\n\r\n"},
			hasNot: []string{"unknown-8bit"},
		},
		{
			name: "single part 8bit, CTE replaced in place",
			in: "MIME-Version: 1.0\nContent-Transfer-Encoding: 8bit\nSubject: x\n" +
				"Content-Type: text/plain; charset=utf-8\n\n" + longUTF8 + "\n",
			has: []string{"MIME-Version: 1.0\r\nContent-Transfer-Encoding: quoted-printable\r\nSubject: x\r\n" +
				"Content-Type: text/plain; charset=utf-8\r\n\r\n"},
			hasNot: []string{"8bit"},
		},
		{
			name:   "single part 7bit with two CTE fields",
			in:     "MIME-Version: 1.0\nContent-Type: text/html\ncontent-transfer-encoding : 7bit\nX: y\nContent-Transfer-Encoding: binary\n\n<p>" + long + "</p>\n",
			has:    []string{"Content-Type: text/html\r\nContent-Transfer-Encoding: quoted-printable\r\nX: y\r\n\r\n<p>word0"},
			hasNot: []string{"7bit", "binary"},
		},
		{
			name: "single part without CTE",
			in:   "MIME-Version: 1.0\nContent-Type: text/plain; charset=us-ascii\n\n" + long + "\n",
			has:  []string{"charset=us-ascii\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"},
		},
		{
			name: "multipart, only the long part changes",
			in: "MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"b1\"\n\n" +
				"This is the preamble.\n" +
				"--b1\nContent-Type: text/plain\n\nshort part\n" +
				"--b1\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n" + longUTF8 + "\n" +
				"--b1--  \nThe epilogue.\n",
			has: []string{"\r\n\r\nThis is the preamble.\r\n--b1\r\nContent-Type: text/plain\r\n\r\nshort part\r\n--b1\r\n",
				"Content-Transfer-Encoding: quoted-printable\r\n\r\nGr=C3=BC",
				"\r\n--b1--  \r\nThe epilogue.\r\n"},
		},
		{
			name: "binary leaf is base64",
			in: "MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=b\n\n" +
				"--b\nContent-Type: application/octet-stream\nContent-Transfer-Encoding: 8bit\n\n" + binary + "\n--b--\n",
			has: []string{"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"},
		},
		{
			name: "base64 part left alone",
			in: "MIME-Version: 1.0\nContent-Type: application/pdf\nContent-Transfer-Encoding: base64\n\n" +
				b64[:76] + "\n" + b64[76:152] + "\n\n",
			has: []string{"\r\n\r\n" + b64[:76] + "\r\n" + b64[76:152] + "\r\n\r\n"},
		},
		{
			name: "base64 part with a long line re-wrapped",
			in: "MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=b\n\n" +
				"--b\nContent-Type: application/pdf\nContent-Transfer-Encoding: base64\n\n" + b64 + "\n--b--\n",
			has: []string{"Content-Transfer-Encoding: base64\r\n\r\n" + b64[:76] + "\r\n" + b64[76:152] + "\r\n"},
		},
		{
			name: "QP part with a long line re-wrapped",
			in:   "MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n\n" + qpLong + "\n",
			has:  []string{"Content-Transfer-Encoding: quoted-printable\r\n\r\nGr=C3=BC"},
		},
		{
			name: "nested multipart and message/rfc822",
			in: "MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=outer\n\n" +
				"--outer\nContent-Type: multipart/alternative; boundary=inner\n\n" +
				"--inner\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n" + longUTF8 + "\n" +
				"--inner\nContent-Type: text/html; charset=utf-8\n\n<p>short</p>\n" +
				"--inner--\n" +
				"--outer\nContent-Type: message/rfc822\n\nFrom: x@example.com\nSubject: inner\n\n" + long + "\n" +
				"--outer--\n",
			has: []string{"--inner\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>short</p>\r\n--inner--\r\n",
				"Subject: inner\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nword0"},
		},
		{
			name: "multipart/digest parts are messages",
			in: "MIME-Version: 1.0\nContent-Type: multipart/digest; boundary=d\n\n" +
				"--d\n\nSubject: one\n\n" + long + "\n--d--\n",
			has: []string{"--d\r\n\r\nSubject: one\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n"},
		},
		{
			name: "long part header line folded, unfoldable top-level line kept",
			in: "References: <" + strings.Repeat("r", 1100) + "@example.com>\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=b\n\n" +
				"--b\nContent-Type: text/plain;\n X-Long: " + long + "\n\nshort\n--b--\n",
			has: []string{"References: <" + strings.Repeat("r", 1100) + "@example.com>\r\n",
				"\r\n--b\r\nContent-Type: text/plain;\r\n X-Long: word0", "word0\r\n word1 word2 wo\r\n", "\r\n\r\nshort\r\n--b--\r\n"},
		},
		{
			name:   "unknown transfer encoding split like Postfix",
			in:     "MIME-Version: 1.0\nContent-Type: text/plain\nContent-Transfer-Encoding: x-foo\n\n" + strings.Repeat("z", 2100) + "\n",
			has:    []string{"\r\n\r\n" + strings.Repeat("z", 998) + "\r\n " + strings.Repeat("z", 997) + "\r\n " + strings.Repeat("z", 105) + "\r\n"},
			hasNot: []string{"quoted-printable"},
		},
		{
			name: "long preamble split, part untouched",
			in: "MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=b\n\n" + strings.Repeat("p", 1000) + "\n" +
				"--b\nContent-Type: text/plain\n\nshort\n--b--\n",
			has:    []string{"\r\n\r\n" + strings.Repeat("p", 998) + "\r\n pp\r\n--b\r\nContent-Type: text/plain\r\n\r\nshort\r\n--b--\r\n"},
			hasNot: []string{"quoted-printable"},
		},
		{
			name:   "only the header is long",
			in:     "Subject: x\nReferences: <" + strings.Repeat("r", 1100) + ">\n\nbody\n",
			has:    []string{"\r\n\r\nbody\r\n"},
			hasNot: []string{"MIME-Version"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := []byte(crlfs(tt.in))
			out := tcopy(t, in)
			for _, s := range tt.has {
				if !bytes.Contains(out, []byte(s)) {
					t.Errorf("output lacks %q\noutput: %q", trunc([]byte(s)), trunc(out))
				}
			}
			for _, s := range tt.hasNot {
				if bytes.Contains(out, []byte(s)) {
					t.Errorf("output has %q", s)
				}
			}
			checkOutput(t, out)
			if !strings.Contains(tt.name, "unknown transfer") {
				checkView(t, in, out)
			}
			// Over-claiming Facts changes nothing.
			f, _ := Scan(bytes.NewReader(in))
			all := Facts{LongLines: true, BareCR: true, BareLF: true, NUL: true, EightBit: f.EightBit, UTF8: f.UTF8}
			if again := tcopyFacts(t, in, all); !bytes.Equal(again, out) {
				t.Errorf("output depends on Facts beyond the charset")
			}
			// Deterministic.
			if again := tcopy(t, in); !bytes.Equal(again, out) {
				t.Errorf("Copy is not deterministic")
			}
		})
	}
}

// TestQPBoundaryGuard checks that quoted-printable output never makes a line
// that is a delimiter of the enclosing multipart.
func TestQPBoundaryGuard(t *testing.T) {
	for n := 0; n < 80; n++ {
		line := strings.Repeat("a", 1000+n) + "--b"
		in := []byte(crlfs("MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=b\n\n" +
			"--b\nContent-Type: text/plain\n\n" + line + "\n--b\nContent-Type: text/plain\n\n" + line + "--\n--b--\n"))
		out := tcopy(t, in)
		checkOutput(t, out)
		checkView(t, in, out)
		if c := bytes.Count(out, []byte("\r\n--b")); c != 3 {
			t.Fatalf("n=%d: %d delimiters, want 3:\n%s", n, c, out)
		}
	}
}

// TestLookaheadLimit checks a leaf longer than the read-ahead: it is
// re-encoded even though its long line comes late, and the decoded view is
// the same.
func TestLookaheadLimit(t *testing.T) {
	var b strings.Builder
	b.WriteString("MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n")
	for b.Len() < maxLookahead+1000 {
		b.WriteString("a short line of text\r\n")
	}
	b.WriteString(longText(3000) + "\r\n--b\r\nContent-Type: application/octet-stream\r\n\r\n")
	for i := 0; i < maxLookahead/10; i++ {
		b.WriteString("binary-ish line \x01\x02\r\n")
	}
	b.WriteString("--b--\r\n")
	in := []byte(b.String())
	out := tcopy(t, in)
	checkOutput(t, out)
	checkView(t, in, out)
	if !bytes.Contains(out, []byte("Content-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n")) {
		t.Errorf("the text part is not re-encoded")
	}
	if !bytes.Contains(out, []byte("Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n")) {
		t.Errorf("the long binary part is not re-encoded")
	}
}

func TestDeepNesting(t *testing.T) {
	var b strings.Builder
	b.WriteString("MIME-Version: 1.0\r\n")
	for i := 0; i < 50; i++ {
		b.WriteString("Content-Type: message/rfc822\r\n\r\n")
	}
	b.WriteString("Subject: deep\r\n\r\n" + longText(3000) + "\r\n")
	out := tcopy(t, []byte(b.String()))
	checkOutput(t, out)
}

// TestSplitReads checks that the output does not depend on how src
// delivers its bytes.
func TestSplitReads(t *testing.T) {
	in := []byte(crlfs("Subject: a\rb\n\nMIME-Version: 1.0\n\n" + strings.Repeat("Grüße\r\x00 ", 400) + "\n"))
	in = append(in, '\r')
	f, _ := Scan(bytes.NewReader(in))
	want := tcopyFacts(t, in, f)
	for _, size := range []int{1, 2, 3, 7, 64} {
		var out bytes.Buffer
		if _, err := Copy(&out, &chunkReader{in, size}, f); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out.Bytes(), want) {
			t.Errorf("reads of %d bytes: output differs", size)
		}
	}
}

type chunkReader struct {
	b []byte
	n int
}

func (r *chunkReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), r.n)], r.b)
	r.b = r.b[n:]
	return n, nil
}

func TestErrors(t *testing.T) {
	errRead := errors.New("read failed")
	src := io.MultiReader(strings.NewReader("Subject: x\r\n\r\n"+longText(2000)), &errReader{errRead})
	if _, err := Copy(io.Discard, src, Facts{LongLines: true}); !errors.Is(err, errRead) {
		t.Errorf("read error: got %v", err)
	}
	errWrite := errors.New("write failed")
	in := strings.NewReader("Subject: x\r\n\r\n" + strings.Repeat(longText(2000)+"\r\n", 100))
	if _, err := Copy(&errWriter{errWrite}, in, Facts{LongLines: true}); !errors.Is(err, errWrite) {
		t.Errorf("write error: got %v", err)
	}
}

type errReader struct{ err error }

func (r *errReader) Read([]byte) (int, error) { return 0, r.err }

type errWriter struct{ err error }

func (w *errWriter) Write([]byte) (int, error) { return 0, w.err }

func TestWriteFolded(t *testing.T) {
	a := func(n int) string { return strings.Repeat("a", n) }
	tests := []struct{ in, want string }{
		{"X: short", "X: short"},
		{a(1200), a(1200)},                 // nowhere to fold
		{"X: " + a(1200), "X: " + a(1200)}, // folding does not help
		{"X: " + a(990) + " " + a(20), "X: " + a(990) + "\r\n " + a(20)},
		{"X: " + a(990) + "  \t" + a(20), "X: " + a(990) + "\r\n  \t" + a(20)},
		{a(500) + " " + a(500) + "    ", a(500) + "\r\n " + a(500) + "    "},
		{a(998) + "     ", a(998) + "     "}, // white space only after
		{"X:" + strings.Repeat(" b", 1000), "X:" + strings.Repeat(" b", 498) + "\r\n" + strings.Repeat(" b", 499) + "\r\n" + strings.Repeat(" b", 3)},
	}
	for _, tt := range tests {
		var b bytes.Buffer
		w := bufio.NewWriter(&b)
		writeFolded(w, []byte(tt.in+"\r\n"))
		w.Flush()
		if got := strings.TrimSuffix(b.String(), "\r\n"); got != tt.want {
			t.Errorf("writeFolded(%q) = %q, want %q", trunc([]byte(tt.in)), trunc([]byte(got)), trunc([]byte(tt.want)))
		}
	}
}

func TestUTF8Charset(t *testing.T) {
	// The UTF-8 check spans read boundaries.
	in := "Subject: x\r\n\r\n" + strings.Repeat("€", 20000) + "\r\n"
	f, _ := Scan(bufio.NewReaderSize(strings.NewReader(in), 16))
	if !f.UTF8 || !f.EightBit || !f.LongLines || !utf8.ValidString(in) {
		t.Fatalf("facts %+v", f)
	}
	out := tcopyFacts(t, []byte(in), f)
	if !bytes.Contains(out, []byte("charset=utf-8")) {
		t.Errorf("charset is not utf-8")
	}
}
