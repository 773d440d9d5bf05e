// Package spool is Postie's on-disk queue.
//
// # Layout
//
// Under the spool directory:
//
//	tmp/       files being written by sendmail (tmp/ID), and nothing else
//	incoming/  complete messages handed over by sendmail, not yet picked up
//	queue/     messages owned by the queue runner:
//	             ID          the queue file (immutable once written, but
//	                         for the sending mark in its header line)
//	             ID.state    delivery state, JSON (absent until the first attempt
//	                         or an administrator's hold or release; while
//	                         absent, a hold from submission in the envelope
//	                         applies)
//	             ID.sending  marker of a POSTIE1 file: the final dot may have been sent
//	             .ID.*       temporary files of atomic state updates
//	             .ID.pickup  a pickup's copy of another user's incoming/ID
//	failed/    queue files that can be neither delivered nor bounced
//	run.lock   held by the background runner; kick: "scan again"
//	marks.ID   a runner's journal of sending marks, locked while it runs
//
// A queue file is one header line, the message, then the envelope:
//
//	POSTIE2 <20-digit decimal length of the message> <10-digit sending mark>\n
//	<message: header and body, CRLF line endings, as it will be sent>
//	<envelope: one JSON object>\n
//
// The length is written last (with pwrite) just before the file is synced,
// so a file whose header line is not complete and consistent with its size
// is a file that was never committed; readers reject it. Files written
// before the mark existed begin "POSTIE1 <length>\n"; they are read and
// delivered as before, marked with an ID.sending file.
//
// # Durability
//
// Writers follow Maildir: create tmp/ID with O_EXCL, write, fsync the file,
// rename it into incoming/ without replacing anything, fsync incoming/.
// Only then does sendmail exit 0. A crash at any earlier instant leaves at
// most a file in tmp/, which the runner deletes after a grace period.
//
// Delivery state is written to queue/.ID.state.RANDOM, synced, and renamed
// over queue/ID.state, then queue/ is synced: a reader sees the old state or
// the new one, never a mixture. Before the final dot of a delivery the
// runner raises the sending mark in the queue file's header (a pwrite,
// made durable by its marks journal, whose fdatasyncs the runner's
// connections share: see marks.go). The state's "sends" says which mark
// it has answered; a message found with a mark its state has not
// answered, and no runner holding its lock, may have been delivered, and
// is held as "uncertain" rather than sent twice. Because of that mark, a delivered message can be
// removed without waiting for the directory sync: if the removal is lost
// in a crash the message comes back marked uncertain (the runner's journal
// keeps the mark until queue/ is synced), never as a fresh message.
//
// # Privileges
//
// In single-user mode (the spool belongs to the calling user) every
// directory is 0700. In shared mode (installed by the package) the spool
// belongs to the runner's user; tmp/ and incoming/ are mode 1730 with the
// drop group, to which sendmail is setgid: sendmail can create files there
// but cannot list or read the directory, and the sticky bit keeps callers
// from removing each other's files. The runner copies each incoming file
// into queue/ (0700), re-validating it, since it was written by an
// unprivileged caller.
//
// # Locking
//
// A runner delivering a message holds an exclusive flock(2) on its queue
// file, so two flushes never deliver the same message twice. A runner
// holds a flock on its marks journal while it runs, and one on the spool
// directory while it folds dead runners' journals and creates its own.
package spool

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// Directory names under the spool root.
const (
	TmpDir      = "tmp"
	IncomingDir = "incoming"
	QueueDir    = "queue"
	FailedDir   = "failed"
)

// Spool is a spool directory. It must not be copied after first use.
type Spool struct {
	Dir string
	// Warn, when set, is told about files Pickup cannot take (so that
	// a message stuck in incoming/ is visible in the log).
	Warn func(format string, args ...any)

	syncOnce  sync.Once
	queueSync *groupSync

	// marks is the runner's marks journal, between OpenMarks and
	// CloseMarks (see marks.go).
	marksMu sync.Mutex
	marks   *markJournal
}

// New returns the spool at dir; it does not touch the file system.
func New(dir string) *Spool { return &Spool{Dir: dir} }

// syncQueueDir fsyncs queue/, sharing the fsync with concurrent callers.
func (s *Spool) syncQueueDir() error {
	s.syncOnce.Do(func() {
		dir := s.path(QueueDir)
		s.queueSync = newGroupSync(func() error { return syncDir(dir) }, false)
	})
	return s.queueSync.Sync()
}

func (s *Spool) path(elem ...string) string {
	return filepath.Join(append([]string{s.Dir}, elem...)...)
}

// Init creates the spool directories for single-user mode (0700) if they
// do not exist. A spool set up by the package (shared mode) is left alone.
func (s *Spool) Init() error {
	if err := os.MkdirAll(s.Dir, 0o700); err != nil {
		return fmt.Errorf("spool: create %s: %w", s.Dir, err)
	}
	for _, d := range []string{TmpDir, IncomingDir, QueueDir, FailedDir} {
		p := s.path(d)
		if err := os.Mkdir(p, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("spool: create %s: %w", p, err)
		}
	}
	return nil
}

// ErrNoSpool is returned when the spool directories do not exist.
var ErrNoSpool = errors.New("spool directory is not set up")

// Ready checks that the directories a writer needs exist.
func (s *Spool) Ready() error {
	for _, d := range []string{TmpDir, IncomingDir} {
		st, err := os.Stat(s.path(d))
		if err != nil {
			return fmt.Errorf("spool: %s: %w", s.path(d), err)
		}
		if !st.IsDir() {
			return fmt.Errorf("spool: %s is not a directory", s.path(d))
		}
	}
	return nil
}

// Crockford's base32 alphabet: no I, L, O or U, so an ID read aloud or
// copied by hand from a terminal is not misread.
const idAlphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

// idEpoch makes IDs shorter; seconds since it fit in six base32 digits
// until 2054.
var idEpoch = time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)

// NewID returns a queue ID: 6 digits of seconds, 4 of microseconds and 6
// random (30 bits), in base32. IDs sort by arrival and are unique across
// processes and machines that share nothing, like Maildir names.
func NewID(now time.Time) string {
	var b [16]byte
	sec := uint64(now.Sub(idEpoch) / time.Second)
	usec := uint64(now.Nanosecond() / 1000)
	var rnd [8]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		panic("spool: crypto/rand failed: " + err.Error())
	}
	r := binary.LittleEndian.Uint64(rnd[:])
	for i := 5; i >= 0; i-- {
		b[i] = idAlphabet[sec&31]
		sec >>= 5
	}
	for i := 9; i >= 6; i-- {
		b[i] = idAlphabet[usec&31]
		usec >>= 5
	}
	for i := 15; i >= 10; i-- {
		b[i] = idAlphabet[r&31]
		r >>= 5
	}
	return string(b[:])
}

// ValidID reports whether id has the form NewID produces; names that do not
// are ignored by readers and refused by commands taking an ID.
func ValidID(id string) bool {
	if len(id) != 16 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= '0' && c <= '9' || c >= 'A' && c <= 'Z') || c == 'I' || c == 'L' || c == 'O' || c == 'U' {
			return false
		}
	}
	return true
}

// IDTime returns the arrival time encoded in id (to the microsecond).
func IDTime(id string) time.Time {
	var sec, usec uint64
	for i := 0; i < 6; i++ {
		sec = sec<<5 | uint64(indexByte(idAlphabet, id[i]))
	}
	for i := 6; i < 10; i++ {
		usec = usec<<5 | uint64(indexByte(idAlphabet, id[i]))
	}
	return idEpoch.Add(time.Duration(sec)*time.Second + time.Duration(usec)*time.Microsecond)
}

func indexByte(s string, c byte) int {
	for i := 0; i < len(s); i++ {
		if s[i] == c {
			return i
		}
	}
	return 0
}

// syncDir fsyncs a directory so that renames and creations in it are
// durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fileErr("open", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fileErr("sync", dir, err)
	}
	return nil
}
