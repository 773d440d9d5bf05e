package submit

import (
	"errors"
	"fmt"
	"strings"

	"github.com/emersion/go-smtp"
)

// Steps of a submission, as recorded in Error.Step. They name the SMTP
// stage at which a session or a transaction failed, as Postfix's "(in reply
// to RCPT TO command)" does.
const (
	StepConfig  = "config"  // Config or Message is invalid; nothing was sent
	StepConnect = "connect" // TCP connection, the 220 greeting, or a session already dead
	StepTLS     = "tls"     // STARTTLS missing or refused, handshake or certificate verification failed
	StepEHLO    = "ehlo"    // EHLO (or the EHLO that go-smtp repeats after RSET) refused
	StepAuth    = "auth"    // AUTH refused, impossible, or not allowed without TLS
	StepMail    = "mail"    // MAIL FROM (and the checks before it: SIZE, SMTPUTF8) or RSET
	StepRcpt    = "rcpt"    // RCPT TO
	StepData    = "data"    // DATA, the message content, the final dot and its reply
)

// Error describes why a session or a transaction failed.
//
// Permanent is true only when retrying the same message through the same
// server cannot succeed: a 5xx reply to MAIL, RCPT, DATA or the final dot
// (RFC 5321 section 4.2.1: "permanent negative completion"), or a local
// check that proves the same (the message exceeds the SIZE the server
// announced; an address needs SMTPUTF8 and the server lacks it; a DSN
// parameter or an address is malformed). Everything else, including every
// failure of connect, tls, ehlo and auth, is temporary: those concern the
// session and its configuration, not the message, so the message stays
// queued (this matches Postfix's smtp_skip_5xx_greeting and
// smtp_sasl_auth_soft_bounce defaults).
type Error struct {
	Step      string // one of the Step constants
	Code      int    // the server's reply code, 0 if the failure was not a reply
	Enhanced  [3]int // RFC 3463 enhanced status code, zero if the server sent none
	Text      string // the server's reply text, or a description of a local failure
	Permanent bool
	Err       error // the underlying error (network, TLS, SASL), if any
}

// Error formats the failure as "submit: STEP: CODE X.Y.Z TEXT: CAUSE",
// leaving out the parts that are not set.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("submit: ")
	b.WriteString(e.Step)
	if r := e.Reply(); r != "" {
		b.WriteString(": ")
		b.WriteString(r)
	} else if e.Text != "" {
		b.WriteString(": ")
		b.WriteString(e.Text)
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

// Unwrap returns the underlying error.
func (e *Error) Unwrap() error { return e.Err }

// Temporary reports whether the failure is not permanent.
func (e *Error) Temporary() bool { return !e.Permanent }

// Reply returns the server reply as one line, "550 5.1.1 No such user", or
// "" when the failure was not a server reply.
func (e *Error) Reply() string {
	if e.Code == 0 {
		return ""
	}
	return formatReply(e.Code, e.Enhanced, e.Text)
}

func formatReply(code int, enh [3]int, text string) string {
	s := fmt.Sprintf("%03d", code)
	if enh[0] > 0 {
		s += fmt.Sprintf(" %d.%d.%d", enh[0], enh[1], enh[2])
	}
	if text != "" {
		s += " " + text
	}
	return s
}

// replyError converts go-smtp's view of a negative reply. A multi-line
// reply is joined into one line. Permanent follows the reply code, which is
// right for MAIL, RCPT and DATA; callers for other steps clear it.
func replyError(step string, se *smtp.SMTPError) *Error {
	e := &Error{
		Step:      step,
		Code:      se.Code,
		Text:      oneLine(se.Message),
		Permanent: se.Code >= 500 && se.Code <= 599,
	}
	if se.EnhancedCode[0] > 0 {
		e.Enhanced = se.EnhancedCode
	}
	return e
}

// asReply returns the *smtp.SMTPError in err's chain, if any.
func asReply(err error) (*smtp.SMTPError, bool) {
	var se *smtp.SMTPError
	ok := errors.As(err, &se)
	return se, ok
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
