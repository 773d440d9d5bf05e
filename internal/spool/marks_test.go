package spool

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// queued enqueues n messages and picks them up.
func queued(t *testing.T, s *Spool, n int) []string {
	t.Helper()
	var ids []string
	for range n {
		ids = append(ids, enqueue(t, s, "Subject: x\r\n\r\nbody\r\n"))
	}
	_, err := s.Pickup()
	tcheck(t, err, "pickup")
	return ids
}

func journals(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	names, err := os.ReadDir(dir)
	tcheck(t, err, "read spool dir")
	for _, n := range names {
		if id, ok := strings.CutPrefix(n.Name(), marksPrefix); ok && ValidID(id) {
			out = append(out, n.Name())
		}
	}
	return out
}

// readMarks returns the records of a journal, by message.
func readMarks(t *testing.T, p string) map[string]int64 {
	t.Helper()
	b, err := os.ReadFile(p)
	tcheck(t, err, "read journal")
	m := map[string]int64{}
	for _, line := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		id, n, ok := parseMark([]byte(line))
		if !ok {
			t.Fatalf("journal record %q does not parse", line)
		}
		m[id] = n
	}
	return m
}

// setHeaderMark rewrites the mark in queue/ID's header, as a machine
// crash that lost the page would leave it.
func setHeaderMark(t *testing.T, s *Spool, id string, n int64) {
	t.Helper()
	f, err := os.OpenFile(s.path(QueueDir, id), os.O_WRONLY, 0)
	tcheck(t, err, "open")
	defer f.Close()
	_, err = f.WriteAt(fmt.Appendf(nil, "%010d", n), int64(sendsOff))
	tcheck(t, err, "rewrite header")
}

// crash ends s's run as a dead process would: its journal's lock is
// released (the descriptor closes) and nothing else happens.
func crash(s *Spool) {
	s.marksMu.Lock()
	defer s.marksMu.Unlock()
	s.marks.f.Close()
	s.marks = nil
}

func TestMarksJournalShared(t *testing.T) {
	s := newSpool(t)
	ids := queued(t, s, 16)
	tcheck(t, s.OpenMarks(), "open marks")
	js := journals(t, s.Dir)
	if len(js) != 1 {
		t.Fatalf("journals after OpenMarks: %q", js)
	}
	locks := make([]*Locked, len(ids))
	for i, id := range ids {
		l, err := s.Lock(id)
		tcheck(t, err, "lock")
		locks[i] = l
	}
	var wg sync.WaitGroup
	errs := make([]error, len(ids))
	for i, l := range locks {
		wg.Go(func() { errs[i] = l.MarkSending() })
	}
	wg.Wait()
	for i, err := range errs {
		tcheck(t, err, "mark "+ids[i])
	}
	got := readMarks(t, filepath.Join(s.Dir, js[0]))
	for _, id := range ids {
		if got[id] != 1 {
			t.Errorf("journal has mark %d for %s, want 1", got[id], id)
		}
	}
	// Another process sees every mark in the headers.
	other := New(s.Dir)
	for _, id := range ids {
		if e, err := other.Entry(id); err != nil || e.Status != "sending" {
			t.Errorf("%s: status %q (%v), want sending", id, e.Status, err)
		}
	}
	for i, l := range locks {
		if i%2 == 0 {
			tcheck(t, l.Remove(), "remove")
			continue
		}
		l.ClearSending()
		tcheck(t, l.SaveState(), "save state")
		l.Close()
	}
	tcheck(t, s.CloseMarks(), "close marks")
	if js := journals(t, s.Dir); len(js) != 0 {
		t.Errorf("journals after a run whose marks are all answered: %q", js)
	}
}

func TestMarksFoldedAfterMachineCrash(t *testing.T) {
	s := newSpool(t)
	ids := queued(t, s, 3)
	unanswered, answered, removed := ids[0], ids[1], ids[2]
	tcheck(t, s.OpenMarks(), "open marks")
	for _, id := range ids {
		l, err := s.Lock(id)
		tcheck(t, err, "lock")
		tcheck(t, l.MarkSending(), "mark")
		switch id {
		case answered:
			l.ClearSending()
			tcheck(t, l.SaveState(), "save state")
			l.Close()
		case removed:
			tcheck(t, l.Remove(), "remove")
		default:
			l.Close()
		}
	}
	j := journals(t, s.Dir)[0]
	// The machine crashes: the header writes were never synced and are
	// lost, and the last record was being written.
	crash(s)
	setHeaderMark(t, s, unanswered, 0)
	setHeaderMark(t, s, answered, 0)
	f, err := os.OpenFile(filepath.Join(s.Dir, j), os.O_WRONLY|os.O_APPEND, 0)
	tcheck(t, err, "open journal")
	_, err = f.WriteString(answered + " 00000")
	tcheck(t, err, "tear the journal")
	f.Close()

	next := New(s.Dir)
	tcheck(t, next.OpenMarks(), "open marks after the crash")
	if _, err := os.Stat(filepath.Join(s.Dir, j)); !os.IsNotExist(err) {
		t.Errorf("the dead runner's journal is still there after the fold (%v)", err)
	}
	for _, tt := range []struct {
		id      string
		sending bool
	}{{unanswered, true}, {answered, false}} {
		l, err := next.Lock(tt.id)
		tcheck(t, err, "lock")
		if l.Sending() != tt.sending {
			t.Errorf("%s: Sending() = %v after the fold, want %v", tt.id, l.Sending(), tt.sending)
		}
		l.Close()
	}
	if _, err := os.Stat(next.path(QueueDir, removed)); !os.IsNotExist(err) {
		t.Errorf("the fold brought back a removed message (%v)", err)
	}
	tcheck(t, next.CloseMarks(), "close marks")
}

func TestMarksJournalOfLiveRunnerKept(t *testing.T) {
	s := newSpool(t)
	id := queued(t, s, 1)[0]
	tcheck(t, s.OpenMarks(), "open marks")
	l, err := s.Lock(id)
	tcheck(t, err, "lock")
	tcheck(t, l.MarkSending(), "mark")
	mine := journals(t, s.Dir)

	// A second runner starts and stops while the first is sending.
	other := New(s.Dir)
	tcheck(t, other.OpenMarks(), "second runner: open marks")
	tcheck(t, other.CloseMarks(), "second runner: close marks")
	if js := journals(t, s.Dir); len(js) != 1 || js[0] != mine[0] {
		t.Fatalf("journals after a second runner came and went: %q, want %q", js, mine)
	}

	// The first stops with the mark unanswered (killed after the dot,
	// say): the journal stays, and the next runner folds it.
	l.Close()
	tcheck(t, s.CloseMarks(), "close marks")
	if js := journals(t, s.Dir); len(js) != 1 {
		t.Fatalf("journals after a run that left a mark unanswered: %q", js)
	}
	next := New(s.Dir)
	tcheck(t, next.OpenMarks(), "next runner: open marks")
	if js := journals(t, s.Dir); len(js) != 1 || js[0] == mine[0] {
		t.Errorf("journals after the next runner started: %q, want its own only", js)
	}
	l, err = next.Lock(id)
	tcheck(t, err, "lock")
	if !l.Sending() {
		t.Error("the unanswered mark is gone")
	}
	l.Close()
	tcheck(t, next.CloseMarks(), "next runner: close marks")
}

func TestMarkWithoutUsableJournal(t *testing.T) {
	s := newSpool(t)
	var warnings []string
	s.Warn = func(format string, args ...any) { warnings = append(warnings, fmt.Sprintf(format, args...)) }
	ids := queued(t, s, 2)
	tcheck(t, s.OpenMarks(), "open marks")
	// The journal cannot be written (as on a full disk): the mark falls
	// back to a sync of the queue file, the failure is reported once,
	// and the journal stays for the next runner.
	s.marks.f.Close()
	for _, id := range ids {
		l, err := s.Lock(id)
		tcheck(t, err, "lock")
		tcheck(t, l.MarkSending(), "mark")
		l.Close()
		if e, err := New(s.Dir).Entry(id); err != nil || e.Status != "uncertain" {
			t.Errorf("status after the mark: %q (%v), want uncertain", e.Status, err)
		}
	}
	if len(warnings) != 1 {
		t.Errorf("warnings: %q, want one", warnings)
	}
	s.CloseMarks()
	if js := journals(t, s.Dir); len(js) != 1 {
		t.Errorf("journals after a run whose journal failed: %q, want it kept", js)
	}
}

func TestOpenMarksTwice(t *testing.T) {
	s := newSpool(t)
	tcheck(t, s.OpenMarks(), "open marks")
	if err := s.OpenMarks(); err == nil {
		t.Error("a second OpenMarks on one Spool succeeded; the first CloseMarks would remove the journal under the second")
	}
	tcheck(t, s.CloseMarks(), "close marks")
	tcheck(t, s.OpenMarks(), "open marks after close")
	tcheck(t, s.CloseMarks(), "close marks")
	if js := journals(t, s.Dir); len(js) != 0 {
		t.Errorf("journals left: %q", js)
	}
}

func TestFoldSkipsGarbage(t *testing.T) {
	s := newSpool(t)
	id := queued(t, s, 1)[0]
	// A dead runner's journal with a line far longer than any record,
	// a record for a message that is not queued, and a good one.
	junk := strings.Repeat("x", 200<<10) + "\n" + "6FXXZ0XM8CW9NQ03 0000000001\n" + id + " 0000000002\n"
	tcheck(t, os.WriteFile(filepath.Join(s.Dir, marksPrefix+NewID(time.Now())), []byte(junk), 0o600), "write journal")
	tcheck(t, s.OpenMarks(), "open marks")
	l, err := s.Lock(id)
	tcheck(t, err, "lock")
	if !l.Sending() || l.hdr.sends != 2 {
		t.Errorf("after the fold: sending %v, header mark %d; want true, 2", l.Sending(), l.hdr.sends)
	}
	l.Close()
	tcheck(t, s.CloseMarks(), "close marks")
}

// FuzzParseMark: the fold reads journals that a dead runner may have torn
// anywhere, or that anyone with write access to the spool root may have
// written. A record it accepts must name a queue ID and a positive count,
// and be one that formatMark writes back the same.
func FuzzParseMark(f *testing.F) {
	id := NewID(time.Date(2026, 11, 28, 15, 0, 0, 0, time.UTC))
	f.Add(bytes.TrimSuffix(formatMark(id, 1), []byte("\n")))
	f.Add([]byte(id + " 9999999999"))
	f.Add([]byte(id + " +000000001"))
	f.Add([]byte(id + " 0000000000"))
	f.Add([]byte(id + " 00000000"))
	f.Add([]byte("../x 0000000001"))
	f.Fuzz(func(t *testing.T, b []byte) {
		id, n, ok := parseMark(b)
		if !ok {
			return
		}
		if !ValidID(id) || n <= 0 {
			t.Fatalf("parseMark(%q) = %q, %d, accepted", b, id, n)
		}
		id2, n2, ok2 := parseMark(bytes.TrimSuffix(formatMark(id, n), []byte("\n")))
		if !ok2 || id2 != id || n2 != n {
			t.Fatalf("parseMark(%q) = %q, %d; its formatMark reads back as %q, %d, %v", b, id, n, id2, n2, ok2)
		}
	})
}

// TestFoldUnderAnotherLock: after a machine crash lost a header's mark,
// the fold must restore it even while a listing's probe (shared lock) or
// an administrator's command (exclusive lock) holds the message, or the
// mark is gone with the journal and the message is sent again.
func TestFoldUnderAnotherLock(t *testing.T) {
	for _, how := range []int{unix.LOCK_SH, unix.LOCK_EX} {
		s := newSpool(t)
		id := queued(t, s, 1)[0]
		tcheck(t, s.OpenMarks(), "open marks")
		l, err := s.Lock(id)
		tcheck(t, err, "lock")
		tcheck(t, l.MarkSending(), "mark") // the dot is sent after this
		l.Close()
		crash(s)
		setHeaderMark(t, s, id, 0) // the header's page was lost

		f, err := os.Open(s.path(QueueDir, id))
		tcheck(t, err, "open")
		tcheck(t, unix.Flock(int(f.Fd()), how), "flock")
		s2 := New(s.Dir)
		tcheck(t, s2.OpenMarks(), "fold")
		f.Close()
		tcheck(t, s2.CloseMarks(), "close marks")

		l, err = New(s.Dir).Lock(id)
		tcheck(t, err, "lock again")
		if !l.Sending() {
			t.Errorf("flock %d during the fold: the mark is lost (header %d), the message would be sent again", how, l.hdr.sends)
		}
		l.Close()
	}
}
