package mailqcmd

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/postie-mail/postie/internal/config"
	"github.com/postie-mail/postie/internal/ratelimit"
	"github.com/postie-mail/postie/internal/spool"
	"github.com/postie-mail/postie/internal/sysuser"
)

// Filter selects messages for listing; empty fields match everything.
type Filter struct {
	State, Sender, Recipient, User string
	Older                          time.Duration
}

// selects reports whether f selects e; a nil or empty filter selects
// everything.
func (f *Filter) selects(e spool.Entry, now time.Time) bool {
	return f == nil || *f == (Filter{}) || f.match(e, now)
}

func (f *Filter) match(e spool.Entry, now time.Time) bool {
	if f.State != "" && e.Status != f.State {
		return false
	}
	if f.Sender != "" && !strings.Contains(strings.ToLower(e.Env.Sender), strings.ToLower(f.Sender)) {
		return false
	}
	if f.Recipient != "" {
		found := false
		for _, r := range e.State.Pending(e.Env) {
			if strings.Contains(strings.ToLower(r), strings.ToLower(f.Recipient)) {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	if f.Older > 0 && now.Sub(e.Env.Arrival) < f.Older {
		return false
	}
	if f.User != "" && !userMatches(e.Env, f.User) {
		return false
	}
	return true
}

func userMatches(env *spool.Envelope, user string) bool {
	return env.User == user || strconv.Itoa(env.UID) == user
}

// perUser releases (or deletes) in one command every held message a user
// submitted: after a compromised site is cleaned up, its legitimate mail
// goes out; or the spam goes away.
func perUser(sp *spool.Spool, user string, del bool, std IO) int {
	// Messages still in incoming/ are held by their envelope; pick them
	// up so that they can be locked and changed.
	if _, err := sp.Pickup(); err != nil {
		fmt.Fprintf(std.Err, "mailq: %v\n", err)
		return exTempFail
	}
	entries, err := sp.List()
	if err != nil {
		fmt.Fprintf(std.Err, "mailq: %v\n", err)
		return exTempFail
	}
	n, code := 0, exOK
	for _, e := range entries {
		if e.Status != "held" || !userMatches(e.Env, user) {
			continue
		}
		if !del && e.State.Held != "rate limit" {
			continue
		}
		l, err := sp.Lock(e.Env.ID)
		if err != nil {
			fmt.Fprintf(std.Err, "mailq: %s: %v\n", e.Env.ID, describe(err))
			code = exTempFail
			continue
		}
		if del {
			err = l.Remove()
		} else {
			l.State.Held = ""
			l.State.NextAttempt = time.Time{}
			l.State.AddAttempt(spool.Attempt{Time: time.Now(), Status: "released"})
			err = l.SaveState()
			l.Close()
		}
		if err != nil {
			fmt.Fprintf(std.Err, "mailq: %s: %v\n", e.Env.ID, err)
			code = exTempFail
			continue
		}
		n++
	}
	sp.SyncQueue()
	verb := "released"
	if del {
		verb = "deleted"
	}
	fmt.Fprintf(std.Out, "%d held message(s) from %s %s\n", n, user, verb)
	return code
}

// reportSenders prints who submitted how much, busiest first.
func reportSenders(cfg *config.Config, std IO) int {
	rep, err := ratelimit.Report(cfg.SpoolDir, time.Now())
	if err != nil {
		fmt.Fprintf(std.Err, "mailq: %v\n", err)
		if os.IsPermission(err) {
			return exNoPerm
		}
		return exTempFail
	}
	if len(rep) == 0 {
		fmt.Fprintln(std.Out, "No mail submitted in the last 24 hours")
		return exOK
	}
	tw := tabwriter.NewWriter(std.Out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "user\tuid\tmsgs/1h\trcpts/1h\theld/1h\tmsgs/24h\trcpts/24h\theld/24h\t")
	for _, s := range rep {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t\n", userName(s.UID), s.UID,
			s.Hour.Messages, s.Hour.Recipients, s.Hour.Held, s.Day.Messages, s.Day.Recipients, s.Day.Held)
	}
	tw.Flush()
	return exOK
}

func userName(uid int) string { return sysuser.Name(uid) }
