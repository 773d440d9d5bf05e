// Package enqueue turns a message from a local program into a queued
// message: it works out the envelope, fixes up the header as sendmail and
// Postfix do, and spools the result durably. The argv mode of sendmail and
// its -bs SMTP mode both go through Enqueue, so a message is treated the
// same whichever way it arrives.
package enqueue

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/emersion/go-message/textproto"

	"github.com/postie-mail/postie/internal/address"
	"github.com/postie-mail/postie/internal/conform"
	"github.com/postie-mail/postie/internal/message"
	"github.com/postie-mail/postie/internal/spool"
)

// Exit codes from sysexits(3).
const (
	ExUsage     = 64
	ExDataErr   = 65
	ExCantCreat = 73
	ExIOErr     = 74
	ExTempFail  = 75
	ExConfig    = 78
)

// Error carries the sysexits code sendmail exits with.
type Error struct {
	Code int
	Err  error
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

func fail(code int, format string, args ...any) error {
	return &Error{Code: code, Err: fmt.Errorf(format, args...)}
}

// Caller is who runs sendmail, as the kernel reports it.
type Caller struct {
	UID      int
	User     string
	FullName string // GECOS name, for a From header Postie adds
	Cwd, Exe string // of the parent process, when /proc tells
}

// Request is one submission.
type Request struct {
	// Sender is the envelope sender from -f/-r or MAIL FROM; nil
	// means the caller's address. An empty string is the null sender.
	Sender *string
	// FullName from -F.
	FullName string
	// Recipients are addresses from argv or RCPT TO, each possibly a
	// comma-separated list.
	Recipients []string
	// FromHeader takes recipients from the header too (-t).
	FromHeader bool
	// DotEnds: without -i, a lone "." ends the message.
	DotEnds bool
	// DSN and body type from -N, -R, -V, -B.
	Notify   []string
	Ret      string
	EnvID    string
	BodyType string
	// HeldReason queues the message held (a rate limit).
	HeldReason string
}

// Env is what Enqueue needs from the configuration.
type Env struct {
	Hostname string
	Resolver *address.Resolver
	Spool    *spool.Spool
	MaxSize  int64
	Caller   Caller
	Now      func() time.Time
	// Rewrite maps local names to addresses (the [rewrite] local table),
	// applied to the envelope sender and to From/To/Cc.
	RewriteLocal map[string]string
	// ForceFrom forces the envelope sender and From; the author moves
	// to Reply-To.
	ForceFrom string
	// Admit, when set, is asked before a message with nrcpt recipients
	// is committed: it returns a reason to hold the message (rate
	// limits), or an error to refuse it.
	Admit func(nrcpt int) (held string, err error)
}

// Result describes a queued message.
type Result struct {
	ID         string
	Held       string
	Sender     string
	Recipients []string
}

// Enqueue reads a message from in and queues it. On error nothing is left
// in the spool, and the error is an *Error with the exit code.
func Enqueue(env *Env, req *Request, in io.Reader) (*Result, error) {
	now := env.Now()
	sender, err := envelopeSender(env, req)
	if err != nil {
		return nil, err
	}
	var argRcpts []address.Address
	for _, r := range req.Recipients {
		l, err := address.ParseList(r)
		if err != nil {
			return nil, fail(ExUsage, "recipient: %v", err)
		}
		argRcpts = append(argRcpts, l...)
	}
	rd := message.NewReader(in, message.Options{DotEnds: req.DotEnds, MaxSize: env.MaxSize})
	h, err := rd.ReadHeader()
	if err != nil {
		return nil, dataErr(err)
	}
	if req.FromHeader && !rd.HasHeader {
		return nil, fail(ExDataErr, "-t given but the message has no header section")
	}
	rcpts := argRcpts
	if req.FromHeader {
		fromHdr, err := headerRecipients(&h)
		if err != nil {
			return nil, err
		}
		rcpts = append(rcpts, fromHdr...)
	}
	if len(rcpts) == 0 {
		if req.FromHeader {
			return nil, fail(ExDataErr, "no recipient addresses found in the message header")
		}
		return nil, fail(ExUsage, "no recipients given (use -t to take them from the header)")
	}
	expanded, err := env.Resolver.Expand(rewriteAll(env, rcpts))
	if err != nil {
		return nil, fail(ExDataErr, "%v", err)
	}
	held := req.HeldReason
	if env.Admit != nil {
		reason, err := env.Admit(len(expanded))
		if err != nil {
			return nil, err
		}
		if reason != "" {
			held = reason
		}
	}
	// Bcc is never sent, whether or not -t took recipients from it.
	h.Del("Bcc")
	h.Del("Resent-Bcc")

	w, err := env.Spool.Create(now)
	if err != nil {
		return nil, fail(ExCantCreat, "%v", err)
	}
	defer w.Abort()

	msgID := fixHeader(env, req, &h, sender, w.ID, now)
	var hbuf bytes.Buffer
	if err := textproto.WriteHeader(&hbuf, h); err != nil {
		return nil, fail(ExDataErr, "header: %v", err)
	}
	// The scanner records what delivery will need to know (8-bit,
	// valid UTF-8, long lines, bare CR, NUL) in the same pass.
	var facts conform.Scanner
	out := io.MultiWriter(w, &facts)
	if _, err := out.Write(hbuf.Bytes()); err != nil {
		return nil, spoolErr(err)
	}
	if _, err := rd.WriteBody(out, int64(hbuf.Len())); err != nil {
		var de *message.DataError
		switch {
		case errors.Is(err, message.ErrTooBig):
			return nil, &Error{Code: ExDataErr, Err: fmt.Errorf("%w of %d bytes", message.ErrTooBig, env.MaxSize)}
		case errors.As(err, &de):
			return nil, fail(ExDataErr, "%v", de)
		case strings.HasPrefix(err.Error(), "read message"):
			return nil, fail(ExIOErr, "%v", err)
		}
		return nil, spoolErr(err)
	}
	qenv := &spool.Envelope{
		Sender:     sender,
		Recipients: expanded,
		Arrival:    now,
		EightBit:   facts.Facts().EightBit,
		UTF8Body:   facts.Facts().UTF8,
		LongLines:  facts.Facts().LongLines,
		BareCR:     facts.Facts().BareCR,
		NUL:        facts.Facts().NUL,
		Notify:     req.Notify,
		Ret:        req.Ret,
		EnvID:      req.EnvID,
		BodyType:   req.BodyType,
		MessageID:  msgID,
		UID:        env.Caller.UID,
		User:       env.Caller.User,
		Cwd:        env.Caller.Cwd,
		Exe:        env.Caller.Exe,
		HeldReason: held,
	}
	for _, a := range append([]string{sender}, expanded...) {
		if address.NeedsUTF8(a) {
			qenv.UTF8 = true
		}
	}
	if err := w.Commit(qenv); err != nil {
		return nil, spoolErr(err)
	}
	return &Result{ID: w.ID, Held: held, Sender: sender, Recipients: expanded}, nil
}

func dataErr(err error) error {
	var de *message.DataError
	if errors.As(err, &de) {
		return fail(ExDataErr, "%v", de)
	}
	return fail(ExIOErr, "%v", err)
}

// spoolErr classifies a failure to write the spool: a full disk or quota
// is temporary (75), anything else a failure to create (73).
func spoolErr(err error) error {
	s := err.Error()
	if strings.Contains(s, "no space left") || strings.Contains(s, "quota exceeded") {
		return fail(ExTempFail, "queue file system full: %v", err)
	}
	return fail(ExCantCreat, "%v", err)
}

// envelopeSender returns the envelope sender: -f/-r/MAIL FROM when given
// ("" or "<>" is the null sender), else the caller's user@hostname.
func envelopeSender(env *Env, req *Request) (string, error) {
	if env.ForceFrom != "" {
		return env.ForceFrom, nil
	}
	if req.Sender == nil {
		return rewriteLocal(env, env.Caller.User), nil
	}
	s := strings.TrimSpace(*req.Sender)
	if s == "" || s == "<>" {
		return "", nil
	}
	a, err := address.Parse(s)
	if err != nil {
		return "", fail(ExUsage, "sender: %v", err)
	}
	return rewriteLocal(env, a.Addr), nil
}

// rewriteLocal applies [rewrite] local to a bare name or name@hostname,
// then qualifies a bare name.
func rewriteLocal(env *Env, addr string) string {
	if to, ok := lookupRewrite(env, addr); ok {
		return to
	}
	return env.Resolver.Qualify(addr)
}

func lookupRewrite(env *Env, addr string) (string, bool) {
	if len(env.RewriteLocal) == 0 {
		return "", false
	}
	local := addr
	if d := address.Domain(addr); d != "" {
		if !strings.EqualFold(d, env.Hostname) {
			return "", false
		}
		local = address.LocalPart(addr)
	}
	if to, ok := env.RewriteLocal[local]; ok {
		return to, true
	}
	if to, ok := env.RewriteLocal["*"]; ok {
		return to, true
	}
	return "", false
}

func rewriteAll(env *Env, l []address.Address) []address.Address {
	if len(env.RewriteLocal) == 0 {
		return l
	}
	out := make([]address.Address, len(l))
	for i, a := range l {
		// Aliases are consulted first for bare names; rewriting
		// applies to what aliases do not cover.
		if a.Local() {
			if _, ok := env.Resolver.Aliases[strings.ToLower(a.Addr)]; ok {
				out[i] = a
				continue
			}
		}
		if to, ok := lookupRewrite(env, a.Addr); ok {
			a.Addr = to
		}
		out[i] = a
	}
	return out
}

// headerRecipients returns the recipients -t takes: from To, Cc and Bcc,
// or from Resent-To, Resent-Cc and Resent-Bcc when any Resent- field is
// present (the message is being resent; its original recipients are
// history).
func headerRecipients(h *textproto.Header) ([]address.Address, error) {
	keys := []string{"To", "Cc", "Bcc"}
	for f := h.Fields(); f.Next(); {
		if strings.HasPrefix(strings.ToLower(f.Key()), "resent-") {
			keys = []string{"Resent-To", "Resent-Cc", "Resent-Bcc"}
			break
		}
	}
	var out []address.Address
	for _, k := range keys {
		for _, v := range h.Values(k) {
			l, err := address.ParseList(v)
			if err != nil {
				return nil, fail(ExDataErr, "%s: %v", k, err)
			}
			out = append(out, l...)
		}
	}
	return out, nil
}
