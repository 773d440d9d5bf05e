package spool

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// The marks journal.
//
// A sending mark must be on disk before the final dot: a machine that
// crashes after the dot and loses the mark would send the message again.
// Syncing each queue file's header costs one device flush per message,
// and the connections of a runner wait for each other's flushes: with the
// journal, a runner's connections share them instead.
//
// A runner with a journal open (Spool.OpenMarks) raises the mark in the
// queue file's header with a pwrite alone, appends "ID N" to its journal
// (marks.ID in the spool directory, under an exclusive flock for as long
// as it runs), and returns once an fdatasync of the journal that began
// after the append has completed; appends made while a sync runs are
// covered by the next one, so eight connections need far fewer than eight
// flushes. Readers still look only at the header: if the runner process
// dies, the kernel keeps what it wrote, and the header shows the mark.
// Only a crash of the machine can lose a header mark the journal has;
// every runner therefore starts by folding the journals of runners that
// are gone (unlocked) into the headers, durably, and removing them. The
// fold and the creation of a journal happen under marks.lock, so a runner
// never mistakes a journal being created for one left by a dead runner,
// and no runner locks a message before the marks of the dead are back.
//
// A runner removes its journal when it stops, once nothing in it is
// needed: every mark it wrote is answered by a state on disk, or its
// message was removed and queue/ has been synced since. Otherwise the
// journal stays for the next runner to fold.
const (
	marksPrefix = "marks."
	marksLock   = "marks.lock"
)

// markJournal is one runner's journal, with group commit.
type markJournal struct {
	f    *os.File
	path string

	mu      sync.Mutex
	cond    *sync.Cond
	written uint64 // records appended
	synced  uint64 // records covered by a completed fdatasync
	syncing bool
	err     error // sticky: after a failed write or sync the journal is not trusted
	// open holds the messages whose mark this runner wrote and has not
	// yet seen answered (SaveState) or removed.
	open map[string]bool
}

// ErrNoJournal says that OpenMarks restored the marks of dead runners but
// could not create a journal (a full disk, say): the run may go on, and
// MarkSending syncs each queue file instead.
var ErrNoJournal = errors.New("no marks journal")

// OpenMarks starts a run: it folds the journals of runners that are gone
// into the queue files' headers, then opens this runner's own journal,
// which MarkSending uses until CloseMarks. Call it before locking any
// message; any error but ErrNoJournal means that no message may be sent.
// Without a journal MarkSending syncs each queue file instead.
func (s *Spool) OpenMarks() error {
	s.marksMu.Lock()
	defer s.marksMu.Unlock()
	if s.marks != nil {
		return nil
	}
	unlock, err := s.lockMarks()
	if err != nil {
		return err
	}
	defer unlock()
	if err := s.foldMarks(); err != nil {
		return err
	}
	var f *os.File
	for range 5 {
		p := s.path(marksPrefix + NewID(time.Now()))
		f, err = os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL|os.O_APPEND, 0o600)
		if !errors.Is(err, fs.ErrExist) {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("spool: create marks journal: %w: %w", ErrNoJournal, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		os.Remove(f.Name())
		return fmt.Errorf("spool: lock %s: %w: %w", f.Name(), ErrNoJournal, err)
	}
	// The journal's own name must survive a crash, or its marks would
	// go with it.
	if err := syncDir(s.Dir); err != nil {
		f.Close()
		os.Remove(f.Name())
		return fmt.Errorf("%w: %w", ErrNoJournal, err)
	}
	j := &markJournal{f: f, path: f.Name(), open: make(map[string]bool)}
	j.cond = sync.NewCond(&j.mu)
	s.marks = j
	return nil
}

// CloseMarks ends a run: it removes the runner's journal when every mark
// in it is answered (after syncing queue/, which makes the removals of
// delivered messages durable), and otherwise leaves it for the next
// runner to fold.
func (s *Spool) CloseMarks() error {
	s.marksMu.Lock()
	defer s.marksMu.Unlock()
	j := s.marks
	if j == nil {
		return nil
	}
	s.marks = nil
	j.mu.Lock()
	clean := j.err == nil && len(j.open) == 0
	j.mu.Unlock()
	var err error
	if clean {
		if err = s.syncQueueDir(); err == nil {
			err = os.Remove(j.path)
		}
	}
	if cerr := j.f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("spool: close marks journal: %w", err)
	}
	return nil
}

// lockMarks takes marks.lock, waiting for a runner that is folding or
// creating its journal.
func (s *Spool) lockMarks() (unlock func(), err error) {
	p := s.path(marksLock)
	f, err := os.OpenFile(p, os.O_RDONLY|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("spool: open %s: %w", p, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("spool: lock %s: %w", p, err)
	}
	return func() { f.Close() }, nil
}

// foldMarks brings the marks of every journal whose runner is gone back
// into the queue files' headers, durably, and removes those journals.
func (s *Spool) foldMarks() error {
	names, err := readNames(s.Dir)
	if err != nil {
		return err
	}
	for _, n := range names {
		id, ok := strings.CutPrefix(n, marksPrefix)
		if !ok || !ValidID(id) {
			continue
		}
		if err := s.foldJournal(s.path(n)); err != nil {
			return err
		}
	}
	return nil
}

func (s *Spool) foldJournal(p string) error {
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("spool: open %s: %w", p, err)
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil // a live runner's
		}
		return fmt.Errorf("spool: lock %s: %w", p, err)
	}
	marks := make(map[string]int64)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// A torn last record was never synced, so its final dot was
		// never sent; anything unparsable is skipped likewise.
		id, n, ok := parseMark(sc.Bytes())
		if ok && n > marks[id] {
			marks[id] = n
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("spool: read %s: %w", p, err)
	}
	for id, n := range marks {
		if err := s.restoreMark(id, n); err != nil {
			return err
		}
	}
	if err := os.Remove(p); err != nil {
		return fmt.Errorf("spool: remove %s: %w", p, err)
	}
	return nil
}

// restoreMark raises the header mark of queue/ID to n, durably, unless
// it is there already (it is, unless the machine crashed) or the message
// is gone.
func (s *Spool) restoreMark(id string, n int64) error {
	p := s.path(QueueDir, id)
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("spool: open %s: %w", p, err)
	}
	defer f.Close()
	h, err := readHeader(f)
	if err != nil || h.legacy || h.sends >= n {
		return nil
	}
	if _, err := f.WriteAt(fmt.Appendf(nil, "%010d", n), int64(sendsOff)); err != nil {
		return fmt.Errorf("spool: restore the mark of %s: %w", p, err)
	}
	if err := unix.Fdatasync(int(f.Fd())); err != nil {
		return fmt.Errorf("spool: restore the mark of %s: sync: %w", p, err)
	}
	return nil
}

func formatMark(id string, n int64) []byte {
	return fmt.Appendf(nil, "%s %010d\n", id, n)
}

func parseMark(b []byte) (id string, n int64, ok bool) {
	i := bytes.IndexByte(b, ' ')
	if i < 0 || len(b)-i-1 != sendsLen || !ValidID(string(b[:i])) {
		return "", 0, false
	}
	n, err := strconv.ParseInt(string(b[i+1:]), 10, 64)
	if err != nil || n <= 0 {
		return "", 0, false
	}
	return string(b[:i]), n, true
}

// add appends a mark and returns once a sync of the journal that began
// after the append has completed.
func (j *markJournal) add(id string, n int64) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.err != nil {
		return j.err
	}
	if _, err := j.f.Write(formatMark(id, n)); err != nil {
		j.err = fmt.Errorf("spool: write %s: %w", j.path, err)
		return j.err
	}
	j.open[id] = true
	j.written++
	need := j.written
	for j.synced < need && j.err == nil {
		if j.syncing {
			j.cond.Wait()
			continue
		}
		j.syncing = true
		gen := j.written
		j.mu.Unlock()
		err := unix.Fdatasync(int(j.f.Fd()))
		j.mu.Lock()
		j.syncing = false
		if err != nil {
			// After a failed sync the kernel may report the next
			// one clean without having written anything.
			j.err = fmt.Errorf("spool: sync %s: %w", j.path, err)
		} else {
			j.synced = gen
		}
		j.cond.Broadcast()
	}
	return j.err
}

// answered forgets the journal's mark of id, if there is a journal: the
// state on disk records the outcome, or the message left queue/.
func (s *Spool) answered(id string) {
	s.marksMu.Lock()
	j := s.marks
	s.marksMu.Unlock()
	if j == nil {
		return
	}
	j.mu.Lock()
	delete(j.open, id)
	j.mu.Unlock()
}
