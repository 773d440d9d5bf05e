package spool

import (
	"fmt"
	"os"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// Entry describes a message for listings.
type Entry struct {
	Env   *Envelope
	State State
	// Status is queued, deferred, held, uncertain or sending.
	Status string
	// Incoming is set for a message not yet picked up.
	Incoming bool
}

// List returns every message in incoming/ and queue/, oldest first.
// Unreadable or incomplete files are skipped.
func (s *Spool) List() ([]Entry, error) {
	var out []Entry
	if names, err := readNames(s.path(IncomingDir)); err == nil {
		for _, n := range names {
			if !ValidID(n) {
				continue
			}
			q, err := OpenFile(s.path(IncomingDir, n))
			if err != nil {
				continue
			}
			q.Close()
			e := Entry{Env: q.Env, Status: "queued", Incoming: true}
			if q.Env.HeldReason != "" {
				e.Status, e.State.Held = "held", q.Env.HeldReason
			}
			out = append(out, e)
		}
	}
	ids, err := s.QueuedIDs()
	if err != nil {
		return nil, err
	}
	for _, id := range ids {
		e, err := s.entry(id)
		if err != nil {
			continue
		}
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b Entry) int { return strings.Compare(a.Env.ID, b.Env.ID) })
	return out, nil
}

// Entry returns the listing entry of a queued message.
func (s *Spool) Entry(id string) (Entry, error) {
	if !ValidID(id) {
		return Entry{}, fmt.Errorf("spool: %q is not a queue ID", id)
	}
	return s.entry(id)
}

func (s *Spool) entry(id string) (Entry, error) {
	f, err := os.Open(s.path(QueueDir, id))
	if err != nil {
		return Entry{}, err
	}
	defer f.Close()
	q, err := readQueueFile(f)
	if err != nil {
		return Entry{}, err
	}
	st, err := s.readState(id)
	if err != nil {
		return Entry{}, err
	}
	e := Entry{Env: q.Env, State: st}
	locked := unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB) != nil
	switch {
	case locked:
		e.Status = "sending"
	case st.Uncertain || s.marked(id, q.hdr, &st, false):
		e.Status = "uncertain"
	case st.Held != "":
		e.Status = "held"
	case st.Attempts > 0:
		e.Status = "deferred"
	default:
		e.Status = "queued"
	}
	return e, nil
}
