package dkim_test

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net/textproto"
	"os"
	"strings"
	"testing"
)

// Signatures a message should carry, as selector/domain, in the order of
// the config.
var (
	exampleCom   = []string{"rsa/example.com", "ed/example.com"}
	otherExample = []string{"k1/other.example"}
	unsigned     []string
)

// shape is one kind of message submitted through sendmail.
type shape struct {
	name string
	// args for sendmail; nil means -t -i. The recipient is added to them
	// when they do not take recipients from the header (no -t).
	args []string
	// msg is the message given on stdin, made for the envelope recipient
	// to; gen writes it instead, for a large one, streamed to sendmail.
	msg func(to string) string
	gen func(w io.Writer, to string) error
	// sigs are the signatures the message must carry.
	sigs []string
	// check, when set, checks what was sent (the file holds exactly the
	// DATA content).
	check func(t *testing.T, path string)
	// long marks a shape only POSTIE_LONG=1 runs.
	long bool
}

// header is what most shapes start with, with LF line endings as PHP and
// shell scripts hand messages over.
func header(from, to, subject string) string {
	return "From: " + from + "\nTo: " + to + "\nSubject: " + subject + "\n"
}

func crlf(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "\r\n", "\n"), "\n", "\r\n")
}

const utf8Text = "Grüße aus Köln — 日本語のテキスト, naïve café €5\n"

// longLine is a 3000-octet line of words, some of them 8-bit UTF-8.
func longLine() string {
	var b strings.Builder
	for i := 0; b.Len() < 3000; i++ {
		if i%7 == 3 {
			b.WriteString("Grüße ")
		} else {
			fmt.Fprintf(&b, "word%d ", i)
		}
	}
	return b.String()[:3000]
}

// attachment returns n pseudo-random bytes (xorshift32 from seed).
func attachment(n int, seed uint32) []byte {
	b := make([]byte, n)
	x := seed
	for i := range b {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = byte(x)
	}
	return b
}

func base64Lines(data []byte) string {
	enc := base64.StdEncoding.EncodeToString(data)
	var b strings.Builder
	for len(enc) > 76 {
		b.WriteString(enc[:76] + "\n")
		enc = enc[76:]
	}
	b.WriteString(enc + "\n")
	return b.String()
}

var smallAttachment = attachment(64<<10, 88172645)

var shapes = []shape{
	{
		name: "plain ASCII",
		msg: func(to string) string {
			return header("Alice Example <alice@example.com>", to, "plain") + "\nHello Bob.\n\nThis is a plain message.\n"
		},
		sigs:  exampleCom,
		check: bodyIs(crlf("Hello Bob.\n\nThis is a plain message.\n")),
	},
	{
		name: "8-bit UTF-8 body without MIME header fields",
		msg: func(to string) string {
			return header("alice@example.com", to, "8-bit") + "\n" + utf8Text + utf8Text
		},
		sigs:  exampleCom,
		check: bodyIs(crlf(utf8Text + utf8Text)),
	},
	{
		name: "3000-octet line, re-encoded as quoted-printable",
		msg: func(to string) string {
			return header("alice@example.com", to, "long line") + "\nbefore\n" + longLine() + "\nafter\n"
		},
		sigs:  exampleCom,
		check: reencodedQP(crlf("before\n" + longLine() + "\nafter\n")),
	},
	{
		name: "trailing blank lines and trailing spaces",
		msg: func(to string) string {
			return header("alice@example.com", to, "trailing white space") +
				"\nline with trailing spaces   \nline with a trailing tab\t\n \t \n\nlast text line \n\n\n \n\n"
		},
		sigs:  exampleCom,
		check: bodyIs(crlf("line with trailing spaces   \nline with a trailing tab\t\n \t \n\nlast text line \n\n\n \n\n")),
	},
	{
		name: "CRLF and LF mixed",
		msg: func(to string) string {
			return "From: alice@example.com\r\nTo: " + to + "\nSubject: mixed\r\n line endings\n\r\n" +
				"crlf line\r\nlf line\nagain crlf\r\n\nend\n"
		},
		sigs:  exampleCom,
		check: bodyIs("crlf line\r\nlf line\r\nagain crlf\r\n\r\nend\r\n"),
	},
	{
		// Debian cron: sendmail -FCronDaemon -i -B8BITMIME -oem user, a
		// job's output with a progress bar (bare CR) and a NUL.
		name: "cron output with bare CR and NUL",
		args: []string{"-FCronDaemon", "-i", "-B8BITMIME", "-oem"},
		msg: func(to string) string {
			return "From: root@example.com (Cron Daemon)\nTo: " + to + "\nSubject: Cron <root@web1> /usr/local/bin/backup\n" +
				"MIME-Version: 1.0\nContent-Type: text/plain; charset=UTF-8\nContent-Transfer-Encoding: 8bit\n" +
				"X-Cron-Env: <SHELL=/bin/sh>\n\n" +
				"progress: 10%\r20%\r100%\ndone\x00 with a NUL\nend\n"
		},
		sigs:  exampleCom,
		check: bodyIs("progress: 10%\r\n20%\r\n100%\r\ndone with a NUL\r\nend\r\n"),
	},
	{
		name: "multipart/mixed with a base64 attachment",
		msg: func(to string) string {
			return header("Alice Example <alice@example.com>", to, "report attached") +
				"MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"=_b0\"\n\n" +
				"This is a multi-part message in MIME format.\n\n--=_b0\n" +
				"Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n" +
				"See the attachment. " + utf8Text + "\n--=_b0\n" +
				"Content-Type: application/octet-stream; name=\"data.bin\"\n" +
				"Content-Disposition: attachment; filename=\"data.bin\"\nContent-Transfer-Encoding: base64\n\n" +
				base64Lines(smallAttachment) + "\n--=_b0--\n"
		},
		sigs: exampleCom,
		check: func(t *testing.T, path string) {
			parts := readMultipart(t, path)
			if len(parts) != 2 {
				t.Fatalf("%d parts, want 2", len(parts))
			}
			if want := sha256.Sum256(smallAttachment); parts[1].sum != want {
				t.Errorf("the attachment decodes to %d bytes that differ from the %d sent", parts[1].n, len(smallAttachment))
			}
		},
	},
	{
		name: "From with a display name in RFC 2047",
		msg: func(to string) string {
			return header("=?UTF-8?Q?J=C3=BCrgen_M=C3=BCller?= <juergen@example.com>", to,
				"=?UTF-8?B?R3LDvMOfZSBhdXMgS8O2bG4=?=") + "\nHallo.\n"
		},
		sigs:  exampleCom,
		check: fieldIs("From", "=?UTF-8?Q?J=C3=BCrgen_M=C3=BCller?= <juergen@example.com>"),
	},
	{
		name: "From in upper case",
		msg: func(to string) string {
			return header("Dave <Dave@EXAMPLE.COM>", to, "upper-case domain") + "\nhi\n"
		},
		sigs: exampleCom,
	},
	{
		name: "envelope sender in a domain without a key",
		args: []string{"-t", "-i", "-f", "bounces@nokey.example"},
		msg: func(to string) string {
			return header("alice@example.com", to, "signed by From, not by the envelope") + "\nhi\n"
		},
		sigs: exampleCom,
	},
	{
		name: "header line over 998 octets, folded at enqueue",
		msg: func(to string) string {
			return header("alice@example.com", to, strings.Repeat("long subject ", 120)) + "\nbody\n"
		},
		sigs: exampleCom,
	},
	{
		name: "no final newline",
		msg: func(to string) string {
			return header("alice@example.com", to, "no final newline") + "\nthe last line has no line break"
		},
		sigs:  exampleCom,
		check: bodyIs("the last line has no line break\r\n"),
	},
	{
		name: "lines of dots (dot-stuffed in DATA)",
		msg: func(to string) string {
			return header("alice@example.com", to, "dots") + "\n.\n..\n.x\n. \nend\n"
		},
		sigs:  exampleCom,
		check: bodyIs(".\r\n..\r\n.x\r\n. \r\nend\r\n"),
	},
	{
		name: "empty body",
		msg: func(to string) string {
			return header("alice@example.com", to, "empty body") + "\n"
		},
		sigs:  exampleCom,
		check: bodyIs(""),
	},
	{
		name: "header section only, no blank line",
		msg: func(to string) string {
			return header("alice@example.com", to, "header only")
		},
		sigs: exampleCom,
	},
	{
		name: "mbox From_ line first",
		msg: func(to string) string {
			return "From alice@example.com Mon Nov  2 10:00:00 2026\n" + header("alice@example.com", to, "mbox") + "\nbody\n"
		},
		sigs:  exampleCom,
		check: bodyIs("body\r\n"),
	},
	{
		name: "raw UTF-8 in the header",
		msg: func(to string) string {
			return header("Jürgen Müller <juergen@example.com>", to, "Grüße — 日本語") + "\nhi\n"
		},
		sigs:  exampleCom,
		check: fieldIs("Subject", "Grüße — 日本語"),
	},
	{
		name: "bare CR in the header",
		msg: func(to string) string {
			return header("alice@example.com", to, "progress 10%\r20%") + "\nbody\n"
		},
		sigs: exampleCom,
		check: func(t *testing.T, path string) {
			h, _ := readSent(t, path)
			if bytes.Contains(bytes.ReplaceAll(h, []byte("\r\n"), nil), []byte("\r")) {
				t.Errorf("a bare CR was sent in the header: %q", h)
			}
		},
	},
	{
		name: "Latin-1 body with a 3000-octet line, re-encoded",
		msg: func(to string) string {
			return header("alice@example.com", to, "latin-1") + "\n\xe9t\xe9 \xe0 la plage\n" + strings.Repeat("caf\xe9 ", 600) + "\n"
		},
		sigs: exampleCom,
		check: func(t *testing.T, path string) {
			if got, want := field(t, path, "Content-Type"), "text/plain; charset=unknown-8bit"; got != want {
				t.Errorf("Content-Type: %q, want %q", got, want)
			}
		},
	},
	{
		name: "base64 attachment in 4000-character lines, re-wrapped",
		msg: func(to string) string {
			enc := base64.StdEncoding.EncodeToString(smallAttachment)
			var b strings.Builder
			for len(enc) > 4000 {
				b.WriteString(enc[:4000] + "\n")
				enc = enc[4000:]
			}
			b.WriteString(enc + "\n")
			return header("alice@example.com", to, "unwrapped base64") +
				"MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"b\"\n\n--b\n" +
				"Content-Type: text/plain\n\ntext\n--b\nContent-Type: application/octet-stream\n" +
				"Content-Transfer-Encoding: base64\n\n" + b.String() + "--b--\n"
		},
		sigs: exampleCom,
		check: func(t *testing.T, path string) {
			parts := readMultipart(t, path)
			if len(parts) != 2 {
				t.Fatalf("%d parts, want 2", len(parts))
			}
			if want := sha256.Sum256(smallAttachment); parts[1].sum != want {
				t.Errorf("the attachment decodes to %d bytes that differ from the %d sent", parts[1].n, len(smallAttachment))
			}
			_, body := readSent(t, path)
			for _, l := range bytes.SplitAfter(body, []byte("\r\n")) {
				if len(l) > 1000 {
					t.Errorf("a line of %d octets was sent", len(l))
					break
				}
			}
		},
	},
	{
		name: "From in other.example",
		msg: func(to string) string {
			return header("Bob <bob@other.example>", to, "other domain") + "\nsigned with k1 only\n"
		},
		sigs: otherExample,
	},
	{
		name: "From in a domain with no key",
		msg: func(to string) string {
			return header("carol@nokey.example", to, "no key") + "\nunsigned\n"
		},
		sigs: unsigned,
	},
	{
		name: "From added by Postie",
		msg: func(to string) string {
			return "To: " + to + "\nSubject: no From\n\nPostie adds From: user@" + hostname + "\n"
		},
		sigs: unsigned,
		check: func(t *testing.T, path string) {
			from := field(t, path, "From")
			if !strings.HasSuffix(from, "@"+hostname+">") && !strings.HasSuffix(from, "@"+hostname) {
				t.Errorf("From: %s, want an address @%s", from, hostname)
			}
		},
	},
	{
		name:  "5 MB multipart with long lines",
		gen:   func(w io.Writer, to string) error { _, err := writeBig(w, to, 5<<20); return err },
		sigs:  exampleCom,
		check: checkBig(5 << 20),
	},
	{
		name:  "60 MB multipart with long lines",
		gen:   func(w io.Writer, to string) error { _, err := writeBig(w, to, 60<<20); return err },
		sigs:  exampleCom,
		check: checkBig(60 << 20),
		long:  true,
	},
}

// readSent reads a (small) sent message and splits it at the blank line.
func readSent(t *testing.T, path string) (header, body []byte) {
	t.Helper()
	data, err := os.ReadFile(path)
	tcheck(t, err, "reading what was sent")
	h, b, ok := bytes.Cut(data, []byte("\r\n\r\n"))
	if !ok {
		t.Fatalf("no blank line after the header section in %q", data)
	}
	return append(h, "\r\n"...), b
}

// bodyIs checks that the body was sent as want.
func bodyIs(want string) func(*testing.T, string) {
	return func(t *testing.T, path string) {
		_, body := readSent(t, path)
		if string(body) != want {
			t.Errorf("body sent:\n%q\nwant\n%q", body, want)
		}
	}
}

// fieldIs checks that the field name was sent with value want.
func fieldIs(name, want string) func(*testing.T, string) {
	return func(t *testing.T, path string) {
		if got := field(t, path, name); got != want {
			t.Errorf("%s: %q, want %q", name, got, want)
		}
	}
}

// field returns the value of the first name field sent, unfolded.
func field(t *testing.T, path, name string) string {
	t.Helper()
	h, _ := readSent(t, path)
	mh, err := textproto.NewReader(bufio.NewReader(bytes.NewReader(append(h, "\r\n"...)))).ReadMIMEHeader()
	tcheck(t, err, "parsing the header sent")
	return mh.Get(name)
}

// reencodedQP checks that a message without MIME fields and with a line
// over 998 octets went out as quoted-printable text whose content is
// want, in lines of at most 76 octets.
func reencodedQP(want string) func(*testing.T, string) {
	return func(t *testing.T, path string) {
		for name, v := range map[string]string{"MIME-Version": "1.0", "Content-Type": "text/plain; charset=utf-8", "Content-Transfer-Encoding": "quoted-printable"} {
			if got := field(t, path, name); got != v {
				t.Errorf("%s: %q, want %q", name, got, v)
			}
		}
		_, body := readSent(t, path)
		for _, l := range strings.SplitAfter(string(body), "\r\n") {
			if len(l) > 78 {
				t.Errorf("a line of %d octets: %.60q...", len(l)-2, l)
				break
			}
		}
		dec, err := io.ReadAll(quotedprintable.NewReader(bytes.NewReader(body)))
		tcheck(t, err, "decoding quoted-printable")
		if string(dec) != want {
			t.Errorf("decoded body:\n%q\nwant\n%q", dec, want)
		}
	}
}

// part is a decoded MIME part: its raw transfer encoding, size and hash.
type part struct {
	cte string
	n   int64
	sum [32]byte
}

// readMultipart decodes the parts of a sent multipart message, streaming.
func readMultipart(t *testing.T, path string) []part {
	t.Helper()
	f, err := os.Open(path)
	tcheck(t, err, "opening what was sent")
	defer f.Close()
	tp := textproto.NewReader(bufio.NewReaderSize(f, 64<<10))
	h, err := tp.ReadMIMEHeader()
	tcheck(t, err, "parsing the header sent")
	mt, params, err := mime.ParseMediaType(h.Get("Content-Type"))
	tcheck(t, err, "parsing Content-Type")
	if mt != "multipart/mixed" {
		t.Fatalf("Content-Type %s, want multipart/mixed", mt)
	}
	mr := multipart.NewReader(tp.R, params["boundary"])
	var parts []part
	for {
		p, err := mr.NextRawPart()
		if err == io.EOF {
			return parts
		}
		tcheck(t, err, "reading a part")
		cte := strings.ToLower(p.Header.Get("Content-Transfer-Encoding"))
		var r io.Reader = p
		switch cte {
		case "base64":
			r = base64.NewDecoder(base64.StdEncoding, p)
		case "quoted-printable":
			r = quotedprintable.NewReader(p)
		}
		hash := sha256.New()
		n, err := io.Copy(hash, r)
		tcheck(t, err, "decoding a "+cte+" part")
		var sum [32]byte
		copy(sum[:], hash.Sum(nil))
		parts = append(parts, part{cte: cte, n: n, sum: sum})
	}
}

// checkBig checks a message of writeBig: no line over 998 octets, the
// text part (which has long lines) re-encoded as quoted-printable, and
// both parts decoding to what was submitted (with CRLF line endings).
func checkBig(size int) func(*testing.T, string) {
	return func(t *testing.T, path string) {
		sums, err := writeBig(io.Discard, "", size)
		tcheck(t, err, "generating the expected content")
		f, err := os.Open(path)
		tcheck(t, err, "opening what was sent")
		defer f.Close()
		br := bufio.NewReaderSize(f, 64<<10)
		lines, longest := 0, 0
		for n := 0; ; {
			chunk, err := br.ReadSlice('\n')
			n += len(chunk)
			if err == bufio.ErrBufferFull {
				continue
			}
			if n > longest {
				longest = n
			}
			lines++
			n = 0
			if err == io.EOF {
				break
			}
			tcheck(t, err, "reading what was sent")
		}
		if longest > 1000 {
			t.Errorf("a line of %d octets (with CRLF); SMTP allows 1000", longest)
		}
		parts := readMultipart(t, path)
		if len(parts) != 2 {
			t.Fatalf("%d parts, want 2", len(parts))
		}
		if parts[0].cte != "quoted-printable" {
			t.Errorf("text part sent as %q, want quoted-printable (it has lines over 998 octets)", parts[0].cte)
		}
		for i, name := range []string{"text", "attachment"} {
			if parts[i].sum != sums[i] {
				t.Errorf("the %s part decodes to %d bytes that differ from what was submitted", name, parts[i].n)
			}
		}
		t.Logf("%d lines, longest %d octets", lines, longest)
	}
}

// writeBig writes a message of about size octets, as a web application
// would hand over a report: LF line endings, a text part of about 40%
// with UTF-8 words, trailing spaces and a line of 1200 to 4000 octets
// every 50 lines or so, and a base64 attachment for the rest. It returns
// the SHA-256 of the text part (with CRLF line endings, as sent) and of
// the attachment's bytes. The same size gives the same bytes.
func writeBig(w io.Writer, to string, size int) ([2][32]byte, error) {
	var sums [2][32]byte
	bw := bufio.NewWriterSize(w, 64<<10)
	fmt.Fprintf(bw, "From: Reports <reports@example.com>\nTo: %s\nSubject: monthly report (%d octets)\n"+
		"MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"=_big\"\n\n"+
		"--=_big\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n", to, size)
	words := []string{"the", "quick", "brown", "fox", "Grüße", "naïve", "日本語", "jumps", "over", "lazy", "dog", "€", "report", "2026"}
	var x uint32 = 2463534242
	next := func() uint32 {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		return x
	}
	text := sha256.New()
	line := make([]byte, 0, 4096)
	for n := 0; n < size*2/5; {
		line = line[:0]
		want := 20 + int(next()%80)
		if next()%50 == 0 {
			want = 1200 + int(next()%2800)
		}
		for len(line) < want {
			line = append(line, words[next()%uint32(len(words))]...)
			line = append(line, ' ')
		}
		if next()%8 == 0 {
			line = append(line, " \t"...)
		}
		line = append(line, '\n')
		m, _ := bw.Write(line)
		n += m
		text.Write(line[:len(line)-1])
		text.Write([]byte("\r\n"))
	}
	copy(sums[0][:], text.Sum(nil))
	bw.WriteString("\n--=_big\nContent-Type: application/pdf; name=\"report.pdf\"\n" +
		"Content-Disposition: attachment; filename=\"report.pdf\"\nContent-Transfer-Encoding: base64\n\n")
	att := sha256.New()
	enc := base64.NewEncoder(base64.StdEncoding, &lineWriter{w: bw})
	raw := make([]byte, 57*64)
	for n := 0; n < size*3/5*3/4*76/77; n += len(raw) {
		for i := range raw {
			raw[i] = byte(next())
		}
		enc.Write(raw)
		att.Write(raw)
	}
	enc.Close()
	copy(sums[1][:], att.Sum(nil))
	bw.WriteString("\n--=_big--\n")
	return sums, bw.Flush()
}

// lineWriter breaks base64 text into lines of 76 characters.
type lineWriter struct {
	w   io.Writer
	col int
}

func (lw *lineWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		k := min(76-lw.col, len(p))
		if _, err := lw.w.Write(p[:k]); err != nil {
			return 0, err
		}
		p, lw.col = p[k:], lw.col+k
		if lw.col == 76 {
			if _, err := lw.w.Write([]byte("\n")); err != nil {
				return 0, err
			}
			lw.col = 0
		}
	}
	return n, nil
}
