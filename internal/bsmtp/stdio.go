package bsmtp

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"
)

// maxCommandLine bounds an SMTP command line. RFC 5321 allows 512 octets;
// more is tolerated, but a line that never ends must not grow without
// bound in memory. It must exceed what go-smtp reads ahead of a DATA body
// before Session.Data starts (its 4 KiB bufio buffer), so that body
// bytes sent without waiting for the 354 are never taken for an overlong
// command. (The chunk of a refused BDAT is read as command bytes: one
// longer than this without a LF ends the session.)
const maxCommandLine = 64 << 10

// readChunk is the most stdioConn reads from the input at once.
const readChunk = 32 << 10

// stdioConn is a net.Conn made of sendmail's standard input and output,
// so that go-smtp's server, which only serves net.Conns, can speak on
// them.
//
// It differs from a socket in these ways:
//
//   - Deadlines are no-ops that succeed. Standard input is usually a
//     pipe, and an *os.File pipe may not support deadlines: go-smtp
//     would answer "421 Connection error" to the first failed
//     SetReadDeadline. The server is configured without timeouts, so
//     nothing relies on them; a client that goes away closes the pipe
//     and the read returns EOF.
//   - A bare LF in the input becomes CRLF. go-smtp accepts LF-terminated
//     commands but only ends DATA at CRLF.CRLF, so a script's
//     printf 'HELO x\n...' or a person at a terminal could otherwise
//     never finish a message. Message content loses nothing: enqueue
//     normalizes line endings to CRLF anyway. (BDAT chunk sizes would
//     not survive this; BDAT is not offered, see session.Data.)
//   - Command lines are limited to maxCommandLine here, not by go-smtp's
//     MaxLineLength, which would apply to message lines as well and
//     reject a message with a long line (long lines are legal input to
//     sendmail; delivery deals with them). The limit is suspended while
//     a message body is being read (setData).
//   - Control characters that go-smtp echoes from the client into a
//     reply are replaced, and CHUNKING is taken out of the EHLO reply
//     (see Write).
//   - The first I/O error is remembered for Serve to return: go-smtp
//     ignores write errors. After a write error, reads fail too, so
//     the session ends instead of reading commands it cannot answer.
type stdioConn struct {
	in  io.Reader
	out io.Writer

	// Read side; only go-smtp's connection goroutine reads.
	buf     []byte // raw input
	exp     []byte // input after LF to CRLF
	pending []byte // part of exp not yet returned
	lastCR  bool   // the last input byte was CR
	rerr    error  // error from in, returned once pending is drained
	lineLen int    // bytes since the last LF, outside message bodies
	tooLong bool   // a command line exceeded maxCommandLine

	inData atomic.Bool

	// Write side, under mu.
	mu       sync.Mutex
	wbuf     []byte
	heldCR   bool
	readErr  error // first read error other than EOF
	writeErr error // first write error

	closeOnce sync.Once
	done      chan struct{}
}

func newStdioConn(in io.Reader, out io.Writer) *stdioConn {
	return &stdioConn{in: in, out: out, buf: make([]byte, readChunk), done: make(chan struct{})}
}

// setData is called with true when a message body starts to be read and
// with false when the transaction is over.
func (c *stdioConn) setData(on bool) { c.inData.Store(on) }

func (c *stdioConn) closed() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// ioErr returns the first I/O error on either stream, or nil.
func (c *stdioConn) ioErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.writeErr != nil {
		return c.writeErr
	}
	return c.readErr
}

func (c *stdioConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	werr := c.writeErr
	c.mu.Unlock()
	if werr != nil || c.closed() {
		return 0, net.ErrClosed
	}
	if c.tooLong {
		return 0, smtp.ErrTooLongLine
	}
	if len(p) == 0 {
		return 0, nil
	}
	if len(c.pending) == 0 {
		if c.rerr != nil {
			return 0, c.rerr
		}
		c.fill(len(p))
		if len(c.pending) == 0 {
			return 0, c.rerr
		}
	}
	n := copy(p, c.pending)
	c.pending = c.pending[n:]
	if c.inData.Load() {
		c.lineLen = 0
		return n, nil
	}
	for _, b := range p[:n] {
		if b == '\n' {
			c.lineLen = 0
			continue
		}
		c.lineLen++
		if c.lineLen > maxCommandLine {
			// go-smtp answers "500 Too long line" to this error
			// and ends the session; the input cannot be resynced.
			c.tooLong = true
			return 0, smtp.ErrTooLongLine
		}
	}
	return n, nil
}

// fill reads once from the input, at most max bytes, into pending,
// turning each bare LF into CRLF.
func (c *stdioConn) fill(max int) {
	n, err := c.in.Read(c.buf[:min(max, len(c.buf))])
	c.exp = c.exp[:0]
	for _, b := range c.buf[:n] {
		if b == '\n' && !c.lastCR {
			c.exp = append(c.exp, '\r')
		}
		c.exp = append(c.exp, b)
		c.lastCR = b == '\r'
	}
	c.pending = c.exp
	if err != nil {
		c.rerr = err
		if err != io.EOF {
			c.mu.Lock()
			if c.readErr == nil {
				c.readErr = fmt.Errorf("read standard input: %w", err)
			}
			c.mu.Unlock()
		}
	}
}

// chunkingLine is go-smtp's EHLO line for CHUNKING (RFC 3030), which it
// offers unconditionally. It is never the last line of the reply: SIZE
// always follows.
var chunkingLine = []byte("250-CHUNKING\r\n")

// Write writes reply bytes.
//
// go-smtp echoes client input in some replies (the HELO argument, an
// unknown command), so a control character there, a bare CR above all,
// is written as '?': a reply line holds no line break but the CRLF that
// ends it. A CR at the end of p is held until the next Write shows
// whether a LF follows (go-smtp flushes a reply in one Write unless it
// is longer than its 4 KiB buffer).
//
// The CHUNKING line is dropped from the EHLO reply, which go-smtp writes
// in one Write: BDAT is refused (see session.Data), so it must not be
// offered.
func (c *stdioConn) Write(p []byte) (int, error) {
	if c.closed() {
		return 0, net.ErrClosed
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.writeErr != nil {
		return 0, c.writeErr
	}
	n := len(p)
	if i := bytes.Index(p, chunkingLine); i >= 0 && (i == 0 || bytes.HasSuffix(p[:i], []byte("\r\n"))) {
		p = append(p[:i:i], p[i+len(chunkingLine):]...)
	}
	c.wbuf = c.wbuf[:0]
	for _, b := range p {
		if c.heldCR {
			c.heldCR = false
			if b == '\n' {
				c.wbuf = append(c.wbuf, '\r', '\n')
				continue
			}
			c.wbuf = append(c.wbuf, '?')
		}
		switch {
		case b == '\r':
			c.heldCR = true
		case b < ' ' && b != '\n' && b != '\t', b == 0x7f:
			c.wbuf = append(c.wbuf, '?')
		default:
			c.wbuf = append(c.wbuf, b)
		}
	}
	w, err := c.out.Write(c.wbuf)
	if err == nil && w < len(c.wbuf) {
		err = io.ErrShortWrite
	}
	if err != nil {
		c.writeErr = fmt.Errorf("write standard output: %w", err)
		return 0, err
	}
	return n, nil
}

// Close ends the session. It leaves the underlying streams open: they
// belong to the caller.
func (c *stdioConn) Close() error {
	c.closeOnce.Do(func() { close(c.done) })
	return nil
}

// SetDeadline and friends do nothing: see the type's comment.
func (c *stdioConn) SetDeadline(time.Time) error      { return nil }
func (c *stdioConn) SetReadDeadline(time.Time) error  { return nil }
func (c *stdioConn) SetWriteDeadline(time.Time) error { return nil }

func (c *stdioConn) LocalAddr() net.Addr  { return stdioAddr{} }
func (c *stdioConn) RemoteAddr() net.Addr { return stdioAddr{} }

type stdioAddr struct{}

func (stdioAddr) Network() string { return "stdio" }
func (stdioAddr) String() string  { return "stdin" }

// oneConnListener hands out its connection once. The next Accept blocks
// until that connection is closed and then fails, which ends go-smtp's
// Server.Serve.
type oneConnListener struct {
	conn      *stdioConn
	accepted  atomic.Bool
	closeOnce sync.Once
	done      chan struct{}
}

func newListener(c *stdioConn) *oneConnListener {
	return &oneConnListener{conn: c, done: make(chan struct{})}
}

func (l *oneConnListener) Accept() (net.Conn, error) {
	if l.accepted.CompareAndSwap(false, true) {
		return l.conn, nil
	}
	select {
	case <-l.conn.done:
	case <-l.done:
	}
	return nil, net.ErrClosed
}

func (l *oneConnListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return nil
}

func (l *oneConnListener) Addr() net.Addr { return stdioAddr{} }
