package conform

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"io"
	"mime"
	"mime/quotedprintable"
	"strings"

	"github.com/emersion/go-message/textproto"
)

// entityKind says how an entity's header is read.
type entityKind int

const (
	kindMessage    entityKind = iota // a message: top-level, or inside message/rfc822
	kindPart                         // a part of a multipart
	kindDigestPart                   // a part of a multipart/digest: message/rfc822 by default
)

// walker streams a normalized message (CRLF lines only) from r to w,
// re-encoding what needs it.
type walker struct {
	r   *bufio.Reader
	w   *bufio.Writer
	f   Facts
	mid bool   // the last chunk read did not end its line
	hdr []byte // the header section being read, reused
	la  bytes.Buffer
}

// A chunk is a line, or a piece of a line longer than the read buffer. b is
// valid until the next read.
type chunk struct {
	b     []byte
	start bool // b starts a line
	end   bool // b ends a line
	eof   bool
}

func (c chunk) whole() bool { return c.start && c.end }

// long reports whether c is part of a line over MaxLineLen octets.
func (c chunk) long() bool { return !c.whole() || contentLen(c.b) > MaxLineLen }

func (c chunk) blank() bool { return c.whole() && contentLen(c.b) == 0 }

// contentLen is the length of line without its line ending.
func contentLen(line []byte) int {
	return len(trimEOL(line))
}

func trimEOL(line []byte) []byte {
	line = bytes.TrimSuffix(line, []byte{'\n'})
	return bytes.TrimSuffix(line, []byte{'\r'})
}

func (wk *walker) next() (chunk, error) {
	b, err := wk.r.ReadSlice('\n')
	c := chunk{b: b, start: !wk.mid}
	switch err {
	case nil:
		c.end = true
	case bufio.ErrBufferFull:
	case io.EOF:
		if len(b) == 0 {
			c.eof = true
			return c, nil
		}
		c.end = true // unterminated last line; the normReader does not produce one
	default:
		return c, err
	}
	wk.mid = !c.end
	return c, nil
}

// A term is what ended an entity: the end of the input, or the delimiter
// line of the multipart at stack[idx].
type term struct {
	eof   bool
	idx   int
	close bool
	line  []byte
}

// delimiter reports whether line (without its line ending) is a boundary
// delimiter of one of the multiparts in stack, innermost first (RFC 2046
// section 5.1.1).
func delimiter(line []byte, stack [][]byte) (idx int, close, ok bool) {
	if len(stack) == 0 || !bytes.HasPrefix(line, []byte("--")) {
		return 0, false, false
	}
	for i := len(stack) - 1; i >= 0; i-- {
		rest, found := bytes.CutPrefix(line[2:], stack[i])
		if !found {
			continue
		}
		rest, close = bytes.CutPrefix(rest, []byte("--"))
		if len(bytes.TrimLeft(rest, " \t")) == 0 {
			return i, close, true
		}
	}
	return 0, false, false
}

func (wk *walker) delim(c chunk, stack [][]byte) (term, bool) {
	if !c.whole() {
		return term{}, false
	}
	idx, close, ok := delimiter(trimEOL(c.b), stack)
	if !ok {
		return term{}, false
	}
	return term{idx: idx, close: close, line: bytes.Clone(c.b)}, true
}

// body passes each chunk up to the end of the current entity to fn.
func (wk *walker) body(stack [][]byte, fn func(chunk) error) (term, error) {
	for {
		c, err := wk.next()
		if err != nil {
			return term{}, err
		}
		if c.eof {
			return term{eof: true}, nil
		}
		if t, ok := wk.delim(c, stack); ok {
			return t, nil
		}
		if err := fn(c); err != nil {
			return term{}, err
		}
	}
}

// copyBody copies the rest of the current entity to w.
func (wk *walker) copyBody(stack [][]byte, w io.Writer) (term, error) {
	return wk.body(stack, func(c chunk) error {
		_, err := w.Write(c.b)
		return err
	})
}

// entity copies one entity (header and body), which ends at a delimiter of
// a multipart in stack or at the end of the input.
func (wk *walker) entity(stack [][]byte, kind entityKind, depth int) (term, error) {
	hdr := wk.hdr[:0]
	var t term
	ended, overflow := false, false
	for {
		c, err := wk.next()
		if err != nil {
			return t, err
		}
		if c.eof {
			t.eof = true
			break
		}
		if d, ok := wk.delim(c, stack); ok {
			t = d
			break
		}
		hdr = append(hdr, c.b...)
		if c.blank() {
			ended = true
			break
		}
		if len(hdr) > maxHeaderSize {
			overflow = true
			break
		}
	}
	wk.hdr = hdr

	var h textproto.Header
	malformed := overflow || depth > maxDepth
	if !malformed {
		var err error
		h, err = textproto.ReadHeader(bufio.NewReader(bytes.NewReader(hdr)))
		malformed = err != nil
	}
	if malformed {
		sp := newSplitter(wk.w)
		if _, err := sp.Write(hdr); err != nil {
			return t, err
		}
		if !ended && !overflow {
			return t, nil
		}
		return wk.copyBody(stack, sp)
	}
	if !ended {
		return t, wk.writeHeader(hdr, nil)
	}

	mt, params := mediaType(h, kind)
	cte := strings.ToLower(strings.TrimSpace(h.Get("Content-Transfer-Encoding")))
	identity := cte == "" || cte == "7bit" || cte == "8bit" || cte == "binary"
	switch {
	case identity && strings.HasPrefix(mt, "multipart/") && params["boundary"] != "":
		if err := wk.writeHeader(hdr, nil); err != nil {
			return t, err
		}
		return wk.multipart(stack, []byte(params["boundary"]), mt == "multipart/digest", depth)
	case identity && (mt == "message/rfc822" || mt == "message/global"):
		if err := wk.writeHeader(hdr, nil); err != nil {
			return t, err
		}
		return wk.entity(stack, kindMessage, depth+1)
	case cte == "base64":
		if err := wk.writeHeader(hdr, nil); err != nil {
			return t, err
		}
		return wk.rewrap(stack, &lineWrapper{w: wk.w, width: 76, brk: crlf})
	case cte == "quoted-printable":
		if err := wk.writeHeader(hdr, nil); err != nil {
			return t, err
		}
		return wk.rewrap(stack, &qpRewrapper{w: &qpGuard{w: wk.w, stack: stack}})
	case !identity || strings.HasPrefix(mt, "multipart/") ||
		mt == "message/partial" || mt == "message/external-body":
		if err := wk.writeHeader(hdr, nil); err != nil {
			return t, err
		}
		return wk.copyBody(stack, newSplitter(wk.w))
	}
	text := strings.HasPrefix(mt, "text/") || strings.HasPrefix(mt, "message/")
	return wk.leaf(stack, h, kind, text)
}

// mediaType returns the media type of an entity, lower case, with
// RFC 2045 section 5.2's default for a missing or invalid Content-Type.
func mediaType(h textproto.Header, kind entityKind) (string, map[string]string) {
	if !h.Has("Content-Type") {
		if kind == kindDigestPart {
			return "message/rfc822", nil
		}
		return "text/plain", nil
	}
	mt, params, err := mime.ParseMediaType(h.Get("Content-Type"))
	if err != nil && err != mime.ErrInvalidMediaParameter {
		return "text/plain", nil
	}
	return mt, params
}

// multipart copies the body of a multipart entity whose header has been
// written.
func (wk *walker) multipart(stack [][]byte, boundary []byte, digest bool, depth int) (term, error) {
	inner := append(stack[:len(stack):len(stack)], boundary)
	me := len(inner) - 1
	kind := kindPart
	if digest {
		kind = kindDigestPart
	}
	t, err := wk.copyBody(inner, newSplitter(wk.w)) // the preamble
	for {
		if err != nil || t.eof || t.idx != me {
			return t, err
		}
		if _, err := wk.w.Write(t.line); err != nil {
			return t, err
		}
		if t.close {
			break
		}
		t, err = wk.entity(inner, kind, depth+1)
	}
	// The epilogue, up to the end of the enclosing entity.
	return wk.copyBody(stack, newSplitter(wk.w))
}

// rewrap copies the body of a base64 or quoted-printable leaf, passing its
// long lines through w.
func (wk *walker) rewrap(stack [][]byte, w io.Writer) (term, error) {
	long := false
	return wk.body(stack, func(c chunk) error {
		if c.start {
			long = c.long()
		}
		var err error
		if long {
			_, err = w.Write(c.b)
		} else {
			_, err = wk.w.Write(c.b)
		}
		return err
	})
}

// leaf copies the body of a leaf in 7bit, 8bit or binary, re-encoding it if
// it has a long line, or is too long to tell.
func (wk *walker) leaf(stack [][]byte, h textproto.Header, kind entityKind, text bool) (term, error) {
	hdr := wk.hdr
	wk.la.Reset()
	var t term
	encode := false
	for {
		c, err := wk.next()
		if err != nil {
			return t, err
		}
		if c.eof {
			t.eof = true
			break
		}
		if d, ok := wk.delim(c, stack); ok {
			t = d
			break
		}
		wk.la.Write(c.b)
		if c.long() || wk.la.Len() > maxLookahead {
			encode = true
			break
		}
	}
	if !encode {
		if err := wk.writeHeader(hdr, nil); err != nil {
			return t, err
		}
		_, err := wk.w.Write(wk.la.Bytes())
		return t, err
	}

	edit := &headerEdit{cte: "base64"}
	if text {
		edit.cte = "quoted-printable"
	}
	if kind == kindMessage {
		if !h.Has("Mime-Version") {
			edit.add = append(edit.add, "MIME-Version: 1.0")
		}
		if !h.Has("Content-Type") {
			edit.add = append(edit.add, "Content-Type: text/plain; charset="+wk.charset())
		}
	}
	if err := wk.writeHeader(hdr, edit); err != nil {
		return t, err
	}
	tw := &tailWriter{w: wk.w}
	enc := &encoder{tail: tw}
	if text {
		enc.guard = &qpGuard{w: tw, stack: stack}
		enc.enc = quotedprintable.NewWriter(enc.guard)
	} else {
		enc.enc = base64.NewEncoder(base64.StdEncoding, &lineWrapper{w: tw, width: 76, brk: crlf})
	}
	if err := enc.write(wk.la.Bytes()); err != nil {
		return t, err
	}
	t, err := wk.body(stack, func(c chunk) error { return enc.write(c.b) })
	if err != nil {
		return t, err
	}
	return t, enc.finish(t.eof)
}

func (wk *walker) charset() string {
	switch {
	case !wk.f.EightBit:
		return "us-ascii"
	case wk.f.UTF8:
		return "utf-8"
	}
	return "unknown-8bit"
}

// A headerEdit says how writeHeader changes a header: Content-Transfer-Encoding
// becomes cte, and the fields in add are added at the end.
type headerEdit struct {
	cte string
	add []string
}

// writeHeader writes a header section, field by field, folding lines over
// MaxLineLen where it can, and applying e if it is not nil.
func (wk *walker) writeHeader(hdr []byte, e *headerEdit) error {
	replaced := false
	for len(hdr) > 0 {
		end := lineEnd(hdr, 0)
		if contentLen(hdr[:end]) == 0 { // the empty line that ends the section
			if e != nil {
				for _, f := range e.add {
					wk.w.WriteString(f + "\r\n")
				}
				if !replaced {
					wk.w.WriteString("Content-Transfer-Encoding: " + e.cte + "\r\n")
				}
			}
			wk.w.Write(hdr[:end])
			hdr = hdr[end:]
			continue
		}
		for end < len(hdr) && (hdr[end] == ' ' || hdr[end] == '\t') {
			end = lineEnd(hdr, end)
		}
		field := hdr[:end]
		hdr = hdr[end:]
		if e != nil && isField(field, "Content-Transfer-Encoding") {
			if !replaced {
				wk.w.WriteString("Content-Transfer-Encoding: " + e.cte + "\r\n")
				replaced = true
			}
			continue
		}
		for len(field) > 0 {
			end := lineEnd(field, 0)
			writeFolded(wk.w, field[:end])
			field = field[end:]
		}
	}
	_, err := wk.w.Write(nil) // the bufio.Writer's error, if any
	return err
}

// lineEnd returns the index just past the line of b that starts at i.
func lineEnd(b []byte, i int) int {
	if k := bytes.IndexByte(b[i:], '\n'); k >= 0 {
		return i + k + 1
	}
	return len(b)
}

func isField(field []byte, name string) bool {
	k, _, ok := bytes.Cut(field, []byte(":"))
	return ok && strings.EqualFold(string(bytes.TrimRight(k, " \t")), name)
}

// writeFolded writes a header line, folded at white space if it is longer
// than MaxLineLen and folding can make every line short enough. A line
// folding cannot fix is left as it is, since breaking it elsewhere would
// change the field's value.
func writeFolded(w *bufio.Writer, line []byte) {
	l := trimEOL(line)
	if len(l) <= MaxLineLen || !canFold(l) {
		w.Write(line)
		return
	}
	for len(l) > MaxLineLen {
		i := foldPoint(l)
		w.Write(l[:i])
		w.Write(crlf)
		l = l[i:]
	}
	w.Write(l)
	w.Write(line[len(trimEOL(line)):])
}

// canFold reports whether folding l makes all its lines MaxLineLen octets
// or shorter.
func canFold(l []byte) bool {
	for len(l) > MaxLineLen {
		i := foldPoint(l)
		if i < 0 {
			return false
		}
		l = l[i:]
	}
	return true
}

// foldPoint returns where to fold a header line l (without its line
// ending): the last index i <= MaxLineLen at which l[i] is white space,
// l[i-1] is not, and something other than white space follows, so that
// neither line is white space only (RFC 5322 section 3.2.2). It returns -1
// if there is none.
func foldPoint(l []byte) int {
	last := len(l) - 1 // the last octet that is not white space
	for last >= 0 && isWSP(l[last]) {
		last--
	}
	for i := min(MaxLineLen, last-1); i >= 1; i-- {
		if isWSP(l[i]) && !isWSP(l[i-1]) {
			return i
		}
	}
	return -1
}

func isWSP(b byte) bool { return b == ' ' || b == '\t' }
