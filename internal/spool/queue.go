package spool

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/postie-mail/postie/internal/safeio"
)

// State is a queued message's delivery state, kept in ID.state.
type State struct {
	Attempts    int       `json:"attempts"`
	NextAttempt time.Time `json:"next_attempt"`
	LastError   string    `json:"last_error,omitempty"`
	// Held, when not empty, is why the message is held: it is not
	// delivered until released. "uncertain" is set by the runner.
	Held string `json:"held,omitempty"`
	// Uncertain marks a message whose last attempt may have delivered it.
	Uncertain bool `json:"uncertain,omitempty"`
	// Remaining are the recipients still owed; nil means all of the
	// envelope's.
	Remaining []string `json:"remaining,omitempty"`
	// Done are recipients delivered or bounced already.
	Done []string `json:"done,omitempty"`
	// Finished says every recipient is settled: the message is removed
	// once PendingBounce is published.
	Finished bool `json:"finished,omitempty"`
	// PendingBounce is the ID of a bounce sealed in tmp/ and not yet
	// known to be published.
	PendingBounce string `json:"pending_bounce,omitempty"`
	// UncertainRcpts are the recipients the server accepted in a
	// transaction whose outcome is unknown.
	UncertainRcpts []string `json:"uncertain_rcpts,omitempty"`
	// Sends is the queue file's sending mark (see Locked.MarkSending)
	// whose outcome this state records.
	Sends   int64     `json:"sends,omitempty"`
	History []Attempt `json:"history,omitempty"`
}

// Attempt records one delivery attempt.
type Attempt struct {
	Time   time.Time `json:"time"`
	Relay  string    `json:"relay,omitempty"`
	Status string    `json:"status"`
	Reply  string    `json:"reply,omitempty"`
}

// maxHistory bounds the attempts kept in the state file.
const maxHistory = 20

// Addattempt appends to the history, dropping the oldest beyond maxHistory.
func (st *State) AddAttempt(a Attempt) {
	st.History = append(st.History, a)
	if n := len(st.History); n > maxHistory {
		st.History = slices.Delete(st.History, 0, n-maxHistory)
	}
}

// Pending returns the recipients still owed.
func (st *State) Pending(env *Envelope) []string {
	if st.Remaining != nil {
		return st.Remaining
	}
	return env.Recipients
}

// ErrLocked is returned by Lock when another process holds the message.
var ErrLocked = errors.New("message is being delivered by another process")

// Locked is a queued message held under an exclusive lock.
type Locked struct {
	*QueueFile
	ID    string
	State State
	s     *Spool
	// hasState says ID.state exists, so that Remove does not unlink
	// what is not there.
	hasState bool
	// sending: the file carries a mark newer than the state (see
	// MarkSending). cleared: ClearSending was called; for a POSTIE1
	// file, SaveState then removes its ID.sending marker.
	sending, cleared bool
	// wrote is the highest mark written into the header in this
	// attempt, durable or not; hdr.sends counts only durable ones.
	wrote int64
}

// Lock opens queue/ID and takes its exclusive lock without waiting. A
// message whose only copy is an unplaced pickup copy is placed first (see
// placeOrphan), and other names a half-done rename left the file are
// removed (see unalias): both sync the directories they change.
func (s *Spool) Lock(id string) (*Locked, error) {
	if !ValidID(id) {
		return nil, fmt.Errorf("spool: %q is not a queue ID", id)
	}
	p := s.path(QueueDir, id)
	// Read-write: MarkSending writes the file's counter in place.
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if errors.Is(err, fs.ErrNotExist) {
		// Delivered by another runner, or not placed yet: its pickup
		// stopped after committing the copy.
		placed, perr := s.placeOrphan(id)
		if perr != nil {
			return nil, perr
		}
		if placed {
			f, err = os.OpenFile(p, os.O_RDWR, 0)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("spool: open %s: %w", p, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, ErrLocked
		}
		return nil, fmt.Errorf("spool: lock %s: %w", p, err)
	}
	// The file may have been removed between open and flock by the
	// process that held the lock: it was delivered.
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("spool: stat %s: %w", p, err)
	}
	if pi, err := os.Stat(p); err != nil || !os.SameFile(fi, pi) {
		f.Close()
		return nil, fmt.Errorf("spool: open %s: %w", p, fs.ErrNotExist)
	}
	if fi.Sys().(*syscall.Stat_t).Nlink > 1 {
		if err := s.unalias(id, fi); err != nil {
			f.Close()
			return nil, err
		}
	}
	q, err := readQueueFile(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("spool: %s: %w", p, err)
	}
	l := &Locked{QueueFile: q, ID: id, s: s}
	st, found, err := s.readStateFound(id)
	if err != nil {
		f.Close()
		return nil, err
	}
	l.State, l.hasState = submissionHold(st, found, q.Env), found
	l.sending = s.marked(id, q.hdr, &st, true)
	return l, nil
}

// unalias removes the other names of queue/ID, whose file is fi. Where
// RENAME_NOREPLACE is missing a rename is a link, then a remove (see
// renameNoReplace); stopped in between, the message keeps its old name,
// incoming/ID or queue/.ID.pickup, beside queue/ID. Left there, that name
// would bring the message back once queue/ID is removed, delivered or
// deleted.
func (s *Spool) unalias(id string, fi os.FileInfo) error {
	for _, old := range []string{s.path(IncomingDir, id), s.pickupPath(id)} {
		oi, err := os.Lstat(old)
		if err != nil || !os.SameFile(fi, oi) {
			continue
		}
		// A pickup may be removing the same name (see Pickup).
		if err := os.Remove(old); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("spool: %w", err)
		}
		if err := syncDir(filepath.Dir(old)); err != nil {
			return err
		}
	}
	return nil
}

// marked reports whether a runner marked the message as sending and did
// not record the outcome: it died between the final dot and the reply
// (or before recording the reply). For a POSTIE1 file that is an
// ID.sending marker not older than the state; a stale marker is removed
// when clean is set.
func (s *Spool) marked(id string, h header, st *State, clean bool) bool {
	if !h.legacy {
		return h.sends > st.Sends
	}
	mp := s.path(QueueDir, id+".sending")
	m, err := os.Stat(mp)
	if err != nil {
		return false
	}
	// Strictly newer: timestamps are coarse (a few ms), and an equal one
	// could be a previous attempt's state; then the message is held as
	// uncertain, the safe side.
	if sf, err := os.Stat(s.path(QueueDir, id+".state")); err == nil && sf.ModTime().After(m.ModTime()) {
		if clean {
			os.Remove(mp)
		}
		return false
	}
	return true
}

func (s *Spool) readState(id string) (State, error) {
	st, _, err := s.readStateFound(id)
	return st, err
}

func (s *Spool) readStateFound(id string) (State, bool, error) {
	var st State
	p := s.path(QueueDir, id+".state")
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return st, false, nil
	}
	if err != nil {
		return st, false, fmt.Errorf("spool: read %s: %w", p, err)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, true, fmt.Errorf("spool: %s: %w", p, err)
	}
	return st, true, nil
}

// Sending reports whether the message carried the sending mark when it
// was locked, or has been marked since: a runner died in the middle of
// its final dot.
func (l *Locked) Sending() bool { return l.sending }

// SaveState writes l.State atomically and durably. After ClearSending it
// also drops a POSTIE1 file's ID.sending marker: the state now on disk
// answers it.
func (l *Locked) SaveState() error {
	if err := l.s.writeState(l.ID, &l.State); err != nil {
		return err
	}
	l.hasState = true
	if l.cleared {
		l.s.answered(l.ID)
		if l.sending && l.hdr.legacy {
			os.Remove(l.s.path(QueueDir, l.ID+".sending"))
		}
		l.sending, l.cleared = false, false
	}
	return nil
}

func (s *Spool) writeState(id string, st *State) error {
	b, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("spool: encode state: %w", err)
	}
	if err := safeio.WriteFile(s.path(QueueDir, id+".state"), b); err != nil {
		return fmt.Errorf("spool: write state of %s: %w", id, err)
	}
	return s.syncQueueDir()
}

// MarkSending durably records that the final dot is about to be sent, so
// that a runner killed before it records the reply leaves a message that
// the next one holds as uncertain instead of sending it again.
//
// The mark is the counter in the queue file's header: it is raised to
// one more than State.Sends, which counts the marks whose outcome the
// state records, with a pwrite of a block the file already has. With a
// marks journal open (OpenMarks) the mark is made durable by the
// journal, whose syncs concurrent connections share; without one, by an
// fdatasync of the queue file. A mark already pending (a second host in
// the same attempt) is not written again.
func (l *Locked) MarkSending() error {
	if l.hdr.legacy {
		return l.markLegacy()
	}
	if l.hdr.sends > l.State.Sends {
		l.sending, l.cleared = true, false
		return nil
	}
	n := l.State.Sends + 1
	if n > maxSends {
		return fmt.Errorf("spool: mark %s: counter exhausted", l.Name())
	}
	if err := writeMark(l.f, n); err != nil {
		return fmt.Errorf("spool: mark %s: %w", l.Name(), err)
	}
	// The header carries the mark from here, but only once it is
	// durable does hdr.sends count it: a second host in this attempt
	// must not send its dot on a mark that failed to reach the disk.
	l.wrote = n
	l.s.marksMu.Lock()
	j := l.s.marks
	l.s.marksMu.Unlock()
	// A journal that cannot take the mark (a full disk: the header's
	// block is already allocated, a journal's next one may not be) falls
	// back to syncing the queue file, so that a full spool still
	// delivers, and frees space.
	var jerr error
	if j != nil {
		jerr = j.add(l.ID, n)
		if jerr != nil && j.firstFailure() && l.s.Warn != nil {
			l.s.Warn("%v; syncing each queue file's mark instead", jerr)
		}
	}
	if j == nil || jerr != nil {
		if err := unix.Fdatasync(int(l.f.Fd())); err != nil {
			return fmt.Errorf("spool: mark %s: sync: %w", l.Name(), err)
		}
	}
	l.hdr.sends = n
	l.sending, l.cleared = true, false
	return nil
}

// markLegacy marks a POSTIE1 file, which has no counter, with an
// ID.sending file and a sync of queue/.
func (l *Locked) markLegacy() error {
	p := l.s.path(QueueDir, l.ID+".sending")
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("spool: mark %s: %w", p, err)
	}
	f.Close()
	l.sending, l.cleared = true, false
	return l.s.syncQueueDir()
}

// ClearSending says that l.State now records the outcome of the marked
// final dot (delivered, refused, deferred or uncertain). It takes effect
// with the next SaveState, which must follow: until the state is on disk
// the mark stands, and a crash in between leaves the message uncertain.
func (l *Locked) ClearSending() {
	if !l.hdr.legacy {
		// A mark written but never made durable is answered too: its
		// dot was not sent.
		l.State.Sends = max(l.hdr.sends, l.wrote)
	}
	l.cleared = true
}

// Remove deletes the message (done: delivered, bounced or deleted) and
// releases the lock. The directory is not synced here: see the package
// doc; call SyncQueue after a batch.
func (l *Locked) Remove() error {
	p := l.s.path(QueueDir, l.ID)
	if err := os.Remove(p); err != nil {
		return fmt.Errorf("spool: remove %s: %w", p, err)
	}
	if l.hasState {
		os.Remove(p + ".state")
	}
	if l.sending && l.hdr.legacy {
		os.Remove(p + ".sending")
	}
	l.s.answered(l.ID)
	return l.Close()
}

// SyncQueue makes removals in queue/ durable.
func (s *Spool) SyncQueue() error { return s.syncQueueDir() }

// Pickup moves complete messages from incoming/ into queue/. Files owned by
// the current user are renamed; files written by other users (shared mode)
// are copied into files of our own, and the originals removed, so that the
// caller keeps no handle on what the runner delivers. A file that is not a
// valid queue file is moved to failed/. It returns the IDs picked up.
//
// A copy enters queue/ in three steps, each made durable before the next,
// so that a kill or a crash at any instant leaves the message either
// still in incoming/ (the copy, queue/.ID.pickup, is then thrown away and
// made again) or only in the copy, which CleanTmp, or a Lock of its ID,
// moves into place (listings show it meanwhile): never
// in incoming/ and queue/ at once, which would deliver it twice once queue/
// had delivered it. First the copies are written and synced with queue/;
// then the originals are removed and incoming/ synced; only then are the
// copies renamed to queue/ID.
//
// Pickups run one at a time, under a flock of incoming/ itself: two
// copying the same caller's file would each remove and remake
// queue/.ID.pickup under the other, and one could commit the other's copy
// before it was synced.
func (s *Spool) Pickup() ([]string, error) {
	dir := s.path(IncomingDir)
	d, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	defer d.Close()
	if err := unix.Flock(int(d.Fd()), unix.LOCK_EX); err != nil {
		return nil, fmt.Errorf("spool: lock %s: %w", dir, err)
	}
	names, err := d.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("spool: read %s: %w", dir, err)
	}
	var ids, copied []string
	uid := os.Getuid()
	for _, name := range names {
		if !ValidID(name) {
			continue
		}
		src := s.path(IncomingDir, name)
		dst := s.path(QueueDir, name)
		fi, err := os.Lstat(src)
		if err != nil || !fi.Mode().IsRegular() {
			continue
		}
		st := fi.Sys().(*syscall.Stat_t)
		if st.Nlink > 1 {
			if qi, err := os.Lstat(dst); err == nil && os.SameFile(fi, qi) {
				// A rename without RENAME_NOREPLACE (link, then
				// remove) stopped half-way: the message is in
				// queue/ already, with any mark a runner has given
				// it since, and only this name must go.
				if err := os.Remove(src); err != nil {
					s.warn("%s: %v", name, err)
				}
				continue
			}
		}
		if int(st.Uid) == uid {
			err = s.pickupOwned(src, dst, name)
		} else {
			err = s.copyIn(src, name)
		}
		if err != nil {
			if errors.Is(err, ErrCorrupt) {
				os.Rename(src, s.path(FailedDir, name))
			}
			s.warn("%s: cannot pick up %s: %v", name, src, err)
			continue
		}
		if int(st.Uid) != uid {
			copied = append(copied, name)
			continue
		}
		ids = append(ids, name)
	}
	if len(copied) > 0 {
		done, err := s.commitCopies(copied)
		ids = append(ids, done...)
		if err != nil {
			return ids, err
		}
	}
	if len(ids) > 0 {
		if err := syncDir(s.path(QueueDir)); err != nil {
			return ids, err
		}
		if err := syncDir(dir); err != nil {
			return ids, err
		}
	}
	return ids, nil
}

func (s *Spool) warn(format string, a ...any) {
	if s.Warn != nil {
		s.Warn(format, a...)
	}
}

// submissionHold is the state of a queued message as runners and listings
// must see it. A message held at submission (a rate limit) carries the
// hold in its envelope, and keeps it until a state file is written: a
// release writes one with no hold, and a state file, once there, says
// everything. Pickup writes nothing for the hold, so no instant of a
// pickup can lose it.
func submissionHold(st State, found bool, env *Envelope) State {
	if !found && env.HeldReason != "" {
		st.Held = env.HeldReason
	}
	return st
}

// pickupOwned validates src, a file of ours, and renames it to dst.
func (s *Spool) pickupOwned(src, dst, name string) error {
	q, err := OpenFile(src)
	if err != nil {
		return err
	}
	defer q.Close()
	if err := admit(q, src, name); err != nil {
		return err
	}
	return renameNoReplace(src, dst)
}

// pickupPath is the copy of incoming/ID that Pickup makes in queue/.
func (s *Spool) pickupPath(id string) string { return s.path(QueueDir, "."+id+".pickup") }

// copyIn copies src, another user's file, to queue/.ID.pickup, syncs the
// copy and validates it (the copy, not the original, which its owner
// could change in between). A copy left by an earlier pickup that did not
// finish is replaced: its original is still here, so it was never
// committed.
func (s *Spool) copyIn(src, name string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp := s.pickupPath(name)
	if err := os.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	out, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, io.NewSectionReader(in, 0, 1<<62))
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		var q *QueueFile
		if q, err = OpenFile(tmp); err == nil {
			err = admit(q, tmp, name)
			q.Close()
		}
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

// commitCopies moves the copies of ids (made by copyIn) into queue/ once
// their originals are gone: see Pickup. It returns the IDs now in queue/.
func (s *Spool) commitCopies(ids []string) ([]string, error) {
	if err := syncDir(s.path(QueueDir)); err != nil {
		return nil, err
	}
	var gone []string
	for _, id := range ids {
		if err := os.Remove(s.path(IncomingDir, id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			// The original stays, so the copy must not enter queue/.
			os.Remove(s.pickupPath(id))
			s.warn("%s: cannot pick up %s: %v", id, s.path(IncomingDir, id), err)
			continue
		}
		gone = append(gone, id)
	}
	if len(gone) == 0 {
		return nil, nil
	}
	if err := syncDir(s.path(IncomingDir)); err != nil {
		return nil, err
	}
	var done []string
	for _, id := range gone {
		if _, err := s.placeCopy(id); err != nil {
			s.warn("%s: %v", id, err)
			continue
		}
		done = append(done, id)
	}
	return done, nil
}

// placeCopy renames queue/.ID.pickup, whose original is gone, to
// queue/ID, and reports whether it did (not when another runner placed it
// first). A queue/ID already there is this message: IDs are unique, and
// the copy is dropped. A copy that is not a whole queue file is an error.
func (s *Spool) placeCopy(id string) (bool, error) {
	tmp, dst := s.pickupPath(id), s.path(QueueDir, id)
	q, err := OpenFile(tmp)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("spool: %w", err)
	}
	q.Close()
	err = renameNoReplace(tmp, dst)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	case errors.Is(err, fs.ErrExist):
		os.Remove(tmp)
		return false, nil
	}
	return false, fmt.Errorf("spool: %w", err)
}

// admit checks a valid queue file at path before it enters queue/ as
// name, and clears a sending mark it carries: the envelope must name the
// file (listings and -d/-s act on the name), and a mark means nothing
// outside queue/. A file the administrator put back by hand (from
// failed/, say) is a new submission as far as the runner knows.
func admit(q *QueueFile, path, name string) error {
	if q.Env.ID != name {
		return fmt.Errorf("%w: envelope ID %q does not match the file name", ErrCorrupt, q.Env.ID)
	}
	if q.hdr.sends == 0 {
		return nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := writeMark(f, 0); err != nil {
		return fmt.Errorf("spool: clear the mark of %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("spool: clear the mark of %s: %w", path, err)
	}
	q.hdr.sends = 0
	return nil
}

// CleanTmp removes files in tmp/ (and stale temporaries in queue/) older
// than grace: writers that crashed. The grace period must exceed the
// longest time a caller may take to write a message (cron pipes a job's
// output while the job runs). A pickup's copy whose original is gone was
// committed by a pickup that stopped before placing it: it is the
// message's only copy, and CleanTmp places it in queue/ at once.
func (s *Spool) CleanTmp(now time.Time, grace time.Duration) {
	for _, d := range []string{TmpDir, QueueDir} {
		dir := s.path(d)
		names, err := readNames(dir)
		if err != nil {
			continue
		}
		for _, n := range names {
			if d == QueueDir && !strings.HasPrefix(n, ".") {
				// Orphaned state or marker of a removed message.
				if base, _, ok := strings.Cut(n, "."); ok && ValidID(base) {
					if _, err := os.Stat(s.path(QueueDir, base)); errors.Is(err, fs.ErrNotExist) {
						os.Remove(s.path(QueueDir, n))
					}
				}
				continue
			}
			if id, ok := pickupID(n); ok && d == QueueDir {
				// A copy that is not placed goes with age, as other
				// temporaries do: one whose original is still there
				// (its pickup did not commit), or one that never
				// finished, whose owner removed the original. One
				// that could not be placed for another reason (an
				// I/O error) may be the message's only copy: it stays
				// for the next run.
				placed, err := s.placeOrphan(id)
				if placed {
					continue
				}
				if err != nil && !errors.Is(err, ErrCorrupt) {
					s.warn("%s: cannot place the copy %s: %v", id, n, err)
					continue
				}
			}
			p := s.path(d, n)
			if fi, err := os.Lstat(p); err == nil && now.Sub(fi.ModTime()) > grace {
				os.Remove(p)
			}
		}
	}
}

// placeOrphan places queue/.ID.pickup when it is the message's only
// copy: a pickup committed it and removed incoming/ID, then stopped (or
// has not got to placing it yet). It reports whether it placed the copy;
// there is nothing to place when either file is missing.
//
// incoming/ is synced first. The original's removal may be another
// runner's, not yet synced, and the copy must not be delivered while a
// crash of the machine could still bring the original back, to be picked
// up and delivered a second time.
func (s *Spool) placeOrphan(id string) (bool, error) {
	if _, err := os.Lstat(s.pickupPath(id)); err != nil {
		return false, nil
	}
	if _, err := os.Lstat(s.path(IncomingDir, id)); !errors.Is(err, fs.ErrNotExist) {
		return false, err
	}
	if err := syncDir(s.path(IncomingDir)); err != nil {
		return false, err
	}
	placed, err := s.placeCopy(id)
	if placed {
		err = syncDir(s.path(QueueDir))
	}
	return placed, err
}

// pickupID returns the ID of a name "."+ID+".pickup" (see pickupPath).
func pickupID(name string) (string, bool) {
	rest, ok := strings.CutPrefix(name, ".")
	if !ok {
		return "", false
	}
	id, ok := strings.CutSuffix(rest, ".pickup")
	return id, ok && ValidID(id)
}

func readNames(dir string) ([]string, error) {
	d, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("spool: read %s: %w", dir, err)
	}
	return names, nil
}

// QueuedIDs lists the IDs in queue/, oldest first.
func (s *Spool) QueuedIDs() ([]string, error) {
	names, err := readNames(s.path(QueueDir))
	if err != nil {
		return nil, err
	}
	ids := names[:0]
	for _, n := range names {
		if ValidID(n) {
			ids = append(ids, n)
		}
	}
	slices.Sort(ids)
	return ids, nil
}

// UpdateState applies fn to the state of message id under its lock: for
// administrative commands (hold, release, requeue) that must not race a
// delivery. It returns ErrLocked while the message is being delivered.
func (s *Spool) UpdateState(id string, fn func(env *Envelope, st *State) error) error {
	l, err := s.Lock(id)
	if err != nil {
		return err
	}
	defer l.Close()
	if err := fn(l.Env, &l.State); err != nil {
		return err
	}
	return l.SaveState()
}

// CopyToFailed keeps a copy of a locked message's queue file in failed/,
// for messages that can be neither delivered nor bounced.
func (s *Spool) CopyToFailed(l *Locked) error {
	dst := s.path(FailedDir, l.ID)
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	_, err = io.Copy(out, io.NewSectionReader(l.f, 0, 1<<62))
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(dst)
		return fmt.Errorf("spool: copy to %s: %w", dst, err)
	}
	return syncDir(s.path(FailedDir))
}

// QueuePath returns the path of queue/ID.
func (s *Spool) QueuePath(id string) string { return s.path(QueueDir, id) }

// HasIncoming reports whether incoming/ holds anything to pick up.
func (s *Spool) HasIncoming() bool {
	d, err := os.Open(s.path(IncomingDir))
	if err != nil {
		return false
	}
	defer d.Close()
	names, _ := d.Readdirnames(1)
	return len(names) > 0
}
