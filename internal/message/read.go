// Package message reads a message the way local programs hand it to
// sendmail, and writes it out normalized for the spool.
//
// Input may use LF, CRLF or both; it may start with a Unix "From " line,
// lack a final newline, have no body or no header section at all, and carry
// 8-bit bytes, bare CRs or NULs in the body. All of that is accepted: cron
// passes job output byte for byte, and refusing it would lose the mail. The
// header section is parsed into a go-message textproto.Header, which keeps
// each field's raw bytes and order, so only fields Postie changes are
// rewritten. The body is streamed, never held in memory, with line endings
// normalized to CRLF.
package message

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"

	"github.com/emersion/go-message/textproto"
)

// MaxHeaderSize bounds the header section; beyond it the input is not mail.
const MaxHeaderSize = 1 << 20

// MaxLineLength is RFC 5322's limit on a line, without its CRLF.
const MaxLineLength = 998

// Options says how the input ends.
type Options struct {
	// DotEnds makes a line holding a lone "." end the message, and
	// removes the first dot of a line starting with "..": sendmail's
	// behaviour without -i/-oi.
	DotEnds bool
	// MaxSize bounds the whole message (0: no limit).
	MaxSize int64
}

// DataError is input that cannot be mail; sendmail exits 65 (EX_DATAERR).
type DataError struct{ Msg string }

func (e *DataError) Error() string { return e.Msg }

// ErrTooBig is returned when the message exceeds Options.MaxSize.
var ErrTooBig = errors.New("message exceeds the size limit")

// Reader reads one message.
type Reader struct {
	br   *bufio.Reader
	opts Options
	// pending is a line read while looking for the end of the header
	// section that belongs to the body.
	pending []byte
	// ended is set once a lone "." was seen (DotEnds).
	ended bool
	// HasHeader reports whether the input had a header section.
	HasHeader bool
	n         int64
}

// NewReader returns a Reader of r.
func NewReader(r io.Reader, opts Options) *Reader {
	return &Reader{br: bufio.NewReaderSize(r, 64<<10), opts: opts}
}

// readLine returns the next line including its line ending (if any),
// after dot processing. ok is false at the end of the message.
func (r *Reader) readLine(limit int) (line []byte, ok bool, err error) {
	if r.ended {
		return nil, false, nil
	}
	var buf []byte
	for {
		chunk, err := r.br.ReadSlice('\n')
		buf = append(buf, chunk...)
		if len(buf) > limit {
			return nil, false, &DataError{Msg: fmt.Sprintf("header section exceeds %d bytes", MaxHeaderSize)}
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err == io.EOF {
			if len(buf) == 0 {
				return nil, false, nil
			}
			break
		}
		if err != nil {
			return nil, false, fmt.Errorf("read message: %w", err)
		}
		break
	}
	if r.opts.DotEnds && len(buf) > 0 && buf[0] == '.' {
		content := bytes.TrimRight(buf, "\r\n")
		if len(content) == 1 {
			r.ended = true
			return nil, false, nil
		}
		if len(content) > 1 && content[1] == '.' {
			buf = buf[1:]
		}
	}
	return buf, true, nil
}

// ReadHeader reads the header section. A first line "From ..." (a Unix
// mailbox separator) is dropped. The section ends at an empty line, or at
// the first line that is neither a header field nor a continuation, which
// then starts the body. Input with no header field at all has no header
// section: all of it is body and HasHeader is false.
func (r *Reader) ReadHeader() (textproto.Header, error) {
	var raw bytes.Buffer
	first := true
	fields := 0
	for {
		remaining := MaxHeaderSize - raw.Len()
		line, ok, err := r.readLine(remaining)
		if err != nil {
			return textproto.Header{}, err
		}
		if !ok {
			break
		}
		if first && bytes.HasPrefix(line, []byte("From ")) {
			first = false
			continue
		}
		first = false
		content := bytes.TrimRight(line, "\r\n")
		if len(content) == 0 && len(line) > 0 {
			break // the empty line separating header and body
		}
		isCont := fields > 0 && (content[0] == ' ' || content[0] == '\t')
		if !isCont && !isField(content) {
			r.pending = line
			break
		}
		if bytes.IndexByte(content, 0) >= 0 {
			return textproto.Header{}, &DataError{Msg: "NUL byte in the header section"}
		}
		if bytes.IndexByte(content, '\r') >= 0 {
			// A bare CR inside a header field could smuggle a line
			// break past a parser downstream; make it a space.
			content = bytes.ReplaceAll(content, []byte("\r"), []byte(" "))
		}
		if !isCont {
			fields++
		}
		raw.Write(content)
		raw.WriteString("\r\n")
	}
	if fields == 0 {
		return textproto.Header{}, nil
	}
	r.HasHeader = true
	raw.WriteString("\r\n")
	h, err := textproto.ReadHeader(bufio.NewReader(&raw))
	if err != nil {
		return textproto.Header{}, &DataError{Msg: fmt.Sprintf("header section: %v", err)}
	}
	return h, nil
}

// isField reports whether line starts a header field: a name of printable
// ASCII other than ":" and space, then ":".
func isField(line []byte) bool {
	i := bytes.IndexByte(line, ':')
	if i <= 0 {
		return false
	}
	for _, c := range line[:i] {
		if c <= ' ' || c > '~' {
			return false
		}
	}
	return true
}

// WriteBody copies the body to w with CRLF line endings, ending with a
// CRLF. Bare CRs and NULs are kept as they came (delivery makes them
// conformant; see internal/conform). It counts toward Options.MaxSize
// together with already (the header's size).
func (r *Reader) WriteBody(w io.Writer, already int64) (int64, error) {
	bw := bufio.NewWriterSize(w, 64<<10)
	r.n = already
	var written int64
	atLineStart := true
	lastCR := false
	emit := func(p []byte) error {
		n, err := bw.Write(p)
		written += int64(n)
		r.n += int64(n)
		if r.opts.MaxSize > 0 && r.n > r.opts.MaxSize {
			return ErrTooBig
		}
		return err
	}
	// process writes one chunk of a line; ReadSlice ends a chunk at
	// its first LF, so a LF can only be the chunk's last byte.
	process := func(chunk []byte) error {
		if len(chunk) == 0 {
			return nil
		}
		if chunk[len(chunk)-1] != '\n' {
			atLineStart = false
			lastCR = chunk[len(chunk)-1] == '\r'
			return emit(chunk)
		}
		// Normalize the line ending: CRLF whatever came.
		crlf := len(chunk) >= 2 && chunk[len(chunk)-2] == '\r' || len(chunk) == 1 && lastCR
		atLineStart, lastCR = true, false
		if crlf {
			return emit(chunk)
		}
		if err := emit(chunk[:len(chunk)-1]); err != nil {
			return err
		}
		return emit([]byte("\r\n"))
	}
	if r.pending != nil {
		if err := process(r.pending); err != nil {
			return written, err
		}
		r.pending = nil
	}
	for !r.ended {
		chunk, err := r.br.ReadSlice('\n')
		if len(chunk) > 0 {
			if atLineStart && r.opts.DotEnds && chunk[0] == '.' {
				// A full line is needed to judge "." vs ".x": the
				// chunk holds the whole line unless it exceeds the
				// buffer, which a lone dot cannot.
				content := bytes.TrimRight(chunk, "\r\n")
				if len(content) == 1 && (err == nil || err == io.EOF) {
					r.ended = true
					break
				}
				if len(content) > 1 && content[1] == '.' {
					chunk = chunk[1:]
				}
			}
			if perr := process(chunk); perr != nil {
				return written, perr
			}
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return written, fmt.Errorf("read message: %w", err)
		}
	}
	if !atLineStart {
		// No final newline (fail2ban, cron output): add one. A
		// dangling CR becomes part of it.
		end := "\r\n"
		if lastCR {
			end = "\n"
		}
		if err := emit([]byte(end)); err != nil {
			return written, err
		}
	}
	if err := bw.Flush(); err != nil {
		return written, err
	}
	return written, nil
}
