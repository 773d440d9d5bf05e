// Package address parses the addresses that local programs hand to
// sendmail, in arguments and in header fields, and turns them into
// envelope addresses.
//
// Local callers are not RFC 5322 pedants: cron writes "From: root (Cron
// Daemon)", scripts pass "root" or "a@x,b@y" as one argument, PHP puts
// hundreds of recipients on one To: line, and logwatch repeats To:. The
// parser here is lenient where mail is at stake (a bare local name is an
// address; a group, comment or RFC 2047 display name is understood) and
// strict where injection is (CR, LF and NUL are refused everywhere).
package address

import (
	"errors"
	"fmt"
	"io"
	"mime"
	"net/mail"
	"strings"
	"unicode/utf8"
)

// Address is one mailbox: an optional display name and the address in the
// form it takes on the SMTP envelope (local part quoted when RFC 5321
// requires it, no angle brackets). Addr has no "@" for a bare local name.
type Address struct {
	Name string
	Addr string
}

// Local reports whether a is a bare local name (no domain).
func (a Address) Local() bool { return !strings.Contains(a.Addr, "@") }

// String formats a for a header field.
func (a Address) String() string {
	if a.Name == "" {
		return a.Addr
	}
	return FormatName(a.Name) + " <" + a.Addr + ">"
}

// FormatName formats a display name for a header field: as it is when it is
// plain words, quoted when it holds specials, RFC 2047-encoded when it is
// not ASCII.
func FormatName(n string) string {
	plain := true
	for _, r := range n {
		if r >= 0x80 {
			return mime.QEncoding.Encode("utf-8", n)
		}
		if r != ' ' && !isAtext(r) {
			plain = false
		}
	}
	if plain && strings.TrimSpace(n) == n {
		return n
	}
	return quote(n)
}

// ErrLineBreak is returned for CR, LF or NUL in an address: such bytes could
// inject SMTP commands or header fields.
var ErrLineBreak = errors.New("contains a line break or NUL")

var wordDecoder = &mime.WordDecoder{CharsetReader: func(charset string, input io.Reader) (io.Reader, error) {
	// Display names are only shown in mailq; an unknown charset
	// keeps its encoded-word form rather than failing the message.
	return nil, fmt.Errorf("charset %s", charset)
}}

// ParseList parses a comma-separated address list as found in To, Cc, Bcc,
// From or a sendmail argument. Groups ("Team: a@x, b@y;",
// "undisclosed-recipients:;") contribute their members. An element that is
// not an RFC 5322 address but holds a usable address (a bare name, an
// address with a comment) is taken leniently; an element with nothing
// usable is an error naming it.
func ParseList(s string) ([]Address, error) {
	if strings.ContainsAny(s, "\r\n\x00") {
		// Header values arrive unfolded; any CR/LF left is injection.
		return nil, fmt.Errorf("address list %q: %w", clip(s), ErrLineBreak)
	}
	var out []Address
	for _, elem := range splitTop(s) {
		elem = strings.TrimSpace(elem)
		if elem == "" {
			continue
		}
		a, err := parseOne(elem)
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, nil
}

// Parse parses exactly one address.
func Parse(s string) (Address, error) {
	l, err := ParseList(s)
	if err != nil {
		return Address{}, err
	}
	if len(l) != 1 {
		return Address{}, fmt.Errorf("%q is not a single address", clip(s))
	}
	return l[0], nil
}

func parseOne(elem string) (Address, error) {
	p := mail.AddressParser{WordDecoder: wordDecoder}
	if a, err := p.Parse(elem); err == nil {
		addr, err := envelopeForm(a.Address)
		if err != nil {
			return Address{}, fmt.Errorf("address %q: %w", clip(elem), err)
		}
		return Address{Name: a.Name, Addr: addr}, nil
	}
	// Lenient path: "<addr>" with a display name net/mail refuses,
	// a bare local name, or anything with comments.
	name := ""
	rest := elem
	if i := strings.LastIndex(elem, "<"); i >= 0 {
		j := strings.LastIndex(elem, ">")
		if j < i {
			return Address{}, fmt.Errorf("address %q: unbalanced angle brackets", clip(elem))
		}
		name = strings.Trim(strings.TrimSpace(stripComments(elem[:i])), `"`)
		rest = elem[i+1 : j]
	} else {
		var comment string
		rest, comment = stripCommentsKeep(elem)
		name = comment
	}
	rest = strings.TrimSpace(rest)
	if rest == "" {
		return Address{}, fmt.Errorf("address %q: no address found", clip(elem))
	}
	if strings.ContainsAny(rest, " \t") && !strings.HasPrefix(rest, `"`) {
		return Address{}, fmt.Errorf("address %q: not an address", clip(elem))
	}
	if strings.HasPrefix(rest, "@") || strings.HasSuffix(rest, "@") {
		return Address{}, fmt.Errorf("address %q: empty local part or domain", clip(elem))
	}
	addr, err := envelopeForm(unquoteLocal(rest))
	if err != nil {
		return Address{}, fmt.Errorf("address %q: %w", clip(elem), err)
	}
	if name != "" {
		if d, err := wordDecoder.DecodeHeader(name); err == nil {
			name = d
		}
	}
	return Address{Name: name, Addr: addr}, nil
}

// envelopeForm converts an address as net/mail returns it (local part
// unquoted) into SMTP envelope form: the local part quoted when it is not a
// dot-atom, as RFC 5321 4.1.2 requires.
func envelopeForm(a string) (string, error) {
	if strings.ContainsAny(a, "\r\n\x00") {
		return "", ErrLineBreak
	}
	if !utf8.ValidString(a) {
		return "", errors.New("not valid UTF-8")
	}
	at := strings.LastIndex(a, "@")
	local, domain := a, ""
	if at >= 0 {
		local, domain = a[:at], a[at+1:]
		if !validDomain(domain) {
			return "", fmt.Errorf("bad domain %q", domain)
		}
	}
	if local == "" {
		return "", errors.New("empty local part")
	}
	if strings.ContainsAny(local, "<>") {
		return "", fmt.Errorf("bad local part %q", local)
	}
	if !isDotAtom(local) {
		local = quote(local)
	}
	if at < 0 {
		return local, nil
	}
	return local + "@" + domain, nil
}

// validDomain accepts a host name (UTF-8 allowed) or an address literal
// "[...]" with nothing in it that could end the address or start another.
func validDomain(d string) bool {
	if d == "" {
		return false
	}
	if strings.HasPrefix(d, "[") {
		inner, ok := strings.CutSuffix(d[1:], "]")
		return ok && inner != "" && !strings.ContainsAny(inner, " \t<>()[]\\,;\"@")
	}
	return !strings.ContainsAny(d, " \t<>()[]\\,;:\"@")
}

// unquoteLocal turns `"a b"@x` into `a b@x` so envelopeForm can requote it
// uniformly.
func unquoteLocal(s string) string {
	if !strings.HasPrefix(s, `"`) {
		return s
	}
	end := strings.LastIndex(s, `"`)
	if end <= 0 {
		return s
	}
	inner := s[1:end]
	inner = strings.NewReplacer(`\\`, `\`, `\"`, `"`).Replace(inner)
	return inner + s[end+1:]
}

func quote(local string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range local {
		if r == '"' || r == '\\' {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	b.WriteByte('"')
	return b.String()
}

func isAtext(r rune) bool {
	switch {
	case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		return true
	case r >= 0x80:
		return true // RFC 6532 UTF-8 atext
	}
	return strings.ContainsRune("!#$%&'*+-/=?^_`{|}~", r)
}

func isDotAtom(s string) bool {
	if s == "" || s[0] == '.' || s[len(s)-1] == '.' || strings.Contains(s, "..") {
		return false
	}
	for _, r := range s {
		if r != '.' && !isAtext(r) {
			return false
		}
	}
	return true
}

// splitTop splits an address list at top-level commas, flattening groups:
// commas inside quotes, comments, angle brackets and domain literals do not
// split, and "name:" group openers and ";" closers are dropped.
func splitTop(s string) []string {
	var out []string
	var cur strings.Builder
	depth, inQuote, inAngle, inLit := 0, false, false, false
	flush := func() {
		out = append(out, cur.String())
		cur.Reset()
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case inQuote:
			cur.WriteByte(c)
			if c == '\\' && i+1 < len(s) {
				i++
				cur.WriteByte(s[i])
			} else if c == '"' {
				inQuote = false
			}
			continue
		case depth > 0:
			cur.WriteByte(c)
			if c == '\\' && i+1 < len(s) {
				i++
				cur.WriteByte(s[i])
			} else if c == '(' {
				depth++
			} else if c == ')' {
				depth--
			}
			continue
		}
		switch c {
		case '"':
			inQuote = true
		case '(':
			depth++
		case '<':
			inAngle = true
		case '>':
			inAngle = false
		case '[':
			inLit = true
		case ']':
			inLit = false
		case ',':
			if !inAngle && !inLit {
				flush()
				continue
			}
		case ':':
			// A group opener: "display-name:" outside brackets. Drop
			// the name; the members follow.
			if !inAngle && !inLit {
				cur.Reset()
				continue
			}
		case ';':
			if !inAngle && !inLit {
				flush()
				continue
			}
		}
		cur.WriteByte(c)
	}
	flush()
	return out
}

func stripComments(s string) string {
	r, _ := stripCommentsKeep(s)
	return r
}

// stripCommentsKeep removes (comments) outside quotes and returns the first
// comment's text, which old-style "root (Cron Daemon)" uses as a name.
func stripCommentsKeep(s string) (string, string) {
	var b, c strings.Builder
	depth, inQuote, first := 0, false, ""
	for i := 0; i < len(s); i++ {
		ch := s[i]
		switch {
		case depth > 0:
			if ch == '\\' && i+1 < len(s) {
				i++
				c.WriteByte(s[i])
				continue
			}
			if ch == '(' {
				depth++
			} else if ch == ')' {
				depth--
				if depth == 0 {
					if first == "" {
						first = strings.TrimSpace(c.String())
					}
					c.Reset()
					continue
				}
			}
			c.WriteByte(ch)
		case inQuote:
			b.WriteByte(ch)
			if ch == '\\' && i+1 < len(s) {
				i++
				b.WriteByte(s[i])
			} else if ch == '"' {
				inQuote = false
			}
		case ch == '"':
			inQuote = true
			b.WriteByte(ch)
		case ch == '(':
			depth = 1
		default:
			b.WriteByte(ch)
		}
	}
	return b.String(), first
}

func clip(s string) string {
	if len(s) > 80 {
		return s[:77] + "..."
	}
	return s
}

// Domain returns the domain of addr ("" for a bare local name).
func Domain(addr string) string {
	if i := strings.LastIndex(addr, "@"); i >= 0 {
		return addr[i+1:]
	}
	return ""
}

// LocalPart returns the local part of addr.
func LocalPart(addr string) string {
	if i := strings.LastIndex(addr, "@"); i >= 0 {
		return addr[:i]
	}
	return addr
}

// NeedsUTF8 reports whether addr needs SMTPUTF8 (a non-ASCII byte).
func NeedsUTF8(addr string) bool {
	for i := 0; i < len(addr); i++ {
		if addr[i] >= 0x80 {
			return true
		}
	}
	return false
}
