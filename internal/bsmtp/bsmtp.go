// Package bsmtp is sendmail -bs: SMTP spoken on standard input and
// output, the way PHP frameworks submit mail (Laravel's default sendmail
// path is "/usr/sbin/sendmail -bs -i", and Symfony Mailer's
// SendmailTransport uses -bs).
//
// The protocol is go-smtp's server, given the two streams as a single
// connection (see stdioConn). Each message accepted goes through
// enqueue.Enqueue exactly as a message given to sendmail -t does (header
// fix-ups, aliases, Bcc removal, durable spooling), with the SMTP
// envelope as the only source of recipients, as Postfix's sendmail -bs
// does. The reply to the final dot is sent only once the message is
// durably queued.
//
// Nothing is ever written to standard error: Symfony treats any byte
// there as a failure of the transport.
package bsmtp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"unicode/utf8"

	"github.com/emersion/go-smtp"

	"github.com/postie-mail/postie/internal/address"
	"github.com/postie-mail/postie/internal/config"
	"github.com/postie-mail/postie/internal/enqueue"
	"github.com/postie-mail/postie/internal/message"
)

// maxRecipients bounds RCPT commands per transaction. Applications send
// newsletters to many recipients in one transaction; the limit only
// guards against a runaway client (go-smtp answers 452 beyond it).
const maxRecipients = 10000

// maxEnvID is RFC 3461's limit on the ENVID parameter.
const maxEnvID = 100

// Serve speaks SMTP on in/out until QUIT or EOF, queueing each accepted
// message through enqueue.Enqueue. It returns the number of messages
// queued.
//
// The error is nil after QUIT, after EOF on in (also in the middle of a
// message, which is then not queued), and when the session ends because
// of the client's errors (too many bad commands, an overlong command
// line). It is non-nil when reading in or writing out fails; messages
// counted in the number were queued all the same.
func Serve(env *enqueue.Env, cfg *config.Config, in io.Reader, out io.Writer) (int, error) {
	return serve(env, cfg, in, out, log.New(io.Discard, "", 0))
}

// serve is Serve with go-smtp's error log given (tests watch it for
// panics; Serve discards it, since stderr must stay silent).
func serve(env *enqueue.Env, cfg *config.Config, in io.Reader, out io.Writer, errorLog smtp.Logger) (int, error) {
	if _, ok := out.(*os.File); ok {
		// A Go program writing to a broken pipe on fd 1 dies of
		// SIGPIPE unless SIGPIPE is being notified; while a channel
		// is registered the write returns EPIPE instead, and Serve
		// can return it. Scoped to this call: Stop restores the
		// default.
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGPIPE)
		defer signal.Stop(sig)
	}

	conn := newStdioConn(in, out)
	be := &backend{env: env, maxSize: cfg.MaxMessageSize, conn: conn}
	srv := smtp.NewServer(be)
	srv.Domain = cfg.Hostname
	srv.MaxMessageBytes = cfg.MaxMessageSize
	srv.MaxRecipients = maxRecipients
	// Command lines are limited by stdioConn; go-smtp's limit would
	// apply to message lines too.
	srv.MaxLineLength = 0
	// No AUTH (the session offers no mechanisms and insecure AUTH is
	// off) and no STARTTLS (TLSConfig stays nil): the caller is a
	// local process, already known to the kernel.
	srv.AllowInsecureAuth = false
	srv.TLSConfig = nil
	srv.EnableSMTPUTF8 = true
	srv.EnableDSN = true
	// No timeouts: see stdioConn on deadlines.
	srv.ReadTimeout = 0
	srv.WriteTimeout = 0
	// go-smtp logs to os.Stderr by default.
	srv.ErrorLog = errorLog

	err := srv.Serve(newListener(conn))
	// Serve returns once the connection is closed; Shutdown waits
	// for the connection's goroutine, in which Data runs, to finish.
	srv.Shutdown(context.Background())

	n := int(be.queued.Load())
	if ioErr := conn.ioErr(); ioErr != nil {
		return n, ioErr
	}
	// The listener's second Accept fails with net.ErrClosed once the
	// session is over: that is the normal end.
	if err != nil && !errors.Is(err, net.ErrClosed) {
		return n, err
	}
	return n, nil
}

// backend is the go-smtp backend of one Serve call.
type backend struct {
	env     *enqueue.Env
	maxSize int64
	conn    *stdioConn
	queued  atomic.Int64

	// closed is set when the connection closes (QUIT, too many
	// errors). go-smtp goes on handling commands it had read ahead,
	// even "HELO", which makes a new session: no message may be
	// queued for them, since the client saw the session end.
	mu     sync.Mutex
	closed bool
}

func (b *backend) NewSession(*smtp.Conn) (smtp.Session, error) {
	return &session{b: b}, nil
}

// session is one SMTP session (go-smtp makes one at the first HELO or
// EHLO). Its state is the current transaction.
type session struct {
	b *backend

	mu       sync.Mutex
	sender   *string // nil before MAIL; "" is the null sender
	mailOpts smtp.MailOptions
	rcpts    []string
	notify   []string // NOTIFY of the transaction's recipients, sorted
}

var (
	errNestedMail = &smtp.SMTPError{Code: 503, EnhancedCode: smtp.EnhancedCode{5, 5, 1}, Message: "Error: nested MAIL command"}
	errNoRcpt     = &smtp.SMTPError{Code: 503, EnhancedCode: smtp.EnhancedCode{5, 5, 1}, Message: "Error: no valid recipients"}
	errNotify     = &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 5, 3}, Message: "Recipients with different DSN NOTIFY must be sent in separate transactions"}
	errBDAT       = &smtp.SMTPError{Code: 502, EnhancedCode: smtp.EnhancedCode{5, 5, 1}, Message: "BDAT is not offered; use DATA"}
	errEnvID      = &smtp.SMTPError{Code: 501, EnhancedCode: smtp.EnhancedCode{5, 5, 4}, Message: fmt.Sprintf("ENVID longer than %d characters", maxEnvID)}
	// errSessionClosed answers DATA that go-smtp had read ahead and
	// handles after the session was closed (see backend.closed).
	// Nobody reads the reply.
	errSessionClosed = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Session closed"}
)

// Mail starts a transaction. The sender is checked as sendmail -f's
// argument is (enqueue applies the same parser again).
func (s *session) Mail(from string, opts *smtp.MailOptions) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sender != nil {
		return errNestedMail
	}
	if from != "" {
		addr, err := checkAddress(from)
		if err != nil {
			return reply(553, smtp.EnhancedCode{5, 1, 7}, "Bad sender address syntax: "+err.Error())
		}
		from = addr
	}
	if len(opts.EnvelopeID) > maxEnvID {
		return errEnvID
	}
	s.sender = &from
	s.mailOpts = *opts
	return nil
}

// Rcpt adds a recipient after checking it as an argument recipient of
// sendmail is checked, so that a bad address is refused here rather
// than failing the whole message at the final dot.
func (s *session) Rcpt(to string, opts *smtp.RcptOptions) error {
	addr, err := checkAddress(to)
	if err != nil {
		return reply(553, smtp.EnhancedCode{5, 1, 3}, "Bad recipient address syntax: "+err.Error())
	}
	// SMTP requires a domain, so a local name arrives as
	// name@hostname (or name@localhost); enqueue applies aliases to
	// those as to bare names. Expand now, so that an alias problem is
	// answered at RCPT.
	if _, err := s.b.env.Resolver.Expand([]address.Address{{Addr: addr}}); err != nil {
		// A loop or bad target in the alias table: the administrator's
		// to fix, so the client should try again later rather than
		// give up.
		return reply(451, smtp.EnhancedCode{4, 3, 0}, "Alias configuration error: "+err.Error())
	}
	notify := make([]string, len(opts.Notify))
	for i, n := range opts.Notify {
		notify[i] = strings.ToLower(string(n))
	}
	slices.Sort(notify)

	s.mu.Lock()
	defer s.mu.Unlock()
	// The queue keeps one NOTIFY per message. RFC 5321 4.5.3.1.10
	// clients retry a recipient refused with 452 in a later
	// transaction, which then gets its own queue file.
	if len(s.rcpts) > 0 && !slices.Equal(notify, s.notify) {
		return errNotify
	}
	s.rcpts = append(s.rcpts, addr)
	s.notify = notify
	return nil
}

// Data queues the message sent with DATA. A nil error would make go-smtp answer
// "250 2.0.0 OK: queued"; returning an *smtp.SMTPError with code 250
// instead makes it answer with that error's code and text (see
// dataErrorToStatus in go-smtp's conn.go), which puts the queue ID in
// the reply as Postfix does.
func (s *session) Data(r io.Reader) error {
	if _, bdat := r.(*io.PipeReader); bdat {
		// go-smtp hands DATA content over through its own reader,
		// BDAT chunks through a pipe. BDAT is refused without
		// reading: go-smtp v0.25.1 takes a chunk cut short by EOF
		// for a complete one (the message would be queued
		// truncated), stdioConn's LF to CRLF conversion would break
		// chunk sizes, and without BINARYMIME BDAT offers nothing
		// DATA does not. go-smtp skips the chunk and the session
		// stays in step.
		return errBDAT
	}
	b := s.b
	b.mu.Lock()
	closed := b.closed
	b.mu.Unlock()
	if closed {
		return errSessionClosed
	}
	b.conn.setData(true)

	s.mu.Lock()
	if s.sender == nil || len(s.rcpts) == 0 {
		s.mu.Unlock()
		return errNoRcpt
	}
	sender := *s.sender
	req := &enqueue.Request{
		Sender:     &sender,
		Recipients: slices.Clone(s.rcpts),
		// The envelope is authoritative: the header is not scanned
		// for recipients, as with Postfix's sendmail -bs.
		FromHeader: false,
		// go-smtp has already removed the dot-stuffing and the
		// final dot.
		DotEnds:  false,
		Notify:   slices.Clone(s.notify),
		Ret:      strings.ToLower(string(s.mailOpts.Return)),
		EnvID:    s.mailOpts.EnvelopeID,
		BodyType: string(s.mailOpts.Body),
	}
	if len(req.Notify) == 0 {
		req.Notify = nil
	}
	s.mu.Unlock()

	dr := &dataReader{r: r}
	res, err := enqueue.Enqueue(b.env, req, dr)
	if err != nil {
		return dataError(err, dr.err, b.maxSize)
	}
	b.queued.Add(1)
	return &smtp.SMTPError{Code: 250, EnhancedCode: smtp.EnhancedCode{2, 0, 0}, Message: "Ok: queued as " + res.ID}
}

// Reset ends the transaction (RSET, a new HELO/EHLO, or the end of DATA).
func (s *session) Reset() {
	s.mu.Lock()
	s.sender = nil
	s.mailOpts = smtp.MailOptions{}
	s.rcpts = nil
	s.notify = nil
	s.mu.Unlock()
	s.b.conn.setData(false)
}

// Logout is called when the connection closes.
func (s *session) Logout() error {
	s.b.mu.Lock()
	s.b.closed = true
	s.b.mu.Unlock()
	return nil
}

// dataReader remembers the first error reading the message, which
// enqueue reports only as text.
type dataReader struct {
	r   io.Reader
	err error
}

func (d *dataReader) Read(p []byte) (int, error) {
	n, err := d.r.Read(p)
	if err != nil && err != io.EOF && d.err == nil {
		d.err = err
	}
	return n, err
}

// dataError turns a failure to queue a message into the reply to the
// final dot. go-smtp has drained the rest of the message by the time the
// reply is written, so the session stays in step whatever went wrong.
func dataError(err, readErr error, maxSize int64) error {
	if errors.Is(readErr, smtp.ErrDataTooLarge) {
		return sizeError(fmt.Sprintf("message exceeds the size limit of %d bytes", maxSize))
	}
	var ee *enqueue.Error
	if !errors.As(err, &ee) {
		return reply(451, smtp.EnhancedCode{4, 3, 0}, "Error: queue file write error: "+err.Error())
	}
	msg := ee.Err.Error()
	switch ee.Code {
	case enqueue.ExDataErr:
		// enqueue's own size check counts the header it adds.
		if errors.Is(err, message.ErrTooBig) {
			return sizeError(msg)
		}
		return reply(554, smtp.EnhancedCode{5, 6, 0}, msg)
	case enqueue.ExUsage:
		// An address enqueue refused; Mail and Rcpt check the same,
		// so this is not expected.
		return reply(553, smtp.EnhancedCode{5, 1, 0}, msg)
	}
	// 73, 74, 75 and anything else: the spool could not take the
	// message now; the client keeps it and retries.
	return reply(451, smtp.EnhancedCode{4, 3, 0}, "Error: queue file write error: "+msg)
}

func sizeError(msg string) error {
	return reply(552, smtp.EnhancedCode{5, 3, 4}, msg)
}

// reply makes an SMTP reply whose text is safe to send: one line of
// printable ASCII (go-smtp would turn a LF into a multi-line reply).
func reply(code int, ec smtp.EnhancedCode, text string) *smtp.SMTPError {
	const maxText = 400
	var b strings.Builder
	for i := 0; i < len(text) && b.Len() < maxText; i++ {
		c := text[i]
		if c < ' ' || c > '~' {
			c = '?'
		}
		b.WriteByte(c)
	}
	return &smtp.SMTPError{Code: code, EnhancedCode: ec, Message: b.String()}
}

// checkAddress checks a MAIL or RCPT address as sendmail's arguments are
// checked and returns it in envelope form.
//
// go-smtp hands over the local part of a quoted-string unquoted ("a b"@x
// arrives as a b@x), so the local part is quoted again before parsing.
// Since it also takes anything up to '>' as the domain, "<a@x,b@y>"
// arrives as a@x,b@y, indistinguishable from "<\"a@x,b\"@y>": an
// address with more than one '@' is refused rather than guessed at (a
// quoted local part containing '@' is legal but not seen in practice),
// and the domain must have host name syntax. The parse must then yield
// exactly the address given: the address parser is lenient, as header
// fields need, and would take "a@b;c" as a group ending at a@b.
func checkAddress(s string) (string, error) {
	if strings.Count(s, "@") != 1 {
		return "", fmt.Errorf("%q is not a single mailbox", s)
	}
	at := strings.IndexByte(s, '@')
	local, domain := s[:at], s[at+1:]
	if !validDomain(domain) {
		return "", fmt.Errorf("%q: bad domain %q", s, domain)
	}
	if !isDotAtom(local) {
		local = quote(local)
	}
	want := local + "@" + domain
	l, err := address.ParseList(want)
	if err != nil {
		return "", err
	}
	if len(l) != 1 || l[0].Addr != want {
		return "", fmt.Errorf("%q is not a single mailbox", s)
	}
	return want, nil
}

// validDomain accepts a host name (letters, digits, '-', '_', '.', and
// UTF-8 for internationalized names) or an address literal ("[192.0.2.1]",
// "[IPv6:...]").
func validDomain(d string) bool {
	if d == "" {
		return false
	}
	if d[0] == '[' {
		if len(d) < 3 || d[len(d)-1] != ']' {
			return false
		}
		for _, c := range []byte(d[1 : len(d)-1]) {
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '.' || c == ':') {
				return false
			}
		}
		return true
	}
	if d[0] == '.' || strings.Contains(d, "..") {
		return false
	}
	for _, r := range d {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
		case r >= 0x80 && r != utf8.RuneError:
		default:
			return false
		}
	}
	return true
}

// isDotAtom and quote match the address package's envelope form (RFC
// 5321 4.1.2, with RFC 6531 UTF-8 atext).
func isDotAtom(s string) bool {
	if s == "" || s[0] == '.' || s[len(s)-1] == '.' || strings.Contains(s, "..") {
		return false
	}
	for _, r := range s {
		switch {
		case r == '.', r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r >= 0x80:
		case strings.ContainsRune("!#$%&'*+-/=?^_`{|}~", r):
		default:
			return false
		}
	}
	return true
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
