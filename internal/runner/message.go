package runner

import (
	"fmt"
	"io"
	"strings"

	"github.com/postie-mail/postie/internal/conform"
	"github.com/postie-mail/postie/internal/dkimsign"
	"github.com/postie-mail/postie/internal/dsn"
	"github.com/postie-mail/postie/internal/spool"
	"github.com/postie-mail/postie/internal/submit"
)

// prepare builds the submit.Message for a locked queue file: the body is
// streamed from the spool file through conform (and DKIM-signed first, in
// a separate pass over the same bytes), so memory stays flat whatever the
// message size.
func (w *worker) prepare(l *spool.Locked, to []string) (*submit.Message, error) {
	env := l.Env
	facts := conform.Facts{LongLines: env.LongLines, BareCR: env.BareCR, NUL: env.NUL, EightBit: env.EightBit, UTF8: env.UTF8Body}
	var sig string
	if w.r.Signer != nil {
		dom, err := dkimsign.ReadFromDomain(l.Message())
		if err == nil && dom != "" && len(w.r.Signer.KeysFor(dom)) > 0 {
			pr, pw := io.Pipe()
			go func() {
				_, err := conform.Copy(pw, l.Message(), facts)
				pw.CloseWithError(err)
			}()
			sig, err = w.r.Signer.Sign(dom, pr)
			pr.Close()
			if err != nil {
				return nil, fmt.Errorf("dkim: %w", err)
			}
		}
	}
	m := &submit.Message{
		From:     env.Sender,
		To:       to,
		Size:     env.Size + int64(len(sig)),
		EightBit: env.EightBit || env.BodyType == "8BITMIME",
		UTF8:     env.UTF8,
		Notify:   env.Notify,
		Ret:      env.Ret,
		EnvID:    env.EnvID,
		WriteBody: func(dst io.Writer) error {
			if sig != "" {
				if _, err := io.WriteString(dst, sig); err != nil {
					return err
				}
			}
			_, err := conform.Copy(dst, l.Message(), facts)
			return err
		},
		BeforeDot: l.MarkSending,
	}
	return m, nil
}

// sealBounce writes a delivery status notification for the failed
// recipients, to the envelope sender, from the null sender, sealed in tmp/
// for finish to publish (see there). A message from the null sender
// (itself a bounce) is never bounced: it goes to the bounce_to address
// when one is configured, else to failed/ and the log; then the ID is "".
func (w *worker) sealBounce(l *spool.Locked, fails []failure) (string, error) {
	r := w.r
	env := l.Env
	var to []string
	if env.Sender != "" && !env.Bounce {
		to = append(to, env.Sender)
	}
	if r.Cfg.Queue.BounceTo != "" && !env.Bounce {
		to = append(to, r.Cfg.Queue.BounceTo)
	}
	if len(to) == 0 {
		r.Log.Errorf("%s: undeliverable message from <%s> kept in %s/%s: %s", l.ID, env.Sender, spool.FailedDir, l.ID, fails[0].diag)
		if err := copyToFailed(r.Spool, l); err != nil {
			return "", err
		}
		return "", nil
	}
	rep := &dsn.Report{
		ReportingMTA:    r.Cfg.Hostname,
		QueueID:         l.ID,
		ArrivalDate:     env.Arrival,
		Sender:          env.Sender,
		From:            "MAILER-DAEMON@" + r.Cfg.Hostname,
		EnvID:           env.EnvID,
		Ret:             env.Ret,
		Now:             r.Now(),
		MessageIDDomain: r.Cfg.Hostname,
	}
	if env.Sender == "" {
		rep.Sender = r.Cfg.Queue.BounceTo
	}
	for _, f := range fails {
		rep.Recipients = append(rep.Recipients, dsn.Recipient{
			Address: f.rcpt, Action: "failed", Status: f.status,
			Diagnostic: f.diagnostic(), RemoteMTA: hostOf(f.relay),
		})
	}
	wr, err := r.Spool.Create(r.Now())
	if err != nil {
		return "", err
	}
	defer wr.Abort()
	var facts conform.Scanner
	if err := dsn.Write(io.MultiWriter(wr, &facts), rep, l.Message()); err != nil {
		return "", fmt.Errorf("write bounce: %w", err)
	}
	f := facts.Facts()
	benv := &spool.Envelope{
		Sender:     "",
		Recipients: to,
		Arrival:    r.Now(),
		Bounce:     true,
		EightBit:   f.EightBit,
		UTF8Body:   f.UTF8,
		LongLines:  f.LongLines,
		BareCR:     f.BareCR,
		NUL:        f.NUL,
		UID:        -1,
		User:       "MAILER-DAEMON",
	}
	if err := wr.Seal(benv); err != nil {
		return "", err
	}
	r.Log.Printf("%s: sender non-delivery notification: %s", l.ID, wr.ID)
	return wr.ID, nil
}

// diagnostic is the DSN Diagnostic-Code: "smtp; reply" for a server's
// reply, Postie's own words otherwise.
func (f failure) diagnostic() string {
	if f.smtp {
		return "smtp; " + f.diag
	}
	return f.diag
}

// copyToFailed keeps a copy of an undeliverable bounce in failed/.
func copyToFailed(s *spool.Spool, l *spool.Locked) error {
	return s.CopyToFailed(l)
}

// hostOf returns the host name of a Postfix-style relay "host[ip]:port".
func hostOf(relay string) string {
	if i := strings.IndexByte(relay, '['); i > 0 {
		return relay[:i]
	}
	return relay
}
