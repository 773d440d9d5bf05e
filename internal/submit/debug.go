package submit

import (
	"bytes"
	"fmt"
	"io"
	"strings"
)

// dialogue is the DebugWriter given to go-smtp (and the pre-STARTTLS copy
// made by tapConn), whether or not debugging is on. Besides passing the
// stream to the debug log, it notes whether EHLO or HELO has been written,
// which tells a failed greeting from a failed EHLO: go-smtp's Hello does
// both and returns one error. Client commands arrive one per write
// (textproto flushes after each line) and server replies begin with
// digits, so a write beginning "EHLO " is the client's.
type dialogue struct {
	log       *debugLog // nil without Config.Debug
	helloSent bool
}

func (d *dialogue) Write(p []byte) (int, error) {
	if !d.helloSent && (bytes.HasPrefix(p, []byte("EHLO ")) || bytes.HasPrefix(p, []byte("HELO "))) {
		d.helloSent = true
	}
	if d.log != nil {
		d.log.Write(p)
	}
	return len(p), nil
}

// debugLog turns the raw byte stream go-smtp copies to its DebugWriter
// (client writes and server reads, interleaved, undivided) into a readable
// dialogue in the style of sendmail -v: client lines prefixed with ">>> ",
// server replies as they are.
//
// It never prints credentials. go-smtp's DebugWriter shows AUTH exactly as
// sent, so the initial response of "AUTH PLAIN <base64>" would reveal the
// password. After a client line beginning "AUTH", every client line
// (continuations, "*") is replaced by "<redacted>", and so is the payload
// of every 334 challenge (a CRAM-MD5 challenge together with its response
// permits an offline dictionary attack on the password), until the server
// sends a final reply other than 334. Server replies are recognisable
// because they begin with three digits and a space or hyphen, which no
// base64 line can contain.
//
// It does not print the message content either: between the 354 reply and
// the final dot it prints the size instead. The end of the content is
// found exactly, because go-smtp's dot-stuffing (net/textproto's
// DotWriter) guarantees that "\n.\r\n" occurs only as the terminator.
//
// Write always succeeds: go-smtp writes through io.MultiWriter and
// io.TeeReader, so an error here would break the SMTP connection.
type debugLog struct {
	w    io.Writer
	line []byte

	auth bool // inside an AUTH exchange

	data      bool // inside the message content
	dataState int
	dataBytes int64
}

// States of the terminator search in the message content.
const (
	dataMid       = iota // in the middle of a line
	dataLineStart        // just after "\n" (or at the start of the content)
	dataDot              // "." at the start of a line
	dataDotCR            // ".\r" at the start of a line
)

// maxDebugLine bounds the buffer for a line that never ends.
const maxDebugLine = 4096

func newDebugLog(w io.Writer) *debugLog {
	return &debugLog{w: w}
}

func (d *debugLog) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		if d.data {
			p = d.content(p)
			continue
		}
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			d.line = append(d.line, p...)
			if len(d.line) > maxDebugLine {
				d.emit(string(d.line) + " [...]")
				d.line = d.line[:0]
			}
			break
		}
		d.line = append(d.line, p[:i+1]...)
		p = p[i+1:]
		d.emit(string(d.line))
		d.line = d.line[:0]
	}
	return n, nil
}

// beginData is called when the server has accepted DATA with 354: what the
// client writes next is message content.
func (d *debugLog) beginData() {
	d.data = true
	d.dataState = dataLineStart
	d.dataBytes = 0
}

// endData leaves content mode if the terminator was never seen (the
// transfer was aborted).
func (d *debugLog) endData() {
	if d.data {
		d.data = false
		fmt.Fprintf(d.w, ">>> [message content: %d bytes, transfer aborted]\n", d.dataBytes)
	}
}

// note prints a line of the client's own commentary.
func (d *debugLog) note(format string, args ...any) {
	fmt.Fprintf(d.w, "*** "+format+"\n", args...)
}

// content consumes message content up to and including the terminator and
// returns what follows it.
func (d *debugLog) content(p []byte) []byte {
	for i, b := range p {
		d.dataBytes++
		switch {
		case b == '\n' && d.dataState == dataDotCR:
			d.data = false
			fmt.Fprintf(d.w, ">>> [message content: %d bytes]\n>>> .\n", d.dataBytes-3)
			return p[i+1:]
		case b == '\n':
			d.dataState = dataLineStart
		case b == '.' && d.dataState == dataLineStart:
			d.dataState = dataDot
		case b == '\r' && d.dataState == dataDot:
			d.dataState = dataDotCR
		default:
			d.dataState = dataMid
		}
	}
	return nil
}

func (d *debugLog) emit(raw string) {
	l := strings.TrimRight(raw, "\r\n")
	server := isReplyLine(l)
	switch {
	case d.auth && server:
		if strings.HasPrefix(l, "334") {
			l = "334 <redacted>"
		} else if len(l) == 3 || l[3] == ' ' {
			d.auth = false
		}
	case d.auth:
		l = "<redacted>"
	case !server && len(l) >= 4 && strings.EqualFold(l[:4], "AUTH"):
		f := strings.Fields(l)
		if len(f) > 2 {
			l = f[0] + " " + f[1] + " <redacted>"
		}
		d.auth = true
	}
	if !server {
		l = ">>> " + l
	}
	fmt.Fprintln(d.w, l)
}

// isReplyLine reports whether l looks like an SMTP reply line: three digits,
// then the end, a space or a hyphen (RFC 5321 section 4.2).
func isReplyLine(l string) bool {
	if len(l) < 3 {
		return false
	}
	for i := range 3 {
		if l[i] < '0' || l[i] > '9' {
			return false
		}
	}
	return len(l) == 3 || l[3] == ' ' || l[3] == '-'
}
