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
	// LockedRetry is how long after a pass the messages found locked in
	// it are tried once more; zero means DefaultLockedRetry.
	LockedRetry time.Duration
}

// DefaultLockedRetry is the wait before the messages found locked are
// tried again. A runner that holds a message's lock holds it for the
// whole delivery; mailq's listing holds a shared lock for microseconds to
// see whether a message is being sent, and a message it happened to
// probe must not wait for the next run.
const DefaultLockedRetry = 100 * time.Millisecond

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
	// The marks journal lets the connections share the syncs of their
	// sending marks; opening it first restores the marks of runners
	// that died with the machine, before any message is locked.
	if err := r.Spool.OpenMarks(); errors.Is(err, spool.ErrNoJournal) {
		r.Log.Errorf("%v; each sending mark is synced on its own", err)
	} else if err != nil {
		return sum, err
	}
	defer func() {
		// A journal that cannot be closed cleanly stays for the next
		// runner to fold, so nothing is at risk: the run's outcome
		// stands, and the failure is logged.
		if cerr := r.Spool.CloseMarks(); cerr != nil {
			r.Log.Errorf("%v", cerr)
		}
	}()
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
		if locked := r.deliverAll(ctx, ids, o, sum, false); len(locked) > 0 {
			wait := r.LockedRetry
			if wait == 0 {
				wait = DefaultLockedRetry
			}
			select {
			case <-time.After(wait):
				r.deliverAll(ctx, locked, o, sum, true)
			case <-ctx.Done():
				for _, id := range locked {
					sum.add(id, outcome{status: "skipped"})
				}
			}
		}
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
// connection, over ids, and adds each outcome to sum. It returns the
// messages it found locked, for one more try; in the last pass (last
// set) they count as skipped.
func (r *Runner) deliverAll(ctx context.Context, ids []string, opts Options, sum *Summary, last bool) (locked []string) {
	n := r.Cfg.Queue.Connections
	if n > len(ids) {
		n = len(ids)
	}
	work := make(chan string)
	var mu sync.Mutex
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
				if o.status == "locked" && !last {
					locked = append(locked, id)
				} else {
					sum.add(id, o)
				}
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
	return locked
}

// outcome is what happened to one message in a run.
type outcome struct {
	status string // sent, deferred, bounced, held, uncertain, skipped, locked
	reply  string
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
	if errors.Is(err, spool.ErrLocked) {
		return outcome{status: "locked"}
	}
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			r.Log.Errorf("%s: %v", id, err)
		}
		return outcome{status: "skipped"}
	}
	defer l.Close()
	now := r.Now()
	st := &l.State
	// Finish what a runner that died left half done: a sealed bounce
	// to publish, a settled message to remove.
	if st.PendingBounce != "" {
		if err := r.Spool.Publish(st.PendingBounce); err != nil {
			r.Log.Errorf("%s: %v", id, err)
			return outcome{status: "skipped"}
		}
		st.PendingBounce = ""
	}
	if st.Finished {
		if err := l.Remove(); err != nil {
			r.Log.Errorf("%s: %v", id, err)
		}
		return outcome{status: "skipped"}
	}
	if l.Sending() {
		// A runner died between the final dot and the reply.
		st.UncertainRcpts = st.Pending(l.Env)
		return w.uncertain(l, nil, nil, "delivery uncertain: the runner stopped after sending the message and before the server's reply", "")
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
		return w.finish(l, nil, fails, nil, "expired", reason, "")
	}
	st.Attempts++
	hosts := r.hostsFor(l.Env.Sender)
	if len(hosts) == 0 {
		return w.finish(l, nil, nil, pending, "", ErrNoSmarthost.Error(), "")
	}
	msg, err := w.prepare(l, pending)
	if err != nil {
		return w.finish(l, nil, nil, pending, "", err.Error(), "")
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
		se := res.Failure()
		var still, unsure []string
		var lastTemp string
		for i, rr := range res.Rcpts {
			rc := msg.To[i]
			switch {
			case rr.Accepted && res.Uncertain:
				unsure = append(unsure, rc)
			case rr.Accepted && se == nil:
				sent = append(sent, rc)
			case rr.Accepted && se.Permanent:
				// Refused at DATA or at the final dot.
				fails = append(fails, failureFrom(rc, se.Code, se.Enhanced, replyOf(se), relay))
			case rr.Accepted:
				still = append(still, rc)
				lastTemp = fmt.Sprintf("%s: %s", rc, replyOf(se))
			case rr.Permanent:
				fails = append(fails, failureFrom(rc, rr.Code, rr.Enhanced, oneLine(rr.Reply()), relay))
			default:
				still = append(still, rc)
				lastTemp = fmt.Sprintf("%s: %s", rc, oneLine(rr.Reply()))
			}
		}
		if len(res.Rcpts) == 0 && se != nil {
			// The transaction failed before any RCPT (MAIL FROM
			// refused, a local check).
			for _, rc := range deferred {
				if se.Permanent {
					fails = append(fails, failureFrom(rc, se.Code, se.Enhanced, replyOf(se), relay))
				} else {
					still = append(still, rc)
				}
			}
			lastTemp = replyOf(se)
		}
		deferred = still
		reply = oneLine(res.Reply)
		if lastTemp != "" {
			reply = lastTemp
		}
		if res.Uncertain {
			st.UncertainRcpts = unsure
			return w.uncertain(l, sent, fails, fmt.Sprintf("delivery uncertain: connection to %s lost after the message was sent and before the reply: %v", relay, res.Err), relay)
		}
	}
	return w.finish(l, sent, fails, deferred, "", reply, relay)
}

// replyOf is the server's reply in a transaction failure, or the error.
func replyOf(se *submit.Error) string {
	if r := se.Reply(); r != "" {
		return oneLine(r)
	}
	return oneLine(se.Error())
}

// failure is a recipient that failed permanently.
type failure struct {
	rcpt, status, diag, relay string
	smtp                      bool // diag is the server's reply
}

func failureFrom(rcpt string, code int, enh [3]int, diag, relay string) failure {
	return failure{rcpt: rcpt, status: enhanced(code, enh), diag: diag, relay: relay, smtp: code != 0}
}

func enhanced(code int, e [3]int) string {
	if e[0] != 0 {
		return fmt.Sprintf("%d.%d.%d", e[0], e[1], e[2])
	}
	if code >= 500 || code == 0 {
		return "5.0.0"
	}
	return "4.0.0"
}

// finish records the outcome of an attempt: the log lines, bounces for
// failures, the recipients still owed, removal when nothing is.
//
// Order matters for a crash at any instant. A bounce is sealed in tmp/
// first; then the state records the settled recipients, the pending
// bounce and that it answers the sending mark; then the bounce is
// published, or the message removed. A runner killed anywhere in between
// leaves a state that the next one completes, with no bounce lost or
// doubled and no recipient sent twice.
func (w *worker) finish(l *spool.Locked, sent []string, fails []failure, deferred []string, status, reply, relay string) outcome {
	r := w.r
	now := r.Now()
	st := &l.State
	// Every SaveState below records this attempt's outcome; until one
	// has, the mark stands.
	l.ClearSending()
	o := outcome{reply: reply}
	delay := now.Sub(l.Env.Arrival)
	if len(sent) > 0 {
		r.Log.Delivery(maillog.Attempt{ID: l.ID, To: sent, Relay: relay, Delay: delay, Tries: st.Attempts, Status: "sent", Reply: reply})
	}
	var bounceID string
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
		id, err := w.sealBounce(l, fails)
		if err != nil {
			// Without a bounce the failure would go unreported: keep
			// the recipients owed and try again later.
			r.Log.Errorf("%s: cannot queue bounce: %v", l.ID, err)
			deferred = append(deferred, to...)
			fails = nil
		} else {
			bounceID = id
		}
	}
	if len(deferred) > 0 {
		r.Log.Delivery(maillog.Attempt{ID: l.ID, To: deferred, Relay: relay, Delay: delay, Tries: st.Attempts, Status: "deferred", Reply: reply})
	}
	st.Done = append(st.Done, sent...)
	for _, f := range fails {
		st.Done = append(st.Done, f.rcpt)
	}
	if len(fails) > 0 {
		o.status = "bounced"
	} else {
		o.status = "sent"
	}
	if len(deferred) == 0 {
		if bounceID == "" {
			// Delivered: the sending marker (if any) covers a crash
			// before the removal (the message comes back uncertain,
			// never as new).
			if err := l.Remove(); err != nil {
				r.Log.Errorf("%s: %v", l.ID, err)
			}
			return o
		}
		st.Finished, st.PendingBounce = true, bounceID
		if err := l.SaveState(); err != nil {
			r.Log.Errorf("%s: %v", l.ID, err)
			return o
		}
		if err := r.Spool.Publish(bounceID); err != nil {
			r.Log.Errorf("%s: %v", l.ID, err)
			return o
		}
		if err := l.Remove(); err != nil {
			r.Log.Errorf("%s: %v", l.ID, err)
		}
		return o
	}
	st.Remaining = deferred
	st.LastError = reply
	st.NextAttempt = now.Add(r.backoff(st.Attempts))
	st.PendingBounce = bounceID
	st.AddAttempt(spool.Attempt{Time: now, Relay: relay, Reply: reply, Status: "deferred"})
	if err := l.SaveState(); err != nil {
		r.Log.Errorf("%s: %v", l.ID, err)
		o.status = "deferred"
		return o
	}
	if bounceID != "" {
		if err := r.Spool.Publish(bounceID); err != nil {
			r.Log.Errorf("%s: %v", l.ID, err)
		}
	}
	o.status = "deferred"
	return o
}

// uncertain holds a message whose delivery may have happened to
// st.UncertainRcpts. Recipients sent to an earlier host, or refused, in
// the same attempt are settled as usual; the rest stay owed.
func (w *worker) uncertain(l *spool.Locked, sent []string, fails []failure, reason, relay string) outcome {
	r := w.r
	st := &l.State
	now := r.Now()
	if len(sent) > 0 {
		r.Log.Delivery(maillog.Attempt{ID: l.ID, To: sent, Relay: relay, Delay: now.Sub(l.Env.Arrival), Tries: st.Attempts, Status: "sent", Reply: "250"})
		st.Done = append(st.Done, sent...)
	}
	var bounceID string
	if len(fails) > 0 {
		if id, err := w.sealBounce(l, fails); err == nil {
			bounceID = id
			for _, f := range fails {
				st.Done = append(st.Done, f.rcpt)
			}
		} else {
			r.Log.Errorf("%s: cannot queue bounce: %v", l.ID, err)
		}
	}
	// What is still owed: the pending recipients not settled above.
	done := map[string]bool{}
	for _, d := range st.Done {
		done[d] = true
	}
	var owed []string
	for _, p := range st.Pending(l.Env) {
		if !done[p] {
			owed = append(owed, p)
		}
	}
	st.Remaining = owed
	st.Uncertain = true
	st.LastError = reason
	st.PendingBounce = bounceID
	st.AddAttempt(spool.Attempt{Time: now, Relay: relay, Status: "uncertain", Reply: reason})
	if r.Cfg.Queue.RetryUncertain {
		st.NextAttempt = now.Add(r.backoff(st.Attempts))
	} else {
		st.Held = "uncertain"
	}
	r.Log.Delivery(maillog.Attempt{ID: l.ID, To: st.UncertainRcpts, Relay: relay, Delay: now.Sub(l.Env.Arrival), Tries: st.Attempts, Status: "uncertain", Reply: reason + " (message-id " + l.Env.MessageID + ")"})
	// The state says uncertain from now on: it answers the mark.
	l.ClearSending()
	if err := l.SaveState(); err != nil {
		r.Log.Errorf("%s: %v", l.ID, err)
		return outcome{status: "uncertain", reply: reason}
	}
	if bounceID != "" {
		if err := r.Spool.Publish(bounceID); err != nil {
			r.Log.Errorf("%s: %v", l.ID, err)
		}
	}
	return outcome{status: "uncertain", reply: reason}
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
