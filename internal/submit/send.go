package submit

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/emersion/go-smtp"
)

// Message is one SMTP transaction: an envelope and a way to write the
// content.
type Message struct {
	// From is the envelope sender (reverse-path); "" is the null sender
	// <>, used for bounces.
	From string
	// To holds the envelope recipients (forward-paths), at least one.
	To []string
	// Size is the content size in octets, sent as SIZE= (RFC 1870) when
	// the server offers SIZE; 0 means unknown and is not sent. A size
	// above the limit the server announces fails the message before MAIL.
	Size int64
	// EightBit marks 8-bit content, declared as BODY=8BITMIME (RFC 6152)
	// when the server offers 8BITMIME. go-smtp declares BODY=8BITMIME
	// whenever the server offers it, which RFC 6152 permits for 7-bit
	// content too. If the server does not offer 8BITMIME the content is
	// sent unchanged: converting it is not this package's job.
	EightBit bool
	// UTF8 marks a message that needs SMTPUTF8 (RFC 6531): an address or
	// a header field is UTF-8. A non-ASCII address sets it implicitly.
	// If the server lacks SMTPUTF8, domains are converted to A-labels;
	// recipients whose local part is not ASCII fail permanently (5.6.7),
	// and if the sender's is not, the whole message does.
	UTF8 bool
	// Notify is the DSN NOTIFY list (RFC 3461): "never", or any of
	// "success", "failure", "delay" (sendmail -N). Sent only when the
	// server offers DSN, as are Ret and EnvID.
	Notify []string
	// Ret is the DSN RET value, "full" or "hdrs" (sendmail -R).
	Ret string
	// EnvID is the DSN ENVID (sendmail -V), printable ASCII.
	EnvID string
	// WriteBody writes the whole message, header and body, with CRLF line
	// ends and without dot-stuffing (it is done here). An error aborts the
	// transaction without sending the final dot.
	WriteBody func(w io.Writer) error
	// BeforeDot, if set, is called after the content is written and
	// before the final "." is sent. The queue runner records there,
	// durably, that the message is about to be delivered. An error aborts
	// the transaction without sending the dot.
	BeforeDot func() error
}

// RcptResult is the outcome for one recipient.
type RcptResult struct {
	Addr string // as in Message.To
	// Accepted is true when the server accepted RCPT TO. Whether the
	// message reached the recipient depends on Result: see there.
	Accepted bool
	// For a rejected recipient: the server's reply (Code, Enhanced, Text)
	// or, for a local refusal, Code 0 with Enhanced and Text set. For a
	// recipient never tried because the transaction failed before its
	// RCPT, these are copied from Result.Err.
	Code      int
	Enhanced  [3]int
	Text      string
	Permanent bool
}

// Reply returns the recipient's reply as one line, or Text alone when
// there was no server reply.
func (r *RcptResult) Reply() string {
	if r.Code == 0 {
		return r.Text
	}
	return formatReply(r.Code, r.Enhanced, r.Text)
}

// Result is the outcome of one Send.
//
// How to read it, per recipient i:
//   - Err == nil: the server took responsibility for the message for every
//     recipient with Rcpts[i].Accepted; the others failed as their
//     RcptResult says.
//   - Err != nil and !Uncertain: the message was certainly not delivered to
//     anyone. Recipients with Accepted failed as Err says (for example a
//     451 to the final dot); the others as their RcptResult says.
//   - Uncertain: the final dot was sent but no reply was read. The server
//     may have accepted the message for every Accepted recipient, so it
//     must not be sent again as if nothing happened (that would duplicate
//     it); see the runner's policy.
type Result struct {
	Rcpts []RcptResult // one per Message.To, in order
	// Err is the transaction's failure, always an *Error (see Failure);
	// nil when the server accepted the final dot.
	Err       error
	Uncertain bool
	Reply     string // the final reply, e.g. "250 2.0.0 Ok: queued as ABC"; or the reply that failed the transaction
}

// Failure returns Err as an *Error, or nil.
func (r *Result) Failure() *Error {
	e, _ := r.Err.(*Error)
	return e
}

// fail records e as the transaction failure, and as the outcome of each
// recipient not yet decided.
func (r *Result) fail(e *Error, decided []bool) *Result {
	r.Err = e
	if r.Reply == "" {
		r.Reply = e.Reply()
	}
	for i := range r.Rcpts {
		if decided != nil && decided[i] {
			continue
		}
		rr := &r.Rcpts[i]
		rr.Code, rr.Enhanced, rr.Permanent = e.Code, e.Enhanced, e.Permanent
		rr.Text = e.Text
		if rr.Text == "" && e.Err != nil {
			rr.Text = e.Err.Error()
		}
	}
	return r
}

// Send runs one mail transaction: MAIL, RCPT for each recipient, DATA,
// the content, the final dot. It never returns nil.
//
// Recipients are tried one by one; a 5xx reply fails a recipient
// permanently, a 4xx temporarily, and the others go on. If none is
// accepted, the transaction is reset (RSET) and DATA is not sent. A reply
// to DATA or to the final dot applies to all accepted recipients.
//
// Cancelling ctx closes the connection. If that happens after the final
// dot was sent, the result is Uncertain.
func (s *Session) Send(ctx context.Context, m *Message) *Result {
	res := &Result{Rcpts: make([]RcptResult, len(m.To))}
	for i, to := range m.To {
		res.Rcpts[i].Addr = to
	}
	if !s.Usable() {
		return res.fail(&Error{Step: StepConnect, Text: "session is no longer usable"}, nil)
	}
	if e := checkMessage(m); e != nil {
		return res.fail(e, nil)
	}
	if err := context.Cause(ctx); err != nil {
		// Nothing sent: the session stays usable.
		return res.fail(&Error{Step: StepMail, Text: "not attempted", Err: err}, nil)
	}
	stop := context.AfterFunc(ctx, s.kill)
	defer stop()
	s.send(ctx, m, res)
	if e := res.Failure(); e != nil {
		s.annotate(ctx, e)
	}
	return res
}

func (s *Session) send(ctx context.Context, m *Message, res *Result) {
	decided := make([]bool, len(m.To))
	rejectRcpt := func(i int, e *Error) {
		decided[i] = true
		rr := &res.Rcpts[i]
		rr.Code, rr.Enhanced, rr.Text, rr.Permanent = e.Code, e.Enhanced, e.Text, e.Permanent
	}

	// SMTPUTF8: use it if needed and offered; otherwise make what can be
	// ASCII so, and fail what cannot.
	needUTF8 := m.UTF8 || !isASCII(m.From)
	for _, to := range m.To {
		needUTF8 = needUTF8 || !isASCII(to)
	}
	serverUTF8, _ := s.c.Extension("SMTPUTF8")
	from := m.From
	to := append([]string(nil), m.To...)
	if needUTF8 && !serverUTF8 {
		// RFC 3463: 5.6.7 "non-ASCII addresses not permitted" (RFC 6531
		// section 3.7.1), 5.1.7 and 5.1.2 for a sender or recipient
		// domain that is not a valid IDN.
		a, err := asciiAddress(m.From)
		if err != nil {
			enh := [3]int{5, 1, 7}
			if errors.Is(err, errLocalPartUTF8) {
				enh = [3]int{5, 6, 7}
			}
			res.fail(&Error{Step: StepMail, Enhanced: enh, Permanent: true,
				Text: fmt.Sprintf("sender <%s>: %v", m.From, err)}, nil)
			return
		}
		from = a
		for i, addr := range m.To {
			a, err := asciiAddress(addr)
			if err != nil {
				enh := [3]int{5, 1, 2}
				if errors.Is(err, errLocalPartUTF8) {
					enh = [3]int{5, 6, 7}
				}
				rejectRcpt(i, &Error{Enhanced: enh, Permanent: true, Text: err.Error()})
				continue
			}
			to[i] = a
		}
	}

	// SIZE (RFC 1870 section 5): refuse early what the server announced
	// it would refuse.
	if max, ok := s.c.MaxMessageSize(); ok && max > 0 && m.Size > int64(max) {
		res.fail(&Error{Step: StepMail, Enhanced: [3]int{5, 3, 4}, Permanent: true,
			Text: fmt.Sprintf("message size %d exceeds the server's limit %d", m.Size, max)}, decided)
		return
	}

	pending := 0
	for _, d := range decided {
		if !d {
			pending++
		}
	}
	if pending == 0 {
		res.fail(&Error{Step: StepRcpt, Enhanced: [3]int{5, 6, 7}, Permanent: true,
			Text: "no recipient can be addressed without SMTPUTF8"}, decided)
		return
	}

	mailOpts := &smtp.MailOptions{
		Size:       m.Size,
		UTF8:       needUTF8 && serverUTF8,
		Return:     smtp.DSNReturn(strings.ToUpper(m.Ret)),
		EnvelopeID: m.EnvID,
	}
	if m.EightBit {
		mailOpts.Body = smtp.Body8BitMIME
	}
	if err := s.c.Mail(from, mailOpts); err != nil {
		res.fail(s.cmdError(StepMail, err), decided)
		return
	}

	var rcptOpts *smtp.RcptOptions
	if len(m.Notify) > 0 {
		rcptOpts = &smtp.RcptOptions{Notify: dsnNotify(m.Notify)}
	}
	accepted := 0
	var lastReject *Error
	for i := range to {
		if decided[i] {
			continue
		}
		err := s.c.Rcpt(to[i], rcptOpts)
		if err == nil {
			decided[i] = true
			res.Rcpts[i].Accepted = true
			accepted++
			continue
		}
		e := s.cmdError(StepRcpt, err)
		if e.Code == 0 || e.Code == 421 {
			// The connection is gone: this and the remaining recipients
			// fail with it.
			res.fail(e, decided)
			markAccepted(res, e)
			return
		}
		rejectRcpt(i, e)
		lastReject = e
	}
	if accepted == 0 {
		e := &Error{Step: StepRcpt, Text: "no recipient was accepted", Permanent: true}
		for _, rr := range res.Rcpts {
			e.Permanent = e.Permanent && rr.Permanent
		}
		res.Reply = lastReject.Reply()
		res.fail(e, decided)
		s.reset() // RSET: the MAIL transaction is open; a failure kills the session
		return
	}

	// DATA.
	dc, err := s.c.Data()
	if err != nil {
		e := s.cmdError(StepData, err)
		res.fail(e, decided)
		markAccepted(res, e)
		if e.Code != 0 && s.Usable() {
			s.reset()
		}
		return
	}
	if s.debug != nil {
		s.debug.beginData()
	}
	if e := s.writeContent(ctx, dc, m); e != nil {
		// A transfer cannot be aborted in SMTP except by closing the
		// connection: anything else would let the server take a
		// truncated message when it sees a later dot.
		s.kill()
		if s.debug != nil {
			s.debug.endData()
		}
		res.fail(e, decided)
		markAccepted(res, e)
		return
	}

	// The final dot. go-smtp's CloseWithResponse writes the rest of the
	// buffered content and ".\r\n" in DataCommand.close (a textproto
	// DotWriter Close, then a Flush), sets the SubmissionTimeout deadline
	// and reads the reply. From the moment the dot may have reached the
	// server until a reply is read, failure is uncertain.
	s.tap.dotPhase, s.tap.dotShort = true, false
	s.tap.SetWriteDeadline(time.Now().Add(s.cfg.DataTimeout))
	resp, err := dc.CloseWithResponse()
	s.tap.dotPhase = false
	if s.debug != nil {
		s.debug.endData()
	}
	if err == nil {
		res.Reply = "250 " + oneLine(resp.StatusText)
		return
	}
	if se, ok := asReply(err); ok {
		e := s.cmdError(StepData, se)
		res.fail(e, decided)
		markAccepted(res, e)
		return
	}
	s.kill()
	if s.tap.dotShort {
		e := &Error{Step: StepData, Text: "connection to " + s.relay + " lost before the final dot was sent", Err: err}
		res.fail(e, decided)
		markAccepted(res, e)
		return
	}
	e := &Error{Step: StepData, Text: "no reply from " + s.relay + " after the final dot: the message may have been delivered", Err: err}
	res.Uncertain = true
	res.Err = e
	markAccepted(res, e)
}

// writeContent streams the message into DATA, extending the write deadline
// before every write (go-smtp sets none while the content is written), and
// calls BeforeDot. Any failure here is before the dot, so the message was
// certainly not delivered.
func (s *Session) writeContent(ctx context.Context, dc *smtp.DataCommand, m *Message) *Error {
	w := &contentWriter{dc: dc, tap: s.tap, timeout: s.cfg.DataTimeout}
	err := m.WriteBody(w)
	if w.err != nil {
		return &Error{Step: StepData, Text: "connection to " + s.relay + " lost while sending the content", Err: w.err}
	}
	if err != nil {
		return &Error{Step: StepData, Text: "transfer aborted: cannot read the message", Err: err}
	}
	if ctx.Err() != nil {
		return &Error{Step: StepData, Text: "transfer aborted", Err: context.Cause(ctx)}
	}
	if m.BeforeDot != nil {
		if err := m.BeforeDot(); err != nil {
			return &Error{Step: StepData, Text: "transfer aborted before the final dot", Err: err}
		}
	}
	return nil
}

// markAccepted gives accepted recipients the transaction's failure, so
// that each RcptResult tells its recipient's outcome on its own.
func markAccepted(res *Result, e *Error) {
	for i := range res.Rcpts {
		rr := &res.Rcpts[i]
		if rr.Accepted {
			rr.Code, rr.Enhanced, rr.Text, rr.Permanent = e.Code, e.Enhanced, e.Text, e.Permanent
		}
	}
}

type contentWriter struct {
	dc      *smtp.DataCommand
	tap     *tapConn
	timeout time.Duration
	err     error
}

func (w *contentWriter) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	w.tap.SetWriteDeadline(time.Now().Add(w.timeout))
	n, err := w.dc.Write(p)
	if err != nil {
		w.err = err
	}
	return n, err
}

// checkMessage rejects messages that no server could take. These failures
// are permanent: retrying cannot change them.
func checkMessage(m *Message) *Error {
	bad := func(format string, args ...any) *Error {
		return &Error{Step: StepConfig, Permanent: true, Text: fmt.Sprintf(format, args...)}
	}
	if len(m.To) == 0 {
		return bad("message has no recipients")
	}
	if m.WriteBody == nil {
		return bad("message has no WriteBody")
	}
	if err := checkAddress(m.From); err != nil {
		return bad("sender <%s>: %v", m.From, err)
	}
	for _, to := range m.To {
		if to == "" {
			return bad("empty recipient address")
		}
		if err := checkAddress(to); err != nil {
			return bad("recipient <%s>: %v", to, err)
		}
	}
	if err := checkNotify(m.Notify); err != nil {
		return bad("%v", err)
	}
	switch strings.ToLower(m.Ret) {
	case "", "full", "hdrs":
	default:
		return bad("DSN RET %q is not full or hdrs", m.Ret)
	}
	for _, r := range m.EnvID {
		if r < ' ' || r > '~' {
			return bad("DSN ENVID %q is not printable ASCII", m.EnvID)
		}
	}
	return nil
}

// checkNotify applies RFC 3461 section 4.1: NEVER, or a set of SUCCESS,
// FAILURE and DELAY, each at most once.
func checkNotify(list []string) error {
	seen := map[string]bool{}
	for _, v := range list {
		v = strings.ToLower(v)
		switch v {
		case "never", "success", "failure", "delay":
		default:
			return fmt.Errorf("DSN NOTIFY %q is not never, success, failure or delay", v)
		}
		if seen[v] {
			return fmt.Errorf("DSN NOTIFY %q given twice", v)
		}
		seen[v] = true
	}
	if seen["never"] && len(seen) > 1 {
		return errors.New("DSN NOTIFY never cannot be combined with other values")
	}
	return nil
}

func dsnNotify(list []string) []smtp.DSNNotify {
	out := make([]smtp.DSNNotify, len(list))
	for i, v := range list {
		out[i] = smtp.DSNNotify(strings.ToUpper(v))
	}
	return out
}
