package submit

import (
	"io"
	"net"
	"time"
)

// tapConn wraps the TCP connection, under TLS when there is TLS (go-smtp
// recognises TLS only by its connection being a *tls.Conn), and fills gaps
// go-smtp v0.25.1 leaves:
//
//   - Before STARTTLS it rewrites go-smtp's "EHLO localhost" (and the HELO
//     fallback) to the configured name. go-smtp has no way to set the name
//     of the EHLO it sends before STARTTLS: NewClientStartTLS hard-codes
//     "localhost" (by design upstream, since that EHLO is unauthenticated),
//     and relays such as smtp-relay.gmail.com refuse it.
//   - Before STARTTLS it copies the dialogue to the debug log, because
//     NewClientStartTLS runs greeting, EHLO and STARTTLS before the caller
//     can set the Client's DebugWriter, and it caps the deadlines go-smtp
//     sets there, which use its own 5 minute default.
//   - It records the first network error, so that callers can tell a dead
//     connection from a reply.
//   - While the final dot is being written it records whether a write came
//     back short: the dot is the last thing written, so a short write proves
//     the server cannot have received it (see Session.Send).
//
// A tapConn is used by one goroutine at a time; only Close may be called
// concurrently (context cancellation closes the connection).
type tapConn struct {
	net.Conn

	preTLS   bool      // STARTTLS mode, before the handshake started
	sentTLS  bool      // "STARTTLS" was written
	ehlo     []byte    // replacement for "EHLO localhost\r\n"; nil: no rewrite
	helo     []byte    // replacement for "HELO localhost\r\n"
	debug    io.Writer // pre-TLS dialogue copy; nil: none
	maxWait  time.Duration
	ioErr    error
	dotPhase bool
	dotShort bool
}

// The exact lines go-smtp writes: one Write per command, since textproto
// flushes its buffer after each line.
const (
	ehloLocalhost = "EHLO localhost\r\n"
	heloLocalhost = "HELO localhost\r\n"
	startTLSLine  = "STARTTLS\r\n"
)

func (c *tapConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if c.preTLS && c.debug != nil && n > 0 {
		c.debug.Write(p[:n])
	}
	if err != nil && c.ioErr == nil {
		c.ioErr = err
	}
	return n, err
}

func (c *tapConn) Write(p []byte) (int, error) {
	q := p
	if c.preTLS {
		if c.sentTLS {
			// The first write after STARTTLS is the TLS ClientHello.
			c.preTLS = false
		} else {
			switch {
			case c.ehlo != nil && string(p) == ehloLocalhost:
				q = c.ehlo
			case c.helo != nil && string(p) == heloLocalhost:
				q = c.helo
			case string(p) == startTLSLine:
				c.sentTLS = true
			}
			if c.debug != nil {
				c.debug.Write(q)
			}
		}
	}
	n, err := c.Conn.Write(q)
	if err != nil {
		if c.ioErr == nil {
			c.ioErr = err
		}
		if c.dotPhase && n < len(q) {
			c.dotShort = true
		}
	}
	if len(q) != len(p) {
		if err == nil {
			n = len(p)
		} else {
			n = 0
		}
	}
	return n, err
}

// SetDeadline caps deadlines at maxWait from now, when set.
func (c *tapConn) SetDeadline(t time.Time) error {
	return c.Conn.SetDeadline(c.capped(t))
}

func (c *tapConn) SetReadDeadline(t time.Time) error {
	return c.Conn.SetReadDeadline(c.capped(t))
}

func (c *tapConn) SetWriteDeadline(t time.Time) error {
	return c.Conn.SetWriteDeadline(c.capped(t))
}

func (c *tapConn) capped(t time.Time) time.Time {
	if c.maxWait > 0 && !t.IsZero() {
		if limit := time.Now().Add(c.maxWait); t.After(limit) {
			return limit
		}
	}
	return t
}
