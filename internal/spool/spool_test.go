package spool

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func tcheck(t *testing.T, err error, what string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func newSpool(t *testing.T) *Spool {
	t.Helper()
	s := New(t.TempDir())
	tcheck(t, s.Init(), "init")
	return s
}

func enqueue(t *testing.T, s *Spool, msg string) string {
	t.Helper()
	w, err := s.Create(time.Now())
	tcheck(t, err, "create")
	_, err = io.WriteString(w, msg)
	tcheck(t, err, "write")
	tcheck(t, w.Commit(&Envelope{Sender: "a@example.com", Recipients: []string{"b@example.com"}, Arrival: time.Now()}), "commit")
	return w.ID
}

func TestIDs(t *testing.T) {
	seen := map[string]bool{}
	now := time.Now()
	// Distinct microseconds, as concurrent writers mostly get; within
	// one microsecond 30 random bits (and O_EXCL) tell writers apart.
	for i := range 10000 {
		id := NewID(now.Add(time.Duration(i) * time.Microsecond))
		if !ValidID(id) {
			t.Fatalf("NewID gave invalid %q", id)
		}
		if seen[id] {
			t.Fatalf("duplicate ID %q", id)
		}
		seen[id] = true
	}
	if got := IDTime(NewID(now)); got.Sub(now.Truncate(time.Microsecond)).Abs() > time.Microsecond {
		t.Errorf("IDTime = %v, want %v", got, now)
	}
	a, b := NewID(now), NewID(now.Add(time.Second))
	if a[:10] >= b[:10] {
		t.Errorf("IDs do not sort by time: %s %s", a, b)
	}
	for _, bad := range []string{"", "short", "0123456789ABCDEI", "0123456789abcdef", "../../etc/passwd"} {
		if ValidID(bad) {
			t.Errorf("ValidID(%q) = true", bad)
		}
	}
}

func TestWriteReadPickup(t *testing.T) {
	s := newSpool(t)
	id := enqueue(t, s, "Subject: x\r\n\r\nbody\r\n")
	if _, err := os.Stat(filepath.Join(s.Dir, TmpDir, id)); !errors.Is(err, os.ErrNotExist) {
		t.Error("file left in tmp/")
	}
	l, err := s.List()
	tcheck(t, err, "list")
	if len(l) != 1 || !l[0].Incoming || l[0].Status != "queued" {
		t.Fatalf("list = %+v", l)
	}
	ids, err := s.Pickup()
	tcheck(t, err, "pickup")
	if len(ids) != 1 || ids[0] != id {
		t.Fatalf("pickup = %v", ids)
	}
	lk, err := s.Lock(id)
	tcheck(t, err, "lock")
	b, _ := io.ReadAll(lk.Message())
	if string(b) != "Subject: x\r\n\r\nbody\r\n" {
		t.Errorf("message = %q", b)
	}
	if lk.Env.Size != int64(len(b)) || lk.Env.ID != id {
		t.Errorf("envelope = %+v", lk.Env)
	}
	// A second locker is refused while the first holds it.
	if _, err := s.Lock(id); !errors.Is(err, ErrLocked) {
		t.Errorf("second Lock = %v, want ErrLocked", err)
	}
	e, err := s.Entry(id)
	tcheck(t, err, "entry")
	if e.Status != "sending" {
		t.Errorf("status while locked = %q", e.Status)
	}
	lk.State.Attempts = 1
	lk.State.LastError = "451 try later"
	lk.State.Remaining = []string{"b@example.com"}
	tcheck(t, lk.SaveState(), "save state")
	lk.Close()
	e, _ = s.Entry(id)
	if e.Status != "deferred" || e.State.LastError != "451 try later" {
		t.Errorf("entry = %+v", e)
	}
	lk, err = s.Lock(id)
	tcheck(t, err, "relock")
	tcheck(t, lk.MarkSending(), "mark")
	lk.Close()
	if e, _ := s.Entry(id); e.Status != "uncertain" {
		t.Errorf("status with marker = %q", e.Status)
	}
	lk, _ = s.Lock(id)
	tcheck(t, lk.Remove(), "remove")
	if l, _ := s.List(); len(l) != 0 {
		t.Errorf("list after remove = %+v", l)
	}
}

// TestSendingMark follows the mark through attempts: raised before a
// final dot, answered by the state, raised again by the next attempt; and
// a mark the state has not answered survives the process.
func TestSendingMark(t *testing.T) {
	tests := []struct {
		name   string
		legacy bool
	}{{"POSTIE2", false}, {"POSTIE1 file from an older version", true}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSpool(t)
			id := enqueue(t, s, "Subject: x\r\n\r\nbody\r\n")
			if tt.legacy {
				toLegacy(t, filepath.Join(s.Dir, IncomingDir, id))
			}
			_, err := s.Pickup()
			tcheck(t, err, "pickup")
			lock := func() *Locked {
				t.Helper()
				l, err := s.Lock(id)
				tcheck(t, err, "lock")
				return l
			}
			l := lock()
			if l.Sending() {
				t.Fatal("a fresh message is marked")
			}
			for attempt := 1; attempt <= 3; attempt++ {
				tcheck(t, l.MarkSending(), "mark")
				tcheck(t, l.MarkSending(), "mark again (a second host)")
				l.Close()
				// Killed after the dot: the mark is on disk.
				l = lock()
				if !l.Sending() {
					t.Fatalf("attempt %d: mark lost", attempt)
				}
				if e, _ := s.Entry(id); e.Status != "sending" {
					t.Errorf("attempt %d: status while locked = %q", attempt, e.Status)
				}
				l.State.Attempts = attempt
				l.ClearSending()
				if !l.Sending() {
					t.Fatalf("attempt %d: cleared before the state was saved", attempt)
				}
				tcheck(t, l.SaveState(), "save")
				if l.Sending() {
					t.Fatalf("attempt %d: still marked after SaveState", attempt)
				}
				l.Close()
				if e, _ := s.Entry(id); e.Status != "deferred" {
					t.Errorf("attempt %d: status after the state answered the mark = %q", attempt, e.Status)
				}
				l = lock()
				if l.Sending() {
					t.Fatalf("attempt %d: answered mark seen again", attempt)
				}
			}
			if !tt.legacy && l.State.Sends != 3 {
				t.Errorf("state answers mark %d, want 3", l.State.Sends)
			}
			// The message itself is untouched by the marks.
			b, _ := io.ReadAll(l.Message())
			if string(b) != "Subject: x\r\n\r\nbody\r\n" {
				t.Errorf("message = %q", b)
			}
			tcheck(t, l.Remove(), "remove")
			if names, _ := os.ReadDir(filepath.Join(s.Dir, QueueDir)); len(names) != 0 {
				t.Errorf("queue/ after remove: %v", names)
			}
		})
	}
}

// toLegacy rewrites a POSTIE2 queue file as POSTIE1, the format without
// a mark.
func toLegacy(t *testing.T, p string) {
	t.Helper()
	b, err := os.ReadFile(p)
	tcheck(t, err, "read")
	out := append([]byte("POSTIE1 "+string(b[len(magic2):sendsOff-1])+"\n"), b[header2Len:]...)
	tcheck(t, os.WriteFile(p, out, 0o600), "write")
}

// disown gives the file at p to another user, as a caller's file in
// incoming/ is in shared mode: Pickup copies it instead of renaming it.
func disown(t *testing.T, p string) {
	t.Helper()
	if os.Getuid() != 0 {
		t.Skip("needs root to give a file to another user")
	}
	tcheck(t, os.Chown(p, 65534, 65534), "chown")
}

// TestPickupClearsMark: a queue file put back into incoming/ by hand (from
// failed/, or copied out of queue/) carries the runner's mark; it is a new
// submission, delivered, not held as uncertain. The same for a caller's
// file in shared mode (copied, not renamed).
func TestPickupClearsMark(t *testing.T) {
	for _, owned := range []bool{true, false} {
		t.Run(fmt.Sprintf("owned=%v", owned), func(t *testing.T) {
			s := newSpool(t)
			id := enqueue(t, s, "Subject: x\r\n\r\nbody\r\n")
			src := filepath.Join(s.Dir, IncomingDir, id)
			f, err := os.OpenFile(src, os.O_WRONLY, 0)
			tcheck(t, err, "open")
			tcheck(t, writeMark(f, 7), "write mark")
			f.Close()
			if !owned {
				disown(t, src)
			}
			ids, err := s.Pickup()
			tcheck(t, err, "pickup")
			if len(ids) != 1 || ids[0] != id {
				t.Errorf("picked up %v, want [%s]", ids, id)
			}
			l, err := s.Lock(id)
			tcheck(t, err, "lock")
			defer l.Close()
			if l.Sending() || l.hdr.sends != 0 {
				t.Errorf("mark kept through pickup: sending=%v mark=%d", l.Sending(), l.hdr.sends)
			}
		})
	}
}

// TestPickupCopyStops: a pickup of a caller's file (shared mode) stopped
// at each step leaves the message in exactly one of incoming/ and queue/,
// and the next run finishes it: never both, which would deliver it twice
// once queue/ had delivered it.
func TestPickupCopyStops(t *testing.T) {
	settle := func(t *testing.T, s *Spool, id string) {
		t.Helper()
		_, err := s.Pickup()
		tcheck(t, err, "pickup")
		s.CleanTmp(time.Now(), time.Hour)
		if _, err := os.Stat(s.path(IncomingDir, id)); err == nil {
			t.Errorf("incoming/%s still there", id)
		}
		if _, err := os.Stat(s.pickupPath(id)); err == nil {
			t.Errorf("the copy of %s still there", id)
		}
		q, err := OpenFile(s.path(QueueDir, id))
		tcheck(t, err, "open queue/"+id)
		q.Close()
	}
	tests := []struct {
		name string
		// stop leaves the spool as a pickup of incoming/ID stopped
		// at one instant would.
		stop func(t *testing.T, s *Spool, id string)
	}{
		{"copy cut short, original kept", func(t *testing.T, s *Spool, id string) {
			tcheck(t, os.WriteFile(s.pickupPath(id), []byte("POSTIE2 000"), 0o600), "write copy")
		}},
		{"original removed, copy not placed", func(t *testing.T, s *Spool, id string) {
			err := s.copyIn(s.path(IncomingDir, id), id)
			tcheck(t, err, "copy")
			tcheck(t, os.Remove(s.path(IncomingDir, id)), "remove the original")
		}},
		// What the order before this one could leave: the copy placed,
		// the original not yet removed. It is queued once; the original
		// goes.
		{"copy placed, original kept", func(t *testing.T, s *Spool, id string) {
			err := s.copyIn(s.path(IncomingDir, id), id)
			tcheck(t, err, "copy")
			tcheck(t, os.Rename(s.pickupPath(id), s.path(QueueDir, id)), "place")
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSpool(t)
			id := enqueue(t, s, "Subject: x\r\n\r\nbody\r\n")
			disown(t, s.path(IncomingDir, id))
			tt.stop(t, s, id)
			settle(t, s, id)
		})
	}
}

// TestUnplacedCopy: after a pickup stopped between removing a caller's
// file and placing its committed copy, the copy is the message's only
// one. Listings show it, once, before any runner has placed it; Lock (an
// administrator's command by ID) places it and takes it.
func TestUnplacedCopy(t *testing.T) {
	s := newSpool(t)
	id := enqueue(t, s, "Subject: x\r\n\r\nbody\r\n")
	disown(t, s.path(IncomingDir, id))
	tcheck(t, s.copyIn(s.path(IncomingDir, id), id), "copy")
	tcheck(t, os.Remove(s.path(IncomingDir, id)), "remove the original")

	list, err := s.List()
	tcheck(t, err, "list")
	if len(list) != 1 || list[0].Env.ID != id || list[0].Status != "queued" || list[0].Incoming {
		t.Fatalf("listing = %+v", list)
	}
	l, err := s.Lock(id)
	tcheck(t, err, "lock")
	l.Close()
	if _, err := os.Stat(s.pickupPath(id)); err == nil {
		t.Error("the copy is still there after Lock placed it")
	}
	list, err = s.List()
	tcheck(t, err, "list again")
	if len(list) != 1 || list[0].Env.ID != id {
		t.Fatalf("listing after Lock = %+v", list)
	}

	// A copy cut short whose original its owner removed is no message.
	id = enqueue(t, s, "Subject: y\r\n\r\nbody\r\n")
	tcheck(t, os.WriteFile(s.pickupPath(id), []byte("POSTIE2 000"), 0o600), "write copy")
	tcheck(t, os.Remove(s.path(IncomingDir, id)), "remove the original")
	list, err = s.List()
	tcheck(t, err, "list with a cut copy")
	if len(list) != 1 {
		t.Errorf("listing with a cut copy = %+v", list)
	}
	if l, err := s.Lock(id); err == nil {
		l.Close()
		t.Error("Lock took a cut copy")
	}
}

// TestLockRemovesOldNames: a rename without RENAME_NOREPLACE (a link,
// then a remove) stopped half-way leaves queue/ID with its old name too.
// Once the message is removed (delivered or deleted), that name must not
// bring it back.
func TestLockRemovesOldNames(t *testing.T) {
	tests := []struct {
		name string
		old  func(s *Spool, id string) string
	}{
		{"incoming/ID", func(s *Spool, id string) string { return s.path(IncomingDir, id) }},
		{"queue/.ID.pickup", func(s *Spool, id string) string { return s.pickupPath(id) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSpool(t)
			id := queued(t, s, 1)[0]
			tcheck(t, os.Link(s.path(QueueDir, id), tt.old(s, id)), "link")
			l, err := s.Lock(id)
			tcheck(t, err, "lock")
			if _, err := os.Lstat(tt.old(s, id)); err == nil {
				t.Errorf("%s still there after Lock", tt.name)
			}
			tcheck(t, l.Remove(), "remove")
			l.Close()
			list, err := s.List()
			tcheck(t, err, "list")
			if len(list) != 0 {
				t.Errorf("listing after the removal = %+v", list)
			}
			if l, err := s.Lock(id); err == nil {
				l.Close()
				t.Error("a removed message can be locked again")
			}
		})
	}
}

// TestListingFollowsPickup: a listing that read incoming/ID before a
// pickup committed its copy, and queue/ after, finds the message in the
// copy; so does Entry (mailq -s).
func TestListingFollowsPickup(t *testing.T) {
	s := newSpool(t)
	id := enqueue(t, s, "Subject: x\r\n\r\nbody\r\n")
	tcheck(t, s.copyIn(s.path(IncomingDir, id), id), "copy")
	tcheck(t, os.Remove(s.path(IncomingDir, id)), "remove the original")
	in, err := os.Open(s.path(IncomingDir))
	tcheck(t, err, "open incoming/")
	defer in.Close()
	q, err := os.Open(s.path(QueueDir))
	tcheck(t, err, "open queue/")
	defer q.Close()
	e, err := newFileReader(s).read([2]int{int(in.Fd()), int(q.Fd())}, listed{id: id, incoming: true})
	tcheck(t, err, "read")
	if e.Env.ID != id || e.Status != "queued" {
		t.Errorf("listing entry = %+v", e)
	}
	e, err = s.Entry(id)
	tcheck(t, err, "Entry")
	if e.Env.ID != id {
		t.Errorf("Entry = %+v", e)
	}
}

// TestPickupFinishesLinkedRename: where RENAME_NOREPLACE is missing a
// rename is a link and a remove; stopped in between, incoming/ID and
// queue/ID are one file. A runner then marks it and sends the final dot
// and is killed. The next pickup must not clear the mark (through the
// other name): the message would be sent again.
func TestPickupFinishesLinkedRename(t *testing.T) {
	s := newSpool(t)
	id := queued(t, s, 1)[0]
	tcheck(t, os.Link(s.path(QueueDir, id), s.path(IncomingDir, id)), "link")
	l, err := s.Lock(id)
	tcheck(t, err, "lock")
	tcheck(t, l.MarkSending(), "mark")
	l.Close() // killed after the dot
	_, err = s.Pickup()
	tcheck(t, err, "pickup")
	if _, err := os.Stat(s.path(IncomingDir, id)); err == nil {
		t.Errorf("incoming/%s still there", id)
	}
	l, err = s.Lock(id)
	tcheck(t, err, "lock again")
	defer l.Close()
	if !l.Sending() {
		t.Errorf("mark cleared by pickup (header %d): the message would be sent again", l.hdr.sends)
	}
}

func TestCorruptFilesRejected(t *testing.T) {
	s := newSpool(t)
	id := enqueue(t, s, "Subject: x\r\n\r\nbody\r\n")
	p := filepath.Join(s.Dir, IncomingDir, id)
	full, _ := os.ReadFile(p)
	cases := map[string][]byte{
		"truncated envelope": full[:len(full)-5],
		"truncated message":  append(append([]byte{}, full[:40]...), full[len(full)-20:]...),
		"zero length header": append([]byte("POSTIE2 00000000000000000000 0000000000\n"), full[header2Len:]...),
		"bad mark":           append(append(append([]byte{}, full[:sendsOff]...), "-000000001"...), full[sendsOff+sendsLen:]...),
		"short header":       append([]byte(string(full[:header1Len-1])+"\n"), full[header2Len:]...),
		"no magic":           append([]byte("XXXXXX1"), full[7:]...),
		"empty":              nil,
	}
	for name, data := range cases {
		t.Run(name, func(t *testing.T) {
			bad := filepath.Join(t.TempDir(), "f")
			os.WriteFile(bad, data, 0o600)
			if _, err := OpenFile(bad); err == nil {
				t.Error("corrupt file accepted")
			}
		})
	}
	// An uncommitted writer's file in incoming/ (impossible by
	// construction, but a copy by hand) goes to failed/ at pickup.
	os.WriteFile(filepath.Join(s.Dir, IncomingDir, NewID(time.Now())), full[:len(full)-5], 0o600)
	ids, err := s.Pickup()
	tcheck(t, err, "pickup")
	if len(ids) != 1 {
		t.Errorf("picked %v", ids)
	}
	failed, _ := os.ReadDir(filepath.Join(s.Dir, FailedDir))
	if len(failed) != 1 {
		t.Errorf("failed/ = %v", failed)
	}
}

func TestAbortLeavesNothing(t *testing.T) {
	s := newSpool(t)
	w, err := s.Create(time.Now())
	tcheck(t, err, "create")
	io.WriteString(w, strings.Repeat("x", 100000))
	w.Abort()
	for _, d := range []string{TmpDir, IncomingDir} {
		if n, _ := os.ReadDir(filepath.Join(s.Dir, d)); len(n) != 0 {
			t.Errorf("%s not empty: %v", d, n)
		}
	}
}

func TestCleanTmp(t *testing.T) {
	s := newSpool(t)
	old := filepath.Join(s.Dir, TmpDir, "stale")
	fresh := filepath.Join(s.Dir, TmpDir, "fresh")
	os.WriteFile(old, []byte("x"), 0o600)
	os.WriteFile(fresh, []byte("x"), 0o600)
	past := time.Now().Add(-48 * time.Hour)
	os.Chtimes(old, past, past)
	orphan := filepath.Join(s.Dir, QueueDir, NewID(time.Now())+".state")
	os.WriteFile(orphan, []byte("{}"), 0o600)
	s.CleanTmp(time.Now(), 36*time.Hour)
	if _, err := os.Stat(old); err == nil {
		t.Error("stale tmp file kept")
	}
	if _, err := os.Stat(fresh); err != nil {
		t.Error("fresh tmp file removed")
	}
	if _, err := os.Stat(orphan); err == nil {
		t.Error("orphan state kept")
	}
}

func TestHeldAtSubmission(t *testing.T) {
	s := newSpool(t)
	w, _ := s.Create(time.Now())
	io.WriteString(w, "Subject: x\r\n\r\n")
	tcheck(t, w.Commit(&Envelope{Sender: "a@x", Recipients: []string{"b@x"}, Arrival: time.Now(), HeldReason: "rate limit"}), "commit")
	if _, err := s.Pickup(); err != nil {
		t.Fatal(err)
	}
	e, err := s.Entry(w.ID)
	tcheck(t, err, "entry")
	if e.Status != "held" || e.State.Held != "rate limit" {
		t.Errorf("entry = %+v", e)
	}
}

func FuzzReadEnvelope(f *testing.F) {
	s := New(f.TempDir())
	s.Init()
	w, _ := s.Create(time.Now())
	io.WriteString(w, "Subject: x\r\n\r\nbody\r\n")
	w.Commit(&Envelope{Sender: "a@x", Recipients: []string{"b@x"}})
	good, _ := os.ReadFile(filepath.Join(s.Dir, IncomingDir, w.ID))
	f.Add(good)
	f.Add([]byte("POSTIE1 00000000000000000002\nab{}\n"))
	f.Add([]byte("POSTIE2 00000000000000000002 0000000001\nab{}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		env, _, err := readEnvelope(strings.NewReader(string(data)), int64(len(data)))
		if err != nil {
			return
		}
		if !ValidID(env.ID) || len(env.Recipients) == 0 {
			t.Fatalf("accepted envelope %+v", env)
		}
	})
}

// TestPickupRefusesMisnamedFile: a file whose envelope names another ID
// (a copy under a new name, or a caller's forgery in shared mode) would
// be listed under one ID and acted on under another.
func TestPickupRefusesMisnamedFile(t *testing.T) {
	s := newSpool(t)
	id := enqueue(t, s, "Subject: x\r\n\r\nbody\r\n")
	b, err := os.ReadFile(filepath.Join(s.Dir, IncomingDir, id))
	tcheck(t, err, "read")
	other := NewID(time.Now().Add(time.Second))
	tcheck(t, os.WriteFile(filepath.Join(s.Dir, IncomingDir, other), b, 0o600), "copy")
	ids, _ := s.Pickup()
	if len(ids) != 1 || ids[0] != id {
		t.Errorf("picked up %v, want only %s", ids, id)
	}
	if _, err := os.Stat(filepath.Join(s.Dir, FailedDir, other)); err != nil {
		t.Errorf("misnamed file not moved to failed/: %v", err)
	}
}
