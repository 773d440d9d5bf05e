// Package dsn writes delivery status notifications (bounces): RFC 3464
// reports inside an RFC 6522 multipart/report, worded like Postfix's.
//
// A notification has three parts:
//  1. text/plain for people: who could not be reached and what the remote
//     server said;
//  2. message/delivery-status for programs: the per-message fields
//     (Reporting-MTA, X-Postie-Queue-ID, X-Postie-Sender,
//     Original-Envelope-Id, Arrival-Date) and one group of per-recipient
//     fields (Final-Recipient, Action, Status, Remote-MTA,
//     Diagnostic-Code, Last-Attempt-Date, Will-Retry-Until) per recipient;
//  3. the original message's header section as text/rfc822-headers
//     (RET=HDRS, the default), or the whole message as message/rfc822
//     (RET=FULL). Either is streamed from the spool: the header section is
//     read line by line, and only up to its end.
//
// The header has From, To (the original envelope sender), Subject,
// Date, Message-ID, Auto-Submitted: auto-replied (RFC 3834, so that
// responders stay quiet), MIME-Version and Content-Type.
//
// Everything that comes from outside (addresses, the server's reply, host
// names, the envelope ID) is cleaned before it is written: CR, LF and other
// control characters become spaces, so a reply such as
// "550 no\r\nAction: delivered" cannot add a field or a line; and the
// delivery-status part is kept US-ASCII as RFC 3464 requires (other octets
// become "?", and a non-ASCII address is written as an RFC 6533 "utf-8"
// address). Long values are folded at spaces; a server reply is cut at
// 4000 octets.
//
// The bounce is written with CRLF line endings, as the spool holds
// messages. It is sent from the null sender and goes through the queue like
// any message, so delivery-time conformance (package conform) applies to it
// too: a long line in a returned original is re-encoded there.
package dsn

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
	"time"
)

// A Recipient is one recipient the notification reports on.
type Recipient struct {
	Address string // the envelope recipient, without angle brackets
	// Action is "failed" or "delayed" (or RFC 3464's "delivered",
	// "relayed", "expanded").
	Action string
	// Status is the RFC 3463 status code, such as "5.1.1". If it is empty
	// or malformed, 5.0.0 is used for "failed", 4.0.0 for "delayed" and
	// 2.0.0 otherwise.
	Status string
	// Diagnostic is "type; text", such as "smtp; 550 5.1.1 no such user".
	// Without a "type;" prefix, the text is reported as "X-Postie; text".
	Diagnostic string
	RemoteMTA  string // the host name of the server that replied, if any
	// LastAttempt and RetryUntil, if not zero, become Last-Attempt-Date
	// and Will-Retry-Until (the latter for "delayed" only).
	LastAttempt time.Time
	RetryUntil  time.Time
}

// A Report describes one notification.
type Report struct {
	ReportingMTA string    // our host name
	QueueID      string    // the original message's queue ID
	ArrivalDate  time.Time // when the original was queued; zero: omitted
	Sender       string    // the original envelope sender, which the notification goes to
	// From is the notification's author address, such as
	// "MAILER-DAEMON@host"; the display name is "Mail Delivery System".
	// Empty: MAILER-DAEMON@ReportingMTA.
	From       string
	Recipients []Recipient
	EnvID      string // the original ENVID, xtext-decoded; empty: omitted
	// Ret is "full" (in any case) to return the whole original; anything
	// else returns its header section, as RET=HDRS does.
	Ret             string
	Now             time.Time // the notification's date
	MessageIDDomain string    // empty: ReportingMTA
}

// maxDiagnostic bounds the server reply quoted in a notification.
const maxDiagnostic = 4000

// Write writes the notification for rep to w, returning original's header
// section, or all of original for RET=FULL. original may be nil: the third
// part is then left out.
func Write(w io.Writer, rep *Report, original io.Reader) error {
	if err := rep.check(); err != nil {
		return err
	}
	boundary, err := newBoundary()
	if err != nil {
		return err
	}
	bw := bufio.NewWriter(w)
	full := strings.EqualFold(rep.Ret, "full")
	delayOnly := rep.delayOnly()
	host := clean(rep.ReportingMTA)

	// The header.
	from := clean(rep.From)
	if from == "" {
		from = "MAILER-DAEMON@" + host
	}
	subject := "Undelivered Mail Returned to Sender"
	if delayOnly {
		subject = "Delayed Mail (still being retried)"
	}
	msgIDDomain := clean(rep.MessageIDDomain)
	if msgIDDomain == "" {
		msgIDDomain = host
	}
	writeField(bw, "From", "Mail Delivery System <"+from+">")
	writeField(bw, "To", "<"+bare(rep.Sender)+">")
	writeField(bw, "Subject", subject)
	writeField(bw, "Date", rep.Now.Format(time.RFC1123Z))
	writeField(bw, "Message-ID", "<"+rep.messageID(delayOnly)+"@"+msgIDDomain+">")
	writeField(bw, "Auto-Submitted", "auto-replied")
	writeField(bw, "MIME-Version", "1.0")
	writeField(bw, "Content-Type", `multipart/report; report-type=delivery-status; boundary="`+boundary+`"`)
	// The returned original may be 8-bit.
	writeField(bw, "Content-Transfer-Encoding", "8bit")
	bw.WriteString("\r\nThis is a MIME-encapsulated message.\r\n\r\n--" + boundary + "\r\n")

	// 1: for people.
	text := rep.humanText(host, full, delayOnly)
	writeField(bw, "Content-Description", "Notification")
	if isASCII(text) {
		writeField(bw, "Content-Type", "text/plain; charset=us-ascii")
	} else {
		writeField(bw, "Content-Type", "text/plain; charset=utf-8")
		writeField(bw, "Content-Transfer-Encoding", "8bit")
	}
	bw.WriteString("\r\n" + text + "\r\n--" + boundary + "\r\n")

	// 2: for programs.
	writeField(bw, "Content-Description", "Delivery report")
	writeField(bw, "Content-Type", "message/delivery-status")
	bw.WriteString("\r\n")
	writeField(bw, "Reporting-MTA", "dns; "+ascii(host))
	if rep.QueueID != "" {
		writeField(bw, "X-Postie-Queue-ID", ascii(clean(rep.QueueID)))
	}
	writeField(bw, "X-Postie-Sender", addressField(rep.Sender))
	if rep.EnvID != "" {
		writeField(bw, "Original-Envelope-Id", ascii(clean(rep.EnvID)))
	}
	if !rep.ArrivalDate.IsZero() {
		writeField(bw, "Arrival-Date", rep.ArrivalDate.Format(time.RFC1123Z))
	}
	for _, r := range rep.Recipients {
		bw.WriteString("\r\n")
		writeField(bw, "Final-Recipient", addressField(r.Address))
		writeField(bw, "Action", strings.ToLower(r.Action))
		writeField(bw, "Status", r.status())
		if r.RemoteMTA != "" {
			writeField(bw, "Remote-MTA", "dns; "+ascii(clean(r.RemoteMTA)))
		}
		if r.Diagnostic != "" {
			typ, txt := r.diagnostic()
			writeField(bw, "Diagnostic-Code", typ+"; "+ascii(txt))
		}
		if !r.LastAttempt.IsZero() {
			writeField(bw, "Last-Attempt-Date", r.LastAttempt.Format(time.RFC1123Z))
		}
		if !r.RetryUntil.IsZero() && strings.EqualFold(r.Action, "delayed") {
			writeField(bw, "Will-Retry-Until", r.RetryUntil.Format(time.RFC1123Z))
		}
	}

	// 3: the original.
	if original != nil {
		bw.WriteString("\r\n--" + boundary + "\r\n")
		if full {
			writeField(bw, "Content-Description", "Undelivered Message")
			writeField(bw, "Content-Type", "message/rfc822")
		} else {
			desc := "Undelivered Message Headers"
			if delayOnly {
				desc = "Delayed Message Headers"
			}
			writeField(bw, "Content-Description", desc)
			writeField(bw, "Content-Type", "text/rfc822-headers")
		}
		writeField(bw, "Content-Transfer-Encoding", "8bit")
		bw.WriteString("\r\n")
		if err := copyOriginal(bw, original, full); err != nil {
			return err
		}
	}
	bw.WriteString("\r\n--" + boundary + "--\r\n")
	return bw.Flush()
}

func (rep *Report) check() error {
	switch {
	case clean(rep.ReportingMTA) == "":
		return errors.New("dsn: no reporting MTA")
	case bare(rep.Sender) == "":
		return errors.New("dsn: no sender to notify (a bounce never goes to the null sender)")
	case len(rep.Recipients) == 0:
		return errors.New("dsn: no recipients to report on")
	}
	for _, r := range rep.Recipients {
		switch strings.ToLower(r.Action) {
		case "failed", "delayed", "delivered", "relayed", "expanded":
		default:
			return fmt.Errorf("dsn: recipient <%s>: bad action %q", clean(r.Address), r.Action)
		}
		if bare(r.Address) == "" {
			return errors.New("dsn: recipient without an address")
		}
	}
	return nil
}

// delayOnly reports whether the notification is a delay warning: no
// recipient failed.
func (rep *Report) delayOnly() bool {
	for _, r := range rep.Recipients {
		if !strings.EqualFold(r.Action, "delayed") {
			return false
		}
	}
	return true
}

// messageID returns the left part of the notification's Message-ID: the
// time, the queue ID and 48 random bits, since one message can fail in two
// attempts within a second, and receivers drop a second message with a
// Message-ID they have seen.
func (rep *Report) messageID(delay bool) string {
	id := ascii(clean(rep.QueueID))
	id = strings.Map(func(r rune) rune {
		if strings.ContainsRune(`()<>[]:;@\,". `, r) {
			return '_'
		}
		return r
	}, id)
	if id == "" {
		b := make([]byte, 8)
		rand.Read(b)
		id = hex.EncodeToString(b)
	}
	kind := "bounce"
	if delay {
		kind = "delay"
	}
	r := make([]byte, 6)
	rand.Read(r)
	return rep.Now.UTC().Format("20060102150405") + "." + id + "." + hex.EncodeToString(r) + "." + kind
}

// newBoundary returns a random boundary. "=_" cannot occur in
// quoted-printable or base64 text, and 128 random bits in text that a user
// wrote.
func newBoundary() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return "=_postie_" + hex.EncodeToString(b), nil
}

var statusRE = regexp.MustCompile(`^[245]\.[0-9]{1,3}\.[0-9]{1,3}$`)

func (r *Recipient) status() string {
	s := strings.TrimSpace(r.Status)
	if statusRE.MatchString(s) {
		return s
	}
	switch strings.ToLower(r.Action) {
	case "failed":
		return "5.0.0"
	case "delayed":
		return "4.0.0"
	}
	return "2.0.0"
}

var diagTypeRE = regexp.MustCompile(`^([A-Za-z][A-Za-z0-9-]*)\s*;\s*`)

// diagnostic splits Diagnostic into its type and text, cleaned.
func (r *Recipient) diagnostic() (typ, text string) {
	d := clean(r.Diagnostic)
	typ = "X-Postie"
	if m := diagTypeRE.FindStringSubmatch(d); m != nil {
		typ, d = m[1], d[len(m[0]):]
	}
	if len(d) > maxDiagnostic {
		d = strings.ToValidUTF8(d[:maxDiagnostic], "") + " [...]"
	}
	return typ, d
}

// humanText returns the text/plain part, with CRLF line endings.
func (rep *Report) humanText(host string, full, delayOnly bool) string {
	var b strings.Builder
	b.WriteString("This is the mail system at host " + host + ".\n\n")
	if delayOnly {
		b.WriteString("####################################################################\n" +
			"# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #\n" +
			"####################################################################\n\n")
		if !rep.ArrivalDate.IsZero() {
			h := int(rep.Now.Sub(rep.ArrivalDate).Hours())
			fmt.Fprintf(&b, "Your message could not be delivered for more than %d hour(s).\n", h)
		} else {
			b.WriteString("Your message could not be delivered yet.\n")
		}
		if until := rep.retryUntil(); !until.IsZero() {
			b.WriteString("It will be retried until " + until.Format(time.RFC1123Z) + ".\n")
		}
	} else {
		b.WriteString("I'm sorry to have to inform you that your message could not\n" +
			"be delivered to one or more recipients. ")
		if full {
			b.WriteString("It's attached below.\n")
		} else {
			b.WriteString("Its header is attached below.\n")
		}
	}
	b.WriteString("\nFor further assistance, please send mail to postmaster.\n\n" +
		"If you do so, please include this problem report. You can\n" +
		"delete your own text from the attached returned message.\n\n" +
		"                   The mail system\n")
	for _, r := range rep.Recipients {
		line := "<" + bare(r.Address) + ">: "
		_, diag := r.diagnostic()
		switch {
		case r.RemoteMTA != "" && diag != "":
			line += "host " + clean(r.RemoteMTA) + " said: " + diag
		case diag != "":
			line += diag
		case strings.EqualFold(r.Action, "delayed"):
			line += "delivery temporarily suspended"
		default:
			line += "undeliverable"
		}
		if strings.EqualFold(r.Action, "delayed") && r.Diagnostic != "" {
			line += " (still being retried)"
		}
		b.WriteString("\n")
		wrap(&b, line, 76, "    ")
	}
	return strings.ReplaceAll(b.String(), "\n", "\r\n")
}

// retryUntil returns the latest Will-Retry-Until of the recipients.
func (rep *Report) retryUntil() time.Time {
	var t time.Time
	for _, r := range rep.Recipients {
		if r.RetryUntil.After(t) {
			t = r.RetryUntil
		}
	}
	return t
}

// wrap writes s in lines of at most width octets where the words allow,
// continuation lines indented. A word over maxWord octets is split.
func wrap(b *strings.Builder, s string, width int, indent string) {
	var words []string
	for _, w := range strings.Fields(s) {
		for len(w) > maxWord {
			words = append(words, w[:maxWord])
			w = w[maxWord:]
		}
		words = append(words, w)
	}
	col := 0
	for i, word := range words {
		switch {
		case i == 0:
		case col+1+len(word) > width:
			b.WriteString("\n" + indent)
			col = len(indent)
		default:
			b.WriteByte(' ')
			col++
		}
		b.WriteString(word)
		col += len(word)
	}
	b.WriteString("\n")
}

// maxWord is the longest run without a space writeField keeps on one line.
const maxWord = 900

// writeField writes a header or delivery-status field, folding it at
// spaces to 78 columns where the words allow. A word over maxWord octets
// (a reply without spaces) is split, which adds a space to it once
// unfolded: better than a line SMTP cannot carry.
func writeField(w *bufio.Writer, name, value string) {
	w.WriteString(name + ":")
	col := len(name) + 1
	for _, word := range strings.Fields(value) {
		for len(word) > maxWord {
			w.WriteString("\r\n " + word[:maxWord])
			col = 1 + maxWord
			word = word[maxWord:]
		}
		if col+1+len(word) > 78 && col > len(name)+1 {
			w.WriteString("\r\n")
			col = 0
		}
		w.WriteString(" " + word)
		col += 1 + len(word)
	}
	w.WriteString("\r\n")
}

// clean makes s safe in a header field: control characters (CR and LF
// above all) become spaces, invalid UTF-8 becomes "?", and runs of white
// space become one space.
func clean(s string) string {
	s = strings.ToValidUTF8(s, "?")
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return ' '
		}
		return r
	}, s)
	return strings.Join(strings.Fields(s), " ")
}

// bare returns an address cleaned, without angle brackets.
func bare(addr string) string {
	addr = clean(addr)
	if strings.HasPrefix(addr, "<") && strings.HasSuffix(addr, ">") {
		addr = strings.TrimSpace(addr[1 : len(addr)-1])
	}
	return addr
}

// ascii replaces what is not printable US-ASCII by "?", for the
// delivery-status part.
func ascii(s string) string {
	return strings.Map(func(r rune) rune {
		if r > 0x7e {
			return '?'
		}
		return r
	}, s)
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// addressField returns an address as a delivery-status field value:
// "rfc822; addr", or for a non-ASCII address RFC 6533's
// "utf-8; addr" with \x{HEX} escapes.
func addressField(addr string) string {
	addr = bare(addr)
	if isASCII(addr) {
		return "rfc822; " + addr
	}
	var b strings.Builder
	for _, r := range addr {
		if r > 0x20 && r < 0x7f && r != '+' && r != '=' && r != '\\' {
			b.WriteRune(r)
		} else {
			fmt.Fprintf(&b, `\x{%X}`, r)
		}
	}
	return "utf-8; " + b.String()
}

// copyOriginal streams the original: its header section only (up to the
// empty line, which is left out), or all of it. It ends it with CRLF.
func copyOriginal(w *bufio.Writer, original io.Reader, full bool) error {
	br := bufio.NewReaderSize(original, 32<<10)
	atStart, last := true, byte('\n')
	for {
		line, err := br.ReadSlice('\n')
		if !full && atStart && (string(line) == "\r\n" || string(line) == "\n") {
			break // the end of the header section
		}
		if len(line) > 0 {
			if _, werr := w.Write(line); werr != nil {
				return werr
			}
			last = line[len(line)-1]
			atStart = last == '\n'
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("dsn: reading the original: %w", err)
		}
	}
	if last != '\n' {
		w.WriteString("\r\n")
	}
	return nil
}
