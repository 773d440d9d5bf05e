package spool

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"

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
	err := s.Walk(func(e Entry) error {
		out = append(out, e)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Walk calls fn with every message in incoming/ and queue/, oldest first,
// as List returns them, and stops at the first error fn returns. It does
// not hold the whole queue: each directory is read once, the names are
// sorted (IDs sort by arrival, see NewID), and GOMAXPROCS workers read
// the files a bounded window ahead of fn, so that a listing of 100,000
// messages neither waits for one file at a time nor keeps 100,000
// envelopes in memory. Unreadable or incomplete files are skipped.
//
// An unreadable incoming/ is not an error: in shared mode only the
// runner's user may list it.
func (s *Spool) Walk(fn func(Entry) error) error {
	var dirs [2]*os.File
	var names [2][]string
	for i, d := range []string{IncomingDir, QueueDir} {
		f, n, err := openDir(s.path(d))
		if err != nil {
			if d == IncomingDir {
				continue
			}
			return err
		}
		defer f.Close()
		dirs[i], names[i] = f, n
	}
	fds := [2]int{-1, int(dirs[1].Fd())}
	if dirs[0] != nil {
		fds[0] = int(dirs[0].Fd())
	}
	return s.walk(listing(names[0], names[1]), fds, fn)
}

// openDir opens dir and reads its names; the caller closes the directory,
// whose descriptor the names are opened relative to (one path lookup
// instead of one per component).
func openDir(dir string) (*os.File, []string, error) {
	d, err := os.Open(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("spool: %w", err)
	}
	names, err := d.Readdirnames(-1)
	if err != nil {
		d.Close()
		return nil, nil, fmt.Errorf("spool: read %s: %w", dir, err)
	}
	return d, names, nil
}

// listed is a message file found by a directory read.
type listed struct {
	id       string
	incoming bool
	// hasState: queue/ID.state was listed beside a queue/ID, so the
	// listing tries to read it; without it, the message has had no
	// attempt (or had none when queue/ was read) and is not looked for.
	hasState bool
	// alsoQueued: an incoming/ID whose ID queue/ also listed.
	alsoQueued bool
	// pickup: queue/.ID.pickup with neither incoming/ID nor queue/ID
	// beside it, the only copy of a message whose pickup stopped before
	// placing it (see Pickup); the next runner or Lock places it. Where
	// incoming/ cannot be read, every copy is listed so; in shared mode
	// only the runner's user can read queue/, and it can read both.
	pickup bool
}

// listing merges the names of incoming/ and queue/ into the files to
// read, in ID order (an ID in both comes first from incoming/, as it
// arrived there first). Which queue/ID.state files exist comes from the
// same read: sorted, the names that begin with ID (ID.sending, ID.state)
// follow ID.
func listing(incoming, queued []string) []listed {
	slices.Sort(incoming)
	slices.Sort(queued)
	var q, orphans []listed
	for i, n := range queued {
		if !ValidID(n) {
			if id, ok := pickupID(n); ok && !found(incoming, id) && !found(queued, id) {
				orphans = append(orphans, listed{id: id, pickup: true})
			}
			continue
		}
		l := listed{id: n}
		for _, m := range queued[i+1:] {
			rest, ok := strings.CutPrefix(m, n)
			if !ok {
				break
			}
			if rest == ".state" {
				l.hasState = true
			}
		}
		q = append(q, l)
	}
	if len(orphans) > 0 {
		q = append(q, orphans...)
		slices.SortFunc(q, func(a, b listed) int { return strings.Compare(a.id, b.id) })
	}
	out := make([]listed, 0, len(incoming)+len(q))
	j := 0
	for _, n := range incoming {
		if !ValidID(n) {
			continue
		}
		for j < len(q) && q[j].id < n {
			out = append(out, q[j])
			j++
		}
		out = append(out, listed{id: n, incoming: true, alsoQueued: j < len(q) && q[j].id == n})
	}
	return append(out, q[j:]...)
}

// found reports whether the sorted names hold name.
func found(sorted []string, name string) bool {
	_, ok := slices.BinarySearch(sorted, name)
	return ok
}

// walkBatch is how many files a worker reads before handing them on: big
// enough that the hand-over costs little, small enough that a short
// queue still spreads over the workers.
const walkBatch = 128

// walk reads files in workers and passes the entries to fn in the order
// of files. dirfds are incoming/ and queue/ (-1: unreadable).
func (s *Spool) walk(files []listed, dirfds [2]int, fn func(Entry) error) error {
	type batch struct {
		files   []listed
		entries []Entry
		done    chan struct{}
	}
	workers := runtime.GOMAXPROCS(0)
	// At most 2*workers batches are read ahead of fn: that bounds the
	// memory, and keeps every worker busy while fn catches up.
	order := make(chan *batch, 2*workers)
	todo := make(chan *batch)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(order)
		defer close(todo)
		for start := 0; start < len(files); start += walkBatch {
			b := &batch{files: files[start:min(start+walkBatch, len(files))], done: make(chan struct{})}
			select {
			case order <- b:
			case <-stop:
				return
			}
			select {
			case todo <- b:
			case <-stop:
				return
			}
		}
	}()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := newFileReader(s)
			for b := range todo {
				b.entries = make([]Entry, 0, len(b.files))
				for _, f := range b.files {
					if e, err := r.read(dirfds, f); err == nil {
						b.entries = append(b.entries, e)
					}
				}
				close(b.done)
			}
		}()
	}
	defer wg.Wait()
	for b := range order {
		<-b.done
		for _, e := range b.entries {
			if err := fn(e); err != nil {
				close(stop)
				return err
			}
		}
	}
	return nil
}

// Entry returns the listing entry of a queued message.
func (s *Spool) Entry(id string) (Entry, error) {
	if !ValidID(id) {
		return Entry{}, fmt.Errorf("spool: %q is not a queue ID", id)
	}
	return s.entry(id)
}

func (s *Spool) entry(id string) (Entry, error) {
	d, err := os.Open(s.path(QueueDir))
	if err != nil {
		return Entry{}, err
	}
	defer d.Close()
	r := newFileReader(s)
	e, err := r.queued(int(d.Fd()), id, true)
	if errors.Is(err, fs.ErrNotExist) {
		// Listings show a message whose only copy is its pickup copy.
		if _, ierr := os.Lstat(s.path(IncomingDir, id)); errors.Is(ierr, fs.ErrNotExist) {
			return r.leftIncoming(int(d.Fd()), id)
		}
	}
	return e, err
}

// fileReader reads queue files for listings. Each worker has its own, so
// that the buffers are reused from file to file.
type fileReader struct {
	s   *Spool
	buf []byte
	br  bytes.Reader
}

// listBufSize holds a typical queue file whole (a message of a few KB
// and its envelope), so that one pread gives both the header line and
// the envelope.
const listBufSize = 16 << 10

func newFileReader(s *Spool) *fileReader {
	return &fileReader{s: s, buf: make([]byte, listBufSize)}
}

// read reads the entry of a file found by Walk.
func (r *fileReader) read(dirfds [2]int, f listed) (Entry, error) {
	if f.pickup {
		return r.leftIncoming(dirfds[1], f.id)
	}
	if !f.incoming {
		return r.queued(dirfds[1], f.id, f.hasState)
	}
	fd, env, _, err := r.open(dirfds[0], IncomingDir, f.id)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) && !f.alsoQueued {
			// Picked up since incoming/ was read: it is in queue/
			// now, as queue/ID or still as its pickup copy (or
			// delivered already), and queue/ was read before the
			// move, so this is the only chance to list it.
			return r.leftIncoming(dirfds[1], f.id)
		}
		return Entry{}, err
	}
	unix.Close(fd)
	return unplaced(env, true), nil
}

// unplaced is the entry of a message not yet in queue/ID: it has had no
// attempt and no runner holds it; only a hold from submission applies.
func unplaced(env *Envelope, incoming bool) Entry {
	e := Entry{Env: env, Status: "queued", Incoming: incoming, State: submissionHold(State{}, false, env)}
	if e.State.Held != "" {
		e.Status = "held"
	}
	return e
}

// leftIncoming reads the entry of a message no longer in incoming/: its
// pickup copy, queue/.ID.pickup, while it is the only copy, or queue/ID
// once placed.
func (r *fileReader) leftIncoming(dirfd int, id string) (Entry, error) {
	fd, env, _, err := r.open(dirfd, QueueDir, "."+id+".pickup")
	if errors.Is(err, fs.ErrNotExist) {
		// Placed since queue/ was read.
		return r.queued(dirfd, id, true)
	}
	if err != nil {
		return Entry{}, err
	}
	unix.Close(fd)
	if env.ID != id {
		return Entry{}, fmt.Errorf("%w: envelope ID %q in the copy of %s", ErrCorrupt, env.ID, id)
	}
	return unplaced(env, false), nil
}

// queued reads the entry of queue/ID, with queue/ open as dirfd. When
// tryState is false queue/ID.state is known not to exist and is not
// looked for.
func (r *fileReader) queued(dirfd int, id string, tryState bool) (Entry, error) {
	fd, env, h, err := r.open(dirfd, QueueDir, id)
	if err != nil {
		return Entry{}, err
	}
	defer unix.Close(fd)
	var st State
	found := false
	if tryState {
		if st, found, err = r.s.readStateFound(id); err != nil {
			return Entry{}, err
		}
	}
	st = submissionHold(st, found, env)
	e := Entry{Env: env, State: st}
	// A runner delivering the message holds its exclusive lock; the
	// probe's shared lock goes with the descriptor. Every runner takes
	// the lock, with or without run.lock (mailq -q, sendmail's
	// foreground delivery), so the probe cannot be skipped.
	locked := unix.Flock(fd, unix.LOCK_SH|unix.LOCK_NB) != nil
	e.Status = status(locked, r.s.marked(id, h, &st, false), &st)
	return e, nil
}

// status is the listing status of a queued message: locked says a runner
// holds it, marked that it carries a sending mark st does not answer.
func status(locked, marked bool, st *State) string {
	switch {
	case locked:
		return "sending"
	case st.Uncertain || marked:
		return "uncertain"
	case st.Held != "":
		return "held"
	case st.Attempts > 0:
		return "deferred"
	default:
		return "queued"
	}
}

// open opens dir/name (dir open as dirfd) and validates it as
// readQueueFile does, and returns the open descriptor. It reads without
// os.File (whose poller registration costs a system call per file) and
// reads a small file with one pread: a read that returns less than the
// buffer holds reached the end of the file. Were it ever short for
// another reason, the envelope would be cut and the file rejected: the
// envelope ends the file with its only newline.
//
// O_NOFOLLOW and O_NONBLOCK: in shared mode any caller can create names
// in incoming/; a symbolic link or a FIFO there is no queue file (Pickup
// skips it too) and must neither be followed nor block the listing.
func (r *fileReader) open(dirfd int, dir, name string) (int, *Envelope, header, error) {
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if err != nil {
		return -1, nil, header{}, &fs.PathError{Op: "open", Path: r.s.path(dir, name), Err: err}
	}
	n, err := unix.Pread(fd, r.buf, 0)
	if err != nil {
		unix.Close(fd)
		return -1, nil, header{}, &fs.PathError{Op: "read", Path: r.s.path(dir, name), Err: err}
	}
	var src io.ReaderAt
	size := int64(n)
	if n < len(r.buf) {
		r.br.Reset(r.buf[:n])
		src = &r.br
	} else {
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			unix.Close(fd)
			return -1, nil, header{}, &fs.PathError{Op: "stat", Path: r.s.path(dir, name), Err: err}
		}
		src, size = fdReader(fd), st.Size
	}
	env, h, err := readEnvelope(src, size)
	if err != nil {
		unix.Close(fd)
		return -1, nil, header{}, err
	}
	return fd, env, h, nil
}

// fdReader is an io.ReaderAt over a file descriptor, with pread(2).
type fdReader int

func (fd fdReader) ReadAt(p []byte, off int64) (int, error) {
	n := 0
	for n < len(p) {
		m, err := unix.Pread(int(fd), p[n:], off+int64(n))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return n, err
		}
		if m == 0 {
			return n, io.EOF
		}
		n += m
	}
	return n, nil
}
