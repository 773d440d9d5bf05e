// Package msggen writes the test messages of the memory benchmark
// (bench/memory): what a web application hands to sendmail, generated as
// it is written, so that a 60 MB message costs no memory to make.
package msggen

import (
	"bufio"
	"encoding/base64"
	"fmt"
	"io"
)

// Write writes a message of about size octets with LF line endings. From
// 16 KiB up it is a report: a multipart/mixed with a text part of about
// 40% (UTF-8 words, trailing white space, and a line of 1200 to 4000
// octets every 50 lines or so, which delivery re-encodes as
// quoted-printable) and a base64 attachment for the rest. Below that it is
// a plain text message. The same arguments give the same bytes.
func Write(out io.Writer, size int, from, to string) error {
	w := bufio.NewWriterSize(out, 64<<10)
	x := rng(2463534242)
	if size < 16<<10 {
		fmt.Fprintf(w, "From: %s\nTo: %s\nSubject: daily status (%d octets)\n\n", from, to, size)
		if err := text(w, &x, size-150, false); err != nil {
			return err
		}
		return w.Flush()
	}
	fmt.Fprintf(w, "From: %s\nTo: %s\nSubject: monthly report (%d octets)\n"+
		"MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"=_big\"\n\n"+
		"--=_big\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n", from, to, size)
	if err := text(w, &x, size*2/5, true); err != nil {
		return err
	}
	w.WriteString("\n--=_big\nContent-Type: application/pdf; name=\"report.pdf\"\n" +
		"Content-Disposition: attachment; filename=\"report.pdf\"\nContent-Transfer-Encoding: base64\n\n")
	raw := make([]byte, 57) // one 76-character line
	line := make([]byte, 77)
	for n := 0; n < size*3/5; n += len(line) {
		for i := range raw {
			raw[i] = byte(x.next())
		}
		base64.StdEncoding.Encode(line, raw)
		line[76] = '\n'
		if _, err := w.Write(line); err != nil {
			return err
		}
	}
	w.WriteString("\n--=_big--\n")
	return w.Flush()
}

// rng is xorshift32: cheap and deterministic.
type rng uint32

func (x *rng) next() uint32 {
	*x ^= *x << 13
	*x ^= *x >> 17
	*x ^= *x << 5
	return uint32(*x)
}

var words = []string{"the", "quick", "brown", "fox", "Grüße", "naïve", "日本語", "jumps", "over", "lazy", "dog", "€", "report", "2026"}

// text writes lines of words until n octets are written; long adds the
// occasional line over 998 octets.
func text(w io.Writer, x *rng, n int, long bool) error {
	line := make([]byte, 0, 4096)
	for written := 0; written < n; {
		line = line[:0]
		want := 20 + int(x.next()%60)
		if long && x.next()%50 == 0 {
			want = 1200 + int(x.next()%2800)
		}
		for len(line) < want {
			line = append(line, words[x.next()%uint32(len(words))]...)
			line = append(line, ' ')
		}
		if x.next()%8 == 0 {
			line = append(line, " \t"...)
		}
		line = append(line, '\n')
		m, err := w.Write(line)
		if err != nil {
			return err
		}
		written += m
	}
	return nil
}
