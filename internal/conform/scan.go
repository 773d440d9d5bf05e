package conform

import (
	"io"
	"unicode/utf8"
)

// MaxLineLen is the longest line RFC 5322 section 2.1.1 allows, in octets,
// not counting the CRLF.
const MaxLineLen = 998

// Facts say what a message needs before it can go into SMTP DATA.
type Facts struct {
	// LongLines: some line is longer than MaxLineLen octets, not counting
	// its line ending.
	LongLines bool
	// BareCR: some CR is not followed by LF.
	BareCR bool
	// BareLF: some LF is not preceded by CR. The spool holds none (enqueue
	// turns them into CRLF); Copy handles them anyway.
	BareLF bool
	// NUL: some octet is zero.
	NUL bool
	// EightBit: some octet is 0x80 or above. It does not make Copy do
	// anything; the runner uses it for BODY=8BITMIME, and Copy for the
	// charset it declares when it makes a non-MIME message MIME.
	EightBit bool
	// UTF8: the whole message is valid UTF-8. The zero value (false) makes
	// Copy declare unknown-8bit rather than utf-8 for an 8-bit message
	// whose validity was not checked.
	UTF8 bool
}

// NeedsWork reports whether Copy has to do more than copy.
func (f Facts) NeedsWork() bool {
	return f.LongLines || f.BareCR || f.BareLF || f.NUL
}

// Scan reads r to its end and reports its Facts.
func Scan(r io.Reader) (Facts, error) {
	var s Scanner
	_, err := io.CopyBuffer(&s, r, make([]byte, 32<<10))
	return s.Facts(), err
}

// A Scanner records the Facts of the bytes written to it, in one pass and
// constant memory. The zero value is ready to use.
type Scanner struct {
	f       Facts
	col     int  // octets since the last LF, CRs included
	cr      bool // the last octet was CR
	invalid bool // not valid UTF-8
	rune    [utf8.UTFMax]byte
	nrune   int // octets of an incomplete UTF-8 sequence at the end of the input so far
}

// Write records the facts of p. It never fails.
func (s *Scanner) Write(p []byte) (int, error) {
	eight := false
	for _, b := range p {
		switch b {
		case '\n':
			n := s.col
			if s.cr {
				n--
			} else {
				s.f.BareLF = true
			}
			if n > MaxLineLen {
				s.f.LongLines = true
			}
			s.col = 0
			s.cr = false
			continue
		case '\r':
			if s.cr {
				s.f.BareCR = true
			}
			s.cr = true
			s.col++
			continue
		case 0:
			s.f.NUL = true
		}
		if s.cr {
			s.f.BareCR = true
			s.cr = false
		}
		if b >= 0x80 {
			eight = true
		}
		s.col++
	}
	if eight {
		s.f.EightBit = true
	}
	if eight || s.nrune > 0 {
		s.checkUTF8(p)
	}
	return len(p), nil
}

// checkUTF8 validates p, carrying an incomplete sequence at its end over to
// the next call.
func (s *Scanner) checkUTF8(p []byte) {
	if s.invalid {
		return
	}
	if s.nrune > 0 {
		k := 0
		for s.nrune < len(s.rune) && k < len(p) && !utf8.FullRune(s.rune[:s.nrune]) {
			s.rune[s.nrune] = p[k]
			s.nrune++
			k++
		}
		if !utf8.FullRune(s.rune[:s.nrune]) {
			return // p is used up and the sequence is still incomplete
		}
		if r, size := utf8.DecodeRune(s.rune[:s.nrune]); r == utf8.RuneError && size <= 1 {
			s.invalid = true
			return
		}
		p = p[k:]
		s.nrune = 0
	}
	tail := 0
	for i := len(p) - 1; i >= 0 && i >= len(p)-(utf8.UTFMax-1); i-- {
		if utf8.RuneStart(p[i]) {
			if !utf8.FullRune(p[i:]) {
				tail = len(p) - i
			}
			break
		}
	}
	if !utf8.Valid(p[:len(p)-tail]) {
		s.invalid = true
		return
	}
	s.nrune = copy(s.rune[:], p[len(p)-tail:])
}

// Facts reports the facts of everything written so far, as if it were the
// whole message.
func (s *Scanner) Facts() Facts {
	f := s.f
	n := s.col
	if s.cr {
		f.BareCR = true // a CR at the very end
		n--
	}
	if n > MaxLineLen {
		f.LongLines = true
	}
	f.UTF8 = !s.invalid && s.nrune == 0
	return f
}
