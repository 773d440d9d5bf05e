package conform

import (
	"bytes"
	"io"
)

// lineWrapper breaks lines longer than width by writing brk before the
// octet that would exceed it. After a break the line holds len(brk)-2
// octets (the indent of brk after its CRLF).
type lineWrapper struct {
	w     io.Writer
	width int
	brk   []byte
	col   int
}

// newSplitter returns the last-resort wrapper: like Postfix's
// smtp_line_length_limit, it breaks a line after MaxLineLen octets with
// CRLF and a space, which keeps every octet, turns a long header line into
// a folded one, and cannot make a line that looks like a MIME boundary.
func newSplitter(w io.Writer) *lineWrapper {
	return &lineWrapper{w: w, width: MaxLineLen, brk: []byte("\r\n ")}
}

func (lw *lineWrapper) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		if p[0] == '\r' || p[0] == '\n' {
			if _, err := lw.w.Write(p[:1]); err != nil {
				return 0, err
			}
			if p[0] == '\n' {
				lw.col = 0
			}
			p = p[1:]
			continue
		}
		end := bytes.IndexAny(p, "\r\n")
		if end < 0 {
			end = len(p)
		}
		run := p[:end]
		for len(run) > 0 {
			if lw.col >= lw.width {
				if _, err := lw.w.Write(lw.brk); err != nil {
					return 0, err
				}
				lw.col = len(lw.brk) - 2
			}
			k := min(len(run), lw.width-lw.col)
			if _, err := lw.w.Write(run[:k]); err != nil {
				return 0, err
			}
			lw.col += k
			run = run[k:]
		}
		p = p[end:]
	}
	return n, nil
}

// qpGuard passes quoted-printable output through, except that a line that
// would be a delimiter of an enclosing multipart gets its leading "-"
// written as =2D. Quoted-printable lines are short, so it holds one line
// at most.
type qpGuard struct {
	w     io.Writer
	stack [][]byte
	line  []byte
	pass  bool // the current line is too long to check; pass it through
}

const guardMax = 256

func (g *qpGuard) Write(p []byte) (int, error) {
	if len(g.stack) == 0 {
		return g.w.Write(p)
	}
	n := len(p)
	for len(p) > 0 {
		seg := p
		i := bytes.IndexByte(p, '\n')
		if i >= 0 {
			seg = p[:i+1]
		}
		p = p[len(seg):]
		if g.pass {
			if _, err := g.w.Write(seg); err != nil {
				return 0, err
			}
			g.pass = i < 0
			continue
		}
		g.line = append(g.line, seg...)
		switch {
		case i >= 0:
			if err := g.flush(); err != nil {
				return 0, err
			}
		case len(g.line) > guardMax:
			if _, err := g.w.Write(g.line); err != nil {
				return 0, err
			}
			g.line = g.line[:0]
			g.pass = true
		}
	}
	return n, nil
}

// flush writes the line held, which is complete or the last one.
func (g *qpGuard) flush() error {
	l := g.line
	g.line = g.line[:0]
	g.pass = false
	if len(l) == 0 {
		return nil
	}
	if _, _, ok := delimiter(trimEOL(l), g.stack); ok {
		if _, err := io.WriteString(g.w, "=2D"); err != nil {
			return err
		}
		l = l[1:]
	}
	_, err := g.w.Write(l)
	return err
}

// qpRewrapper re-wraps quoted-printable lines with soft line breaks so that
// no line is longer than 76 octets, keeping =XX escapes whole. Decoding
// its output gives what decoding its input gave.
type qpRewrapper struct {
	w   io.Writer
	col int
	esc []byte // an escape being read: "=" and up to one more octet
	out []byte
}

func (q *qpRewrapper) Write(p []byte) (int, error) {
	for _, b := range p {
		if len(q.esc) > 0 {
			if b != '\r' && b != '\n' {
				q.esc = append(q.esc, b)
				if len(q.esc) == 3 {
					q.token(q.esc)
					q.esc = q.esc[:0]
				}
				continue
			}
			q.token(q.esc) // "=" ending the line: a soft line break
			q.esc = q.esc[:0]
		}
		switch b {
		case '\r':
			q.out = append(q.out, b)
		case '\n':
			q.out = append(q.out, b)
			q.col = 0
		case '=':
			q.esc = append(q.esc, b)
		default:
			q.token([]byte{b})
		}
	}
	_, err := q.w.Write(q.out)
	q.out = q.out[:0]
	if err != nil {
		return 0, err
	}
	return len(p), nil
}

func (q *qpRewrapper) token(t []byte) {
	if q.col+len(t) > 75 {
		q.out = append(q.out, "=\r\n"...)
		q.col = 0
	}
	q.out = append(q.out, t...)
	q.col += len(t)
}

// encoder feeds a leaf body to a transfer encoder. The CRLF before a
// boundary delimiter belongs to the delimiter (RFC 2046 section 5.1.1), so
// the encoder holds back a trailing CRLF until it knows whether more
// follows.
type encoder struct {
	enc   io.WriteCloser
	guard *qpGuard    // nil for base64
	tail  *tailWriter // where the encoded body goes
	held  int         // octets of "\r\n" held back
}

func (e *encoder) write(p []byte) error {
	if len(p) == 0 {
		return nil
	}
	prev := crlf[:e.held]
	n := len(p)
	switch {
	case n >= 2 && p[n-2] == '\r' && p[n-1] == '\n':
		e.held, p = 2, p[:n-2]
	case p[n-1] == '\r':
		e.held, p = 1, p[:n-1]
	case n == 1 && p[0] == '\n' && e.held == 1:
		e.held, p, prev = 2, nil, nil
	default:
		e.held = 0
	}
	if _, err := e.enc.Write(prev); err != nil {
		return err
	}
	_, err := e.enc.Write(p)
	return err
}

// finish ends the encoded body with CRLF. At the end of the message, the
// CRLF held back is content; before a delimiter, it is not.
func (e *encoder) finish(eof bool) error {
	if eof {
		if _, err := e.enc.Write(crlf[:e.held]); err != nil {
			return err
		}
	}
	if err := e.enc.Close(); err != nil {
		return err
	}
	if e.guard != nil {
		if err := e.guard.flush(); err != nil {
			return err
		}
	}
	if eof && e.tail.endsCRLF() {
		return nil
	}
	_, err := e.tail.Write(crlf)
	return err
}
