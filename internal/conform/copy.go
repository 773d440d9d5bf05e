package conform

import (
	"bufio"
	"bytes"
	"io"
)

const (
	readBufSize   = 64 << 10 // the longest line chunk the walker handles at once
	maxHeaderSize = 1 << 20  // the largest header section the walker parses
	maxLookahead  = 1 << 20  // how much of a leaf body the walker reads ahead
	maxDepth      = 32       // how deep the walker follows nested entities
)

var crlf = []byte("\r\n")

// Copy writes the conformant form of the message read from src to dst (see
// the package documentation), and returns the number of bytes written. f
// must be the Facts of the whole message, or claim more.
func Copy(dst io.Writer, src io.Reader, f Facts) (int64, error) {
	cw := &countWriter{w: dst}
	if !f.NeedsWork() {
		tw := &tailWriter{w: cw}
		if _, err := io.CopyBuffer(tw, src, make([]byte, copyBufSize(src))); err != nil {
			return cw.n, err
		}
		if tw.n > 0 && !tw.endsCRLF() {
			_, err := cw.Write(crlf)
			return cw.n, err
		}
		return cw.n, nil
	}
	nr := newNormReader(src)
	if !f.LongLines {
		_, err := io.CopyBuffer(cw, nr, make([]byte, 32<<10))
		return cw.n, err
	}
	bw := bufio.NewWriterSize(cw, 32<<10)
	wk := &walker{r: bufio.NewReaderSize(nr, readBufSize), w: bw, f: f}
	if _, err := wk.entity(nil, kindMessage, 0); err != nil {
		return cw.n, err
	}
	err := bw.Flush()
	return cw.n, err
}

// copyBufSize is the buffer for copying src as it is: io.Copy's 32 KB,
// or less when src says it is smaller (a queue file's message, which is
// usually a few KB), since a runner copies each message it delivers.
func copyBufSize(src io.Reader) int {
	const limit = 32 << 10
	if s, ok := src.(interface{ Size() int64 }); ok && s.Size() < limit {
		return int(max(s.Size(), 1))
	}
	return limit
}

// normReader turns bare LF into CRLF, a bare CR into a space in the
// top-level header and into CRLF in the body, drops NUL, and ends a non-empty
// stream with CRLF.
type normReader struct {
	src    io.Reader
	buf    []byte
	r, n   int   // buf[r:n] is unread input
	err    error // from src, returned once buf is drained
	qa     [4]byte
	q      []byte // output that did not fit in the caller's buffer
	cr     bool   // a CR was read and not yet written
	header bool   // in the top-level header section
	bol    bool   // the output is at the beginning of a line
	any    bool   // some output was produced
	done   bool   // the end of the stream was written
}

func newNormReader(src io.Reader) *normReader {
	return &normReader{src: src, buf: make([]byte, 32<<10), header: true, bol: true}
}

func (z *normReader) Read(p []byte) (int, error) {
	o := 0
	for {
		if len(z.q) > 0 {
			k := copy(p[o:], z.q)
			z.q = z.q[k:]
			o += k
		}
		if o == len(p) || len(z.q) > 0 {
			return o, nil
		}
		if z.r == z.n {
			switch {
			case z.done:
				if o > 0 {
					return o, nil
				}
				return 0, io.EOF
			case z.err == io.EOF:
				z.finish(p, &o)
				z.done = true
				continue
			case z.err != nil:
				if o > 0 {
					return o, nil
				}
				return 0, z.err
			case o > 0:
				return o, nil
			}
			z.n, z.err = z.src.Read(z.buf)
			z.r = 0
			continue
		}
		in := z.buf[z.r:z.n]
		for len(in) > 0 && o < len(p) {
			b := in[0]
			if z.cr {
				z.cr = false
				if b == '\n' {
					z.emit(p, &o, "\r\n")
					z.eol()
					in = in[1:]
				} else {
					z.bareCR(p, &o)
				}
				continue
			}
			switch b {
			case '\r':
				z.cr = true
				in = in[1:]
			case '\n':
				z.emit(p, &o, "\r\n")
				z.eol()
				in = in[1:]
			case 0:
				in = in[1:]
			default:
				k := bytes.IndexAny(in, "\r\n\x00")
				if k < 0 {
					k = len(in)
				}
				k = copy(p[o:], in[:k])
				o += k
				in = in[k:]
				z.bol = false
				z.any = true
			}
		}
		z.r = z.n - len(in)
	}
}

// emit writes s to p[*o:], keeping what does not fit for the next Read.
func (z *normReader) emit(p []byte, o *int, s string) {
	if len(z.q) == 0 {
		k := copy(p[*o:], s)
		*o += k
		s = s[k:]
		z.q = z.qa[:0]
	}
	z.q = append(z.q, s...)
	z.any = true
}

func (z *normReader) eol() {
	if z.header && z.bol {
		z.header = false // an empty line ends the header section
	}
	z.bol = true
}

func (z *normReader) bareCR(p []byte, o *int) {
	if z.header {
		z.emit(p, o, " ")
		z.bol = false
		return
	}
	z.emit(p, o, "\r\n")
	z.eol()
}

func (z *normReader) finish(p []byte, o *int) {
	if z.cr {
		z.cr = false
		z.bareCR(p, o)
	}
	if z.any && !z.bol {
		z.emit(p, o, "\r\n")
		z.bol = true
	}
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// tailWriter remembers the last two bytes written through it.
type tailWriter struct {
	w    io.Writer
	n    int64
	tail [2]byte
}

func (t *tailWriter) Write(p []byte) (int, error) {
	n, err := t.w.Write(p)
	switch {
	case n >= 2:
		t.tail = [2]byte{p[n-2], p[n-1]}
	case n == 1:
		t.tail = [2]byte{t.tail[1], p[0]}
	}
	t.n += int64(n)
	return n, err
}

func (t *tailWriter) endsCRLF() bool {
	return t.n >= 2 && t.tail == [2]byte{'\r', '\n'}
}
