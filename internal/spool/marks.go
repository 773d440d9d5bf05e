package spool

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
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
// dies, the kernel keeps what it wrote, and the header shows the mark; if
// the machine crashes, the header may have lost it, and only the journal
// has it. So every runner starts by folding the journals of runners that
// are gone (unlocked) into the headers: each mark is written again if it
// is missing and synced either way (a mark the page cache still shows may
// not be on disk), queue/ is synced (a removal the record outlived may not
// be either), and only then are those journals removed. The fold, and the
// creation of a journal, happen under an exclusive flock of the spool
// directory, so a runner never mistakes a journal being created for one
// left by a dead runner, and runners lock messages only once the marks of
// the dead are back. (Listing and the administrator's commands do not
// fold: after a machine crash, until the next run, they may show such a
// message as queued rather than uncertain.)
//
// A runner removes its journal when it stops, once nothing in it is
// needed: every mark it wrote is answered by a state on disk, or its
// message left queue/ and queue/ has been synced since. Otherwise the
// journal stays for the next runner to fold.
const marksPrefix = "marks."

// markJournal is one runner's journal, with group commit.
type markJournal struct {
	f    *os.File
	path string
	sync *groupSync // fdatasync of f, shared by concurrent callers; sticky

	mu  sync.Mutex
	err error // sticky: after a failed write or sync the journal is not trusted
	// reported: firstFailure has told a caller about err.
	reported bool
	// open holds the messages whose mark this runner wrote and has not
	// yet seen answered (SaveState) or removed.
	open map[string]bool
}

// ErrNoJournal says that OpenMarks restored the marks of dead runners but
// could not create a journal (a full disk, say): the run may go on, and
// MarkSending syncs each queue file instead.
var ErrNoJournal = errors.New("cannot create a marks journal")

// OpenMarks starts a run: it folds the journals of runners that are gone
// into the queue files' headers, then opens this runner's own journal,
// which MarkSending uses until CloseMarks. Call it before locking any
// message; any error but ErrNoJournal means that no message may be sent.
// Without a journal MarkSending syncs each queue file instead.
func (s *Spool) OpenMarks() error {
	s.marksMu.Lock()
	defer s.marksMu.Unlock()
	if s.marks != nil {
		return errors.New("spool: marks journal already open")
	}
	unlock, err := s.lockDir()
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
		return fmt.Errorf("spool: %w: %w", ErrNoJournal, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		os.Remove(f.Name())
		return fmt.Errorf("spool: %w: lock %s: %w", ErrNoJournal, f.Name(), err)
	}
	// The journal's own name must survive a crash, or its marks would
	// go with it.
	if err := syncDir(s.Dir); err != nil {
		f.Close()
		os.Remove(f.Name())
		return fmt.Errorf("%w: %w", ErrNoJournal, err)
	}
	j := &markJournal{f: f, path: f.Name(), open: make(map[string]bool)}
	j.sync = newGroupSync(func() error {
		if err := unix.Fdatasync(int(f.Fd())); err != nil {
			return fmt.Errorf("spool: sync %s: %w", f.Name(), err)
		}
		return nil
	}, true)
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

// lockDir takes an exclusive flock of the spool directory, waiting for a
// runner that is folding or creating its journal. Locking the directory
// itself needs no file in it: a runner that may not write there (or a
// full file system) still delivers, without a journal.
func (s *Spool) lockDir() (unlock func(), err error) {
	d, err := os.Open(s.Dir)
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	if err := unix.Flock(int(d.Fd()), unix.LOCK_EX); err != nil {
		d.Close()
		return nil, fmt.Errorf("spool: lock %s: %w", s.Dir, err)
	}
	return func() { d.Close() }, nil
}

// deadJournal is the journal of a runner that is gone, locked by us.
type deadJournal struct {
	f     *os.File
	marks map[string]int64
}

// foldMarks brings the marks of every journal whose runner is gone back
// into the queue files' headers, durably, and removes those journals.
func (s *Spool) foldMarks() error {
	names, err := readNames(s.Dir)
	if err != nil {
		return err
	}
	var dead []deadJournal
	defer func() {
		for _, d := range dead {
			d.f.Close()
		}
	}()
	for _, n := range names {
		id, ok := strings.CutPrefix(n, marksPrefix)
		if !ok || !ValidID(id) {
			continue
		}
		d, err := openDeadJournal(s.path(n))
		if err != nil {
			return err
		}
		if d != nil {
			dead = append(dead, *d)
		}
	}
	if len(dead) == 0 {
		return nil
	}
	for _, d := range dead {
		for id, n := range d.marks {
			if err := s.restoreMark(id, n); err != nil {
				return err
			}
		}
	}
	if err := s.syncQueueDir(); err != nil {
		return err
	}
	for _, d := range dead {
		if err := os.Remove(d.f.Name()); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("spool: %w", err)
		}
	}
	return nil
}

// openDeadJournal opens and reads the journal at p if its runner is gone,
// and returns nil if it is alive or the journal is already gone (removed
// by its runner, or folded by another, since the directory was read).
func openDeadJournal(p string) (*deadJournal, error) {
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, nil // a live runner's
		}
		return nil, fmt.Errorf("spool: lock %s: %w", p, err)
	}
	// Its runner may have removed it between our open and our flock.
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil || st.Nlink == 0 {
		f.Close()
		return nil, nil
	}
	d := &deadJournal{f: f, marks: make(map[string]int64)}
	r := bufio.NewReader(f)
	for {
		line, err := r.ReadBytes('\n')
		// A torn last record was never synced, so its final dot was
		// never sent; anything unparsable is skipped likewise.
		if id, n, ok := parseMark(bytes.TrimSuffix(line, []byte("\n"))); ok && n > d.marks[id] {
			d.marks[id] = n
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("spool: read %s: %w", p, err)
		}
	}
	return d, nil
}

// restoreMark makes sure the header mark of queue/ID is at least n and on
// disk. The page cache may show the mark while the disk lacks it, so the
// file is synced even when nothing is written. A message that is gone is
// skipped (foldMarks then syncs queue/, so that its removal is durable
// before the record goes).
//
// The mark is written whoever holds the message's lock. A runner that
// holds it locked it after its own fold, so its header already carries n
// (restored by that fold, or still in the page cache when the journal's
// runner was only killed) and nothing is written under it; anyone else
// holding it (a listing's probe, an administrator's command) never writes
// the mark, and must not make the fold skip it: that would lose the mark
// and let the message be sent again.
func (s *Spool) restoreMark(id string, n int64) error {
	p := s.path(QueueDir, id)
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	defer f.Close()
	h, err := readHeader(f)
	if errors.Is(err, ErrCorrupt) || err == nil && h.legacy {
		return nil // no POSTIE2 file: it cannot be delivered as such
	}
	if err != nil {
		return fmt.Errorf("spool: read %s: %w", p, err)
	}
	if h.sends < n {
		if err := writeMark(f, n); err != nil {
			return fmt.Errorf("spool: restore the mark of %s: %w", p, err)
		}
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
	if j.err != nil {
		j.mu.Unlock()
		return j.err
	}
	if _, err := j.f.Write(formatMark(id, n)); err != nil {
		j.err = fmt.Errorf("spool: %w", err) // names the write and the file
		j.mu.Unlock()
		return j.err
	}
	j.open[id] = true
	j.mu.Unlock()
	if err := j.sync.Sync(); err != nil {
		j.mu.Lock()
		if j.err == nil {
			j.err = err
		}
		j.mu.Unlock()
		return err
	}
	return nil
}

// firstFailure reports whether the journal has failed and no caller has
// been told yet.
func (j *markJournal) firstFailure() bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.err == nil || j.reported {
		return false
	}
	j.reported = true
	return true
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
