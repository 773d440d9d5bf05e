package spool

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// testIDs returns n IDs in arrival order.
func testIDs(n int) []string {
	base := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	ids := make([]string, n)
	for i := range ids {
		ids[i] = NewID(base.Add(time.Duration(i) * time.Second))
	}
	return ids
}

// putFile writes a committed queue file named id into dir (incoming/ or
// queue/) directly, with the sending mark sends: the tests choose the IDs
// and need not fsync hundreds of files.
func putFile(t *testing.T, s *Spool, dir, id string, sends int64, env Envelope, msg string) {
	t.Helper()
	env.ID, env.Size = id, int64(len(msg))
	if env.Recipients == nil {
		env.Recipients = []string{"b@example.com"}
	}
	if env.Arrival.IsZero() {
		env.Arrival = IDTime(id)
	}
	b, err := json.Marshal(&env)
	tcheck(t, err, "encode envelope")
	data := append(append(formatHeader(env.Size, sends), msg...), append(b, '\n')...)
	tcheck(t, os.WriteFile(s.path(dir, id), data, 0o600), "write queue file")
}

func putState(t *testing.T, s *Spool, id string, st State) {
	t.Helper()
	tcheck(t, s.writeState(id, &st), "write state")
}

// refList is List as it was before Walk: every file opened with os.Open,
// every state looked for, the entries sorted at the end. Walk must give
// the same entries.
func refList(t *testing.T, s *Spool) []Entry {
	t.Helper()
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
	tcheck(t, err, "queued IDs")
	for _, id := range ids {
		f, err := os.Open(s.path(QueueDir, id))
		if err != nil {
			continue
		}
		q, err := readQueueFile(f)
		if err != nil {
			f.Close()
			continue
		}
		st, err := s.readState(id)
		if err != nil {
			f.Close()
			continue
		}
		locked := unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB) != nil
		e := Entry{Env: q.Env, State: st, Status: status(locked, s.marked(id, q.hdr, &st, false), &st)}
		f.Close()
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b Entry) int { return strings.Compare(a.Env.ID, b.Env.ID) })
	return out
}

func TestListing(t *testing.T) {
	ids := testIDs(3)
	a, b, c := ids[0], ids[1], ids[2]
	tests := []struct {
		name            string
		incoming, queue []string
		want            []listed
	}{
		{"empty", nil, nil, []listed{}},
		{"merged in ID order", []string{c, a}, []string{b},
			[]listed{{id: a, incoming: true}, {id: b}, {id: c, incoming: true}}},
		{"state files from the listing", nil, []string{b + ".state", c, a + ".state", b, b + ".sending", a, a + "-x", a + ".stateX"},
			[]listed{{id: a, hasState: true}, {id: b, hasState: true}, {id: c}}},
		{"orphaned state and marker", nil, []string{a + ".state", b + ".sending", c},
			[]listed{{id: c}}},
		{"in both directories", []string{a}, []string{a + ".state", a},
			[]listed{{id: a, incoming: true, alsoQueued: true}, {id: a, hasState: true}}},
		{"names that are not IDs", []string{"notes.txt", "." + a + ".pickup", strings.ToLower(b)}, []string{"." + c + ".state.123456", c},
			[]listed{{id: c}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := listing(slices.Clone(tt.incoming), slices.Clone(tt.queue))
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("listing(%q, %q)\n got %+v\nwant %+v", tt.incoming, tt.queue, got, tt.want)
			}
		})
	}
}

// TestWalkStates lists a queue with a message in every state and gives
// the same entries as the listing before Walk.
func TestWalkStates(t *testing.T) {
	s := newSpool(t)
	ids := testIDs(11)
	msg := "Subject: x\r\n\r\nbody\r\n"
	big := "Subject: big\r\n\r\n" + strings.Repeat("0123456789abcdef\r\n", 3000) // more than listBufSize
	hist := []Attempt{{Time: time.Date(2026, 11, 28, 12, 5, 0, 0, time.UTC), Relay: "smtp.example.com", Status: "deferred", Reply: "451 4.3.0 try later"}}
	tests := []struct {
		id       string
		setup    func(id string)
		status   string
		incoming bool
	}{
		{ids[0], func(id string) { putFile(t, s, IncomingDir, id, 0, Envelope{}, msg) }, "queued", true},
		{ids[1], func(id string) { putFile(t, s, IncomingDir, id, 0, Envelope{HeldReason: "rate limit"}, msg) }, "held", true},
		{ids[2], func(id string) { putFile(t, s, QueueDir, id, 0, Envelope{Sender: ""}, big) }, "queued", false},
		{ids[3], func(id string) {
			putFile(t, s, QueueDir, id, 0, Envelope{Recipients: []string{"b@example.com", "c@example.com"}}, msg)
			putState(t, s, id, State{Attempts: 2, NextAttempt: time.Date(2026, 11, 28, 13, 0, 0, 0, time.UTC), LastError: "451 try later", Remaining: []string{"c@example.com"}, Done: []string{"b@example.com"}, History: hist})
		}, "deferred", false},
		{ids[4], func(id string) {
			putFile(t, s, QueueDir, id, 0, Envelope{}, msg)
			putState(t, s, id, State{Held: "by administrator"})
		}, "held", false},
		{ids[5], func(id string) {
			putFile(t, s, QueueDir, id, 0, Envelope{MessageID: "<x@example.com>"}, msg)
			putState(t, s, id, State{Attempts: 1, Uncertain: true, Held: "uncertain", LastError: "timeout after the final dot"})
		}, "uncertain", false},
		{ids[6], func(id string) { putFile(t, s, QueueDir, id, 1, Envelope{}, msg) }, "uncertain", false}, // marked, no state: died after the dot
		{ids[7], func(id string) {
			putFile(t, s, QueueDir, id, 1, Envelope{}, msg)
			putState(t, s, id, State{Attempts: 1, Sends: 1, LastError: "451 later"})
		}, "deferred", false},
		{ids[8], func(id string) {
			putFile(t, s, QueueDir, id, 0, Envelope{}, msg)
			p := s.path(QueueDir, id)
			toLegacy(t, p)
			tcheck(t, os.WriteFile(p+".sending", nil, 0o600), "legacy marker")
		}, "uncertain", false},
		{ids[9], func(id string) { putFile(t, s, QueueDir, id, 0, Envelope{}, msg) }, "sending", false},
		{ids[10], func(id string) {
			putFile(t, s, QueueDir, id, 0, Envelope{}, msg)
			toLegacy(t, s.path(QueueDir, id))
		}, "queued", false},
	}
	for _, tt := range tests {
		tt.setup(tt.id)
	}
	l, err := s.Lock(ids[9])
	tcheck(t, err, "lock")
	defer l.Close()

	got, err := s.List()
	tcheck(t, err, "list")
	if len(got) != len(tests) {
		t.Fatalf("listed %d messages, want %d", len(got), len(tests))
	}
	for i, tt := range tests {
		e := got[i]
		if e.Env.ID != tt.id || e.Status != tt.status || e.Incoming != tt.incoming {
			t.Errorf("entry %d: %s %q incoming=%v, want %s %q incoming=%v", i, e.Env.ID, e.Status, e.Incoming, tt.id, tt.status, tt.incoming)
		}
	}
	if want := refList(t, s); !reflect.DeepEqual(got, want) {
		t.Errorf("Walk and the old listing differ:\n got %+v\nwant %+v", got, want)
	}
	// Entry reads a single message the same way.
	for _, e := range got {
		if e.Incoming {
			continue
		}
		one, err := s.Entry(e.Env.ID)
		tcheck(t, err, "entry")
		if !reflect.DeepEqual(one, e) {
			t.Errorf("Entry(%s) = %+v, listed %+v", e.Env.ID, one, e)
		}
	}
}

// TestWalkSkips: files that are not committed queue files, or cannot be
// read, are left out, and nothing in incoming/ (where any caller can
// create names in shared mode) makes the listing follow a link or hang.
func TestWalkSkips(t *testing.T) {
	ids := testIDs(3)
	msg := "Subject: x\r\n\r\nbody\r\n"
	tests := []struct {
		name  string
		setup func(t *testing.T, s *Spool, id string)
	}{
		{"truncated envelope", func(t *testing.T, s *Spool, id string) {
			putFile(t, s, QueueDir, id, 0, Envelope{}, msg)
			p := s.path(QueueDir, id)
			fi, _ := os.Stat(p)
			tcheck(t, os.Truncate(p, fi.Size()-2), "truncate")
		}},
		{"uncommitted (length not written)", func(t *testing.T, s *Spool, id string) {
			putFile(t, s, IncomingDir, id, 0, Envelope{}, msg)
			f, err := os.OpenFile(s.path(IncomingDir, id), os.O_WRONLY, 0)
			tcheck(t, err, "open")
			f.WriteAt(formatHeader(0, 0), 0)
			f.Close()
		}},
		{"garbage", func(t *testing.T, s *Spool, id string) {
			tcheck(t, os.WriteFile(s.path(IncomingDir, id), []byte("hello\n"), 0o600), "write")
		}},
		{"empty", func(t *testing.T, s *Spool, id string) {
			tcheck(t, os.WriteFile(s.path(QueueDir, id), nil, 0o600), "write")
		}},
		{"envelope of another size", func(t *testing.T, s *Spool, id string) {
			putFile(t, s, QueueDir, id, 0, Envelope{}, msg)
			p := s.path(QueueDir, id)
			b, _ := os.ReadFile(p)
			size := fmt.Sprintf(`"size":%d`, len(msg))
			if !strings.Contains(string(b), size) {
				t.Fatalf("no %s in %s", size, b)
			}
			tcheck(t, os.WriteFile(p, []byte(strings.Replace(string(b), size, size+"0", 1)), 0o600), "write")
		}},
		{"corrupt state", func(t *testing.T, s *Spool, id string) {
			putFile(t, s, QueueDir, id, 0, Envelope{}, msg)
			tcheck(t, os.WriteFile(s.path(QueueDir, id+".state"), []byte("{"), 0o600), "write")
		}},
		{"directory", func(t *testing.T, s *Spool, id string) {
			tcheck(t, os.Mkdir(s.path(QueueDir, id), 0o700), "mkdir")
		}},
		{"FIFO in incoming", func(t *testing.T, s *Spool, id string) {
			tcheck(t, unix.Mkfifo(s.path(IncomingDir, id), 0o600), "mkfifo")
		}},
		{"symbolic link in incoming", func(t *testing.T, s *Spool, id string) {
			// A link to a valid queue file elsewhere: Pickup would
			// not take it, so the listing does not show it.
			other := New(t.TempDir())
			tcheck(t, other.Init(), "init")
			putFile(t, other, IncomingDir, id, 0, Envelope{}, msg)
			tcheck(t, os.Symlink(other.path(IncomingDir, id), s.path(IncomingDir, id)), "symlink")
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSpool(t)
			putFile(t, s, IncomingDir, ids[0], 0, Envelope{}, msg)
			tt.setup(t, s, ids[1])
			putFile(t, s, QueueDir, ids[2], 0, Envelope{}, msg)
			done := make(chan struct{})
			var got []Entry
			var err error
			go func() {
				defer close(done)
				got, err = s.List()
			}()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("List hangs")
			}
			tcheck(t, err, "list")
			var listed []string
			for _, e := range got {
				listed = append(listed, e.Env.ID)
			}
			if want := []string{ids[0], ids[2]}; !slices.Equal(listed, want) {
				t.Errorf("listed %v, want %v", listed, want)
			}
		})
	}
}

// TestWalkOrder lists more messages than the workers read ahead, spread
// over both directories, in ID order, and stops when fn fails.
func TestWalkOrder(t *testing.T) {
	s := newSpool(t)
	ids := testIDs(10 * walkBatch)
	for i, id := range ids {
		dir := QueueDir
		if i%3 == 0 {
			dir = IncomingDir
		}
		putFile(t, s, dir, id, 0, Envelope{}, fmt.Sprintf("Subject: %d\r\n\r\n", i))
	}
	var got []string
	tcheck(t, s.Walk(func(e Entry) error {
		got = append(got, e.Env.ID)
		return nil
	}), "walk")
	if !slices.Equal(got, ids) {
		t.Fatalf("walk gave %d IDs out of order (or not all of %d)", len(got), len(ids))
	}
	stop := errors.New("stop")
	n := 0
	err := s.Walk(func(e Entry) error {
		n++
		if n == walkBatch+5 {
			return stop
		}
		return nil
	})
	if err != stop || n != walkBatch+5 {
		t.Errorf("walk after fn failed: %v, %d calls", err, n)
	}
}

// TestWalkPickedUp: a message picked up after incoming/ and queue/ were
// read is found in queue/, not lost; one that queue/ listed too is not
// listed twice.
func TestWalkPickedUp(t *testing.T) {
	s := newSpool(t)
	ids := testIDs(2)
	for _, id := range ids {
		putFile(t, s, IncomingDir, id, 0, Envelope{}, "Subject: x\r\n\r\n")
	}
	inc, incNames, err := openDir(s.path(IncomingDir))
	tcheck(t, err, "read incoming")
	defer inc.Close()
	files := listing(incNames, nil)
	files[1].alsoQueued = true // as if queue/ had listed it after a copy
	_, err = s.Pickup()
	tcheck(t, err, "pickup")
	q, err := os.Open(s.path(QueueDir))
	tcheck(t, err, "open queue")
	defer q.Close()
	var got []Entry
	tcheck(t, s.walk(files, [2]int{int(inc.Fd()), int(q.Fd())}, func(e Entry) error {
		got = append(got, e)
		return nil
	}), "walk")
	if len(got) != 1 || got[0].Env.ID != ids[0] || got[0].Incoming || got[0].Status != "queued" {
		t.Errorf("listed %+v, want %s from queue/ only", got, ids[0])
	}
}

func TestWalkUnreadableIncoming(t *testing.T) {
	if os.Getuid() == 0 {
		t.Skip("root reads any directory")
	}
	s := newSpool(t)
	ids := testIDs(2)
	putFile(t, s, IncomingDir, ids[0], 0, Envelope{}, "Subject: x\r\n\r\n")
	putFile(t, s, QueueDir, ids[1], 0, Envelope{}, "Subject: x\r\n\r\n")
	tcheck(t, os.Chmod(s.path(IncomingDir), 0o300), "chmod")
	defer os.Chmod(s.path(IncomingDir), 0o700)
	l, err := s.List()
	tcheck(t, err, "list")
	if len(l) != 1 || l[0].Env.ID != ids[1] {
		t.Errorf("list = %+v, want %s only", l, ids[1])
	}
}

func TestWalkNoQueue(t *testing.T) {
	s := New(t.TempDir())
	err := s.Walk(func(Entry) error { return nil })
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("walk without queue/ = %v", err)
	}
	if _, err := newSpool(t).Entry(testIDs(1)[0]); !errors.Is(err, fs.ErrNotExist) || !errors.Is(err, syscall.ENOENT) {
		t.Errorf("Entry of a missing message = %v", err)
	}
}
