// Package runner is the queue runner: it picks up new messages, delivers
// queued ones to the smarthost, retries temporary failures with backoff,
// bounces permanent ones, and logs one line per attempt.
//
// Exactly once: each message is delivered under its exclusive lock
// (spool.Lock), so concurrent runners never send it twice; a runner that
// dies leaves each message either removed (delivered) or queued, except in
// the window between the final dot and the server's reply, which the
// sending marker records: such a message is held as "uncertain" for the
// administrator instead of being sent again (unless queue.retry_uncertain
// says to retry).
package runner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/postie-mail/postie/internal/config"
	"github.com/postie-mail/postie/internal/dkimsign"
	"github.com/postie-mail/postie/internal/maillog"
	"github.com/postie-mail/postie/internal/spool"
	"github.com/postie-mail/postie/internal/submit"
)

// TmpGrace is how old a file in tmp/ must be before it is taken for the
// leftovers of a crashed writer. Maildir uses 36 hours; a cron job may
// write to sendmail for as long as it runs.
const TmpGrace = 36 * time.Hour

// Runner delivers the queue.
type Runner struct {
	Cfg   *config.Config
	Spool *spool.Spool
	Log   *maillog.Logger
	// Routes are tried in order; the first whose Match accepts the
	// envelope sender (a nil Match accepts all: the default [smarthost])
	// carries the message. Without routes no smarthost is configured.
	Routes []Route
	Signer *dkimsign.Signer
	// Progress, when set, receives a progress line on long flushes.
	Progress io.Writer
	Now      func() time.Time
	// Dial opens a session; tests may replace it. Default submit.Dial.
	Dial func(ctx context.Context, cfg *submit.Config) (Session, error)
}

// Route is a list of smarthosts for some senders: the first, then each
// fallback in turn when one cannot be reached or answers 4xx.
type Route struct {
	Match func(sender string) bool
	Hosts []*submit.Config
}

// HasSmarthost reports whether any smarthost is configured.
func (r *Runner) HasSmarthost() bool { return len(r.Routes) > 0 }

func (r *Runner) hostsFor(sender string) []*submit.Config {
	for _, rt := range r.Routes {
		if rt.Match == nil || rt.Match(sender) {
			return rt.Hosts
		}
	}
	return nil
}

// Session is the part of submit.Session the runner uses.
type Session interface {
	Send(ctx context.Context, m *submit.Message) *submit.Result
	Relay() string
	Usable() bool
	Close() error
}

// Options select what a run delivers.
type Options struct {
	// IDs limits the run to these messages.
	IDs []string
	// DueOnly skips messages whose retry time has not come (timers and
	// the background runner); otherwise every queued message is tried
	// now, as mailq -q promises.
	DueOnly bool
	// Expire returns the selected messages to their senders now (mailq
	// --expire), as if their max_age had passed.
	Expire bool
}

// Summary counts what a run did, per message.
type Summary struct {
	Sent, Deferred, Bounced, Held, Uncertain, Skipped int
	// Remaining lists messages left queued by a temporary failure.
	Remaining []string
	// LastError is one of the temporary failures, for the user.
	LastError string
}

func (s *Summary) String() string {
	return fmt.Sprintf("%d sent, %d deferred, %d bounced, %d held, %d uncertain", s.Sent, s.Deferred, s.Bounced, s.Held, s.Uncertain)
}

// ErrNoSmarthost is the reason messages stay queued without a smarthost.
var ErrNoSmarthost = errors.New("no smarthost configured: set [smarthost] address in the config file")

// Run delivers what opts selects. It returns an error only when the run
// itself could not work (the spool is unreadable); per-message failures
// are in the Summary.
func (r *Runner) Run(ctx context.Context, opts Options) (*Summary, error) {
	if r.Now == nil {
		r.Now = time.Now
	}
	if r.Dial == nil {
		r.Dial = func(ctx context.Context, cfg *submit.Config) (Session, error) { return submit.Dial(ctx, cfg) }
	}
	sum := &Summary{}
	// Bounces generated in one round, and mail queued while it ran, are
	// delivered in the next; the bound keeps a steady stream of new mail
	// from holding one run forever.
	for round := 0; round < 20; round++ {
		picked, err := r.Spool.Pickup()
		if err != nil {
			return sum, err
		}
		if round == 0 {
			r.Spool.CleanTmp(r.Now(), TmpGrace)
		}
		ids := opts.IDs
		if round > 0 {
			ids = picked
		} else if len(ids) == 0 {
			ids, err = r.Spool.QueuedIDs()
			if err != nil {
				return sum, err
			}
		}
		if len(ids) == 0 {
			break
		}
		o := opts
		if round > 0 {
			// New mail (bounces) is delivered, never expired.
			o.Expire = false
		}
		r.deliverAll(ctx, ids, o, sum)
		if err := r.Spool.SyncQueue(); err != nil {
			return sum, err
		}
		if len(opts.IDs) > 0 && round == 0 && !r.Spool.HasIncoming() {
			break
		}
	}
	return sum, nil
}

// deliverAll runs the configured number of workers, each with its own
// connection, over ids. It returns the number of bounces queued.
func (r *Runner) deliverAll(ctx context.Context, ids []string, opts Options, sum *Summary) int {
	n := r.Cfg.Queue.Connections
	if n > len(ids) {
		n = len(ids)
	}
	work := make(chan string)
	var mu sync.Mutex
	bounces := 0
	var done int
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := &worker{r: r}
			defer w.close()
			for id := range work {
				o := w.deliver(ctx, id, opts)
				mu.Lock()
				bounces += o.bounces
				sum.add(id, o)
				done++
				if r.Progress != nil && done%100 == 0 {
					fmt.Fprintf(r.Progress, "\r%d/%d messages", done, len(ids))
				}
				mu.Unlock()
			}
		}()
	}
	for _, id := range ids {
		if ctx.Err() != nil {
			break
		}
		work <- id
	}
	close(work)
	wg.Wait()
	if r.Progress != nil && len(ids) >= 100 {
		fmt.Fprintf(r.Progress, "\r%d/%d messages\n", done, len(ids))
	}
	return bounces
}

// outcome is what happened to one message in a run.
type outcome struct {
	status  string // sent, deferred, bounced, held, uncertain, skipped
	reply   string
	bounces int
}

func (s *Summary) add(id string, o outcome) {
	switch o.status {
	case "sent":
		s.Sent++
	case "deferred":
		s.Deferred++
		s.Remaining = append(s.Remaining, id)
		s.LastError = o.reply
	case "bounced":
		s.Bounced++
	case "held":
		s.Held++
	case "uncertain":
		s.Uncertain++
	default:
		s.Skipped++
	}
}

// backoff returns the delay before attempt n+1: retry_min doubled per
// attempt up to retry_max, with ±10% jitter so that messages deferred
// together do not all come back at the same instant.
func (r *Runner) backoff(attempts int) time.Duration {
	d := r.Cfg.Queue.RetryMin.Duration
	for i := 1; i < attempts && d < r.Cfg.Queue.RetryMax.Duration; i++ {
		d *= 2
	}
	if d > r.Cfg.Queue.RetryMax.Duration {
		d = r.Cfg.Queue.RetryMax.Duration
	}
	j := time.Duration(float64(d) * (rand.Float64()*0.2 - 0.1))
	return d + j
}

// worker delivers messages one after another over one connection.
type worker struct {
	r        *Runner
	sessions map[*submit.Config]Session
	dialErrs map[*submit.Config]error
}

func (w *worker) close() {
	for _, s := range w.sessions {
		s.Close()
	}
}

// session returns a usable session to host, dialing if needed. After a
// failed dial the worker does not dial that host again in this run: the
// next messages go on to the fallback, or are deferred with the same
// reason, instead of each waiting for a timeout.
func (w *worker) session(ctx context.Context, host *submit.Config) (Session, error) {
	if w.sessions == nil {
		w.sessions = map[*submit.Config]Session{}
		w.dialErrs = map[*submit.Config]error{}
	}
	if s := w.sessions[host]; s != nil {
		if s.Usable() {
			return s, nil
		}
		s.Close()
		delete(w.sessions, host)
	}
	if err := w.dialErrs[host]; err != nil {
		return nil, err
	}
	s, err := w.r.Dial(ctx, host)
	if err != nil {
		w.dialErrs[host] = err
		return nil, err
	}
	w.sessions[host] = s
	return s, nil
}

func (w *worker) deliver(ctx context.Context, id string, opts Options) outcome {
	r := w.r
	l, err := r.Spool.Lock(id)
	if err != nil {
		if !errors.Is(err, spool.ErrLocked) && !errors.Is(err, os.ErrNotExist) {
			r.Log.Errorf("%s: %v", id, err)
		}
		return outcome{status: "skipped"}
	}
	defer l.Close()
	now := r.Now()
	st := &l.State
	if l.Sending() {
		// A runner died between the final dot and the reply.
		return w.uncertain(l, "delivery uncertain: the runner stopped after sending the message and before the server's reply")
	}
	if st.Held != "" && !opts.Expire {
		return outcome{status: "held"}
	}
	if opts.DueOnly && now.Before(st.NextAttempt) {
		return outcome{status: "skipped"}
	}
	pending := st.Pending(l.Env)
	if opts.Expire || st.Attempts > 0 && now.Sub(l.Env.Arrival) > r.Cfg.Queue.MaxAge.Duration {
		reason := fmt.Sprintf("message expired after %s in the queue; last error: %s", r.Cfg.Queue.MaxAge.Duration, st.LastError)
		if opts.Expire {
			reason = "returned to sender by the mail administrator"
			if st.LastError != "" {
				reason += "; last error: " + st.LastError
			}
		}
		fails := make([]failure, len(pending))
		for i, rc := range pending {
			fails[i] = failure{rcpt: rc, status: "4.4.7", diag: reason}
		}
		return w.finish(l, nil, fails, nil, "expired", reason)
	}
	st.Attempts++
	hosts := r.hostsFor(l.Env.Sender)
	if len(hosts) == 0 {
		return w.finish(l, nil, nil, pending, "", ErrNoSmarthost.Error())
	}
	msg, err := w.prepare(l, pending)
	if err != nil {
		return w.finish(l, nil, nil, pending, "", err.Error())
	}
	// Each host in turn takes what the previous ones left deferred.
	var sent []string
	var fails []failure
	deferred := pending
	var reply, relay string
	for _, host := range hosts {
		if len(deferred) == 0 {
			break
		}
		sess, err := w.session(ctx, host)
		if err != nil {
			reply = oneLine(err.Error())
			continue
		}
		msg.To = deferred
		res := sess.Send(ctx, msg)
		relay = sess.Relay()
		if res.Uncertain {
			if len(sent) > 0 {
				r.Log.Delivery(maillog.Attempt{ID: l.ID, To: sent, Relay: relay, Delay: now.Sub(l.Env.Arrival), Tries: st.Attempts, Status: "sent", Reply: reply})
				st.Done = append(st.Done, sent...)
				st.Remaining = deferred
			}
			return w.uncertain(l, fmt.Sprintf("delivery uncertain: connection to %s lost after the message was sent and before the reply: %v", relay, res.Err))
		}
		if res.Err != nil {
			var se *submit.Error
			if errors.As(res.Err, &se) && se.Permanent {
				for _, rc := range deferred {
					f := failure{rcpt: rc, status: enhanced(se.Code, se.Enhanced), diag: oneLine(res.Err.Error()), relay: relay, smtp: se.Code != 0}
					if se.Code != 0 {
						f.diag = oneLine(se.Reply())
					}
					fails = append(fails, f)
				}
				deferred = nil
				reply = oneLine(res.Err.Error())
				break
			}
			reply = oneLine(res.Err.Error())
			continue
		}
		var still []string
		var lastTemp string
		for i, rr := range res.Rcpts {
			rc := msg.To[i]
			switch {
			case rr.Accepted:
				sent = append(sent, rc)
			case rr.Permanent:
				fails = append(fails, failure{rcpt: rc, status: enhanced(rr.Code, rr.Enhanced), diag: oneLine(rr.Reply()), relay: relay, smtp: rr.Code != 0})
			default:
				still = append(still, rc)
				lastTemp = fmt.Sprintf("%s: %s", rc, oneLine(rr.Reply()))
			}
		}
		deferred = still
		reply = oneLine(res.Reply)
		if len(still) > 0 {
			reply = lastTemp
		}
	}
	return w.finishRelay(l, sent, fails, deferred, "", reply, relay)
}

// failure is a recipient that failed permanently.
type failure struct {
	rcpt, status, diag, relay string
	smtp                      bool // diag is the server's reply
}

func enhanced(code int, e [3]int) string {
	if e[0] != 0 {
		return fmt.Sprintf("%d.%d.%d", e[0], e[1], e[2])
	}
	if code >= 500 {
		return "5.0.0"
	}
	return "4.0.0"
}

func (w *worker) finish(l *spool.Locked, sent []string, fails []failure, deferred []string, status, reply string) outcome {
	return w.finishRelay(l, sent, fails, deferred, status, reply, "")
}

// finishRelay records the outcome of an attempt: bounces for failures,
// the remaining recipients for deferrals, removal when nothing is owed.
func (w *worker) finishRelay(l *spool.Locked, sent []string, fails []failure, deferred []string, status, reply, relay string) outcome {
	r := w.r
	now := r.Now()
	st := &l.State
	o := outcome{reply: reply}
	delay := now.Sub(l.Env.Arrival)
	if len(sent) > 0 {
		r.Log.Delivery(maillog.Attempt{ID: l.ID, To: sent, Relay: relay, Delay: delay, Tries: st.Attempts, Status: "sent", Reply: reply})
	}
	if len(fails) > 0 {
		to := make([]string, len(fails))
		for i, f := range fails {
			to[i] = f.rcpt
		}
		s := "bounced"
		if status == "expired" {
			s = "expired"
		}
		r.Log.Delivery(maillog.Attempt{ID: l.ID, To: to, Relay: relay, Delay: delay, Tries: st.Attempts, Status: s, Reply: fails[0].diag})
		n, err := w.bounce(l, fails)
		if err != nil {
			// Without a bounce the failure would go unreported: keep
			// the recipients owed and try again later.
			r.Log.Errorf("%s: cannot queue bounce: %v", l.ID, err)
			deferred = append(deferred, to...)
		} else {
			o.bounces = n
		}
	}
	if len(deferred) > 0 {
		r.Log.Delivery(maillog.Attempt{ID: l.ID, To: deferred, Relay: relay, Delay: delay, Tries: st.Attempts, Status: "deferred", Reply: reply})
	}
	for _, s := range sent {
		st.Done = append(st.Done, s)
	}
	for _, f := range fails {
		st.Done = append(st.Done, f.rcpt)
	}
	hist := spool.Attempt{Time: now, Relay: relay, Reply: reply}
	switch {
	case len(deferred) == 0:
		if err := l.Remove(); err != nil {
			r.Log.Errorf("%s: %v", l.ID, err)
		}
		if len(fails) > 0 {
			o.status = "bounced"
		} else {
			o.status = "sent"
		}
		return o
	default:
		st.Remaining = deferred
		st.LastError = reply
		st.NextAttempt = now.Add(r.backoff(st.Attempts))
		hist.Status = "deferred"
		st.AddAttempt(hist)
		l.ClearSending()
		if err := l.SaveState(); err != nil {
			r.Log.Errorf("%s: %v", l.ID, err)
		}
		o.status = "deferred"
		return o
	}
}

// uncertain holds a message whose delivery may have happened.
func (w *worker) uncertain(l *spool.Locked, reason string) outcome {
	r := w.r
	st := &l.State
	st.Uncertain = true
	st.LastError = reason
	st.AddAttempt(spool.Attempt{Time: r.Now(), Status: "uncertain", Reply: reason})
	if r.Cfg.Queue.RetryUncertain {
		st.NextAttempt = r.Now().Add(r.backoff(st.Attempts))
	} else {
		st.Held = "uncertain"
	}
	r.Log.Delivery(maillog.Attempt{ID: l.ID, To: st.Pending(l.Env), Delay: r.Now().Sub(l.Env.Arrival), Tries: st.Attempts, Status: "uncertain", Reply: reason + " (message-id " + l.Env.MessageID + ")"})
	// The state now says uncertain; the marker can go.
	if err := l.SaveState(); err != nil {
		r.Log.Errorf("%s: %v", l.ID, err)
		return outcome{status: "uncertain", reply: reason}
	}
	l.ClearSending()
	return outcome{status: "uncertain", reply: reason}
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
