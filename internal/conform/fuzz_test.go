package conform

import (
	"bufio"
	"bytes"
	"testing"

	"github.com/emersion/go-message/textproto"
)

// FuzzCopy checks that Copy does not panic, that its output is conformant
// and idempotent, and that it depends on Facts only through the charset.
// The seed corpus is in testdata/fuzz/FuzzCopy.
func FuzzCopy(f *testing.F) {
	f.Add([]byte("Subject: x\r\n\r\nhello\r\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		facts, err := Scan(bytes.NewReader(in))
		if err != nil {
			t.Fatal(err)
		}
		out := tcopyFacts(t, in, facts)
		checkOutput(t, out)

		all := Facts{LongLines: true, BareCR: true, BareLF: true, NUL: true, EightBit: facts.EightBit, UTF8: facts.UTF8}
		if again := tcopyFacts(t, in, all); !bytes.Equal(again, out) {
			t.Errorf("output depends on Facts:\nexact: %q\nall:   %q", out, again)
		}

		// If the input's header section is well-formed and has no long
		// line, neither has the output's.
		if wellFormedHeader(in) {
			for i, line := range bytes.SplitAfter(headerSection(out), []byte("\n")) {
				if contentLen(line) > MaxLineLen {
					t.Errorf("header line %d has %d octets", i+1, contentLen(line))
				}
			}
		}
	})
}

// headerSection returns msg up to and including the first empty line.
func headerSection(msg []byte) []byte {
	if bytes.HasPrefix(msg, crlf) {
		return msg[:2]
	}
	if i := bytes.Index(msg, []byte("\r\n\r\n")); i >= 0 {
		return msg[:i+4]
	}
	return msg
}

func wellFormedHeader(msg []byte) bool {
	if !bytes.Contains(msg, []byte("\r\n\r\n")) || bytes.ContainsAny(headerSection(msg), "\x00") {
		return false
	}
	h := headerSection(msg)
	if bytes.Contains(bytes.ReplaceAll(h, crlf, nil), []byte("\r")) || bytes.Contains(bytes.ReplaceAll(h, crlf, nil), []byte("\n")) {
		return false // bare CR or LF
	}
	for _, line := range bytes.SplitAfter(h, []byte("\n")) {
		if contentLen(line) > MaxLineLen {
			return false
		}
	}
	_, err := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(h)))
	return err == nil
}
