package spool

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// Envelope is what the queue file records beside the message.
type Envelope struct {
	ID string `json:"id"`
	// Sender is the envelope sender; "" is the null sender <>.
	Sender     string    `json:"sender"`
	Recipients []string  `json:"recipients"`
	Arrival    time.Time `json:"arrival"`
	// Size is the length of the message in bytes, as spooled.
	Size int64 `json:"size"`
	// Facts about the message found while spooling it, for delivery.
	EightBit  bool `json:"eight_bit,omitempty"`
	UTF8Body  bool `json:"utf8_body,omitempty"` // the message is valid UTF-8
	LongLines bool `json:"long_lines,omitempty"`
	BareCR    bool `json:"bare_cr,omitempty"`
	NUL       bool `json:"nul,omitempty"`
	// UTF8 is set when an envelope address needs SMTPUTF8.
	UTF8 bool `json:"utf8,omitempty"`
	// DSN requests from sendmail -N, -R, -V, and -B's body type.
	Notify   []string `json:"notify,omitempty"`
	Ret      string   `json:"ret,omitempty"`
	EnvID    string   `json:"envid,omitempty"`
	BodyType string   `json:"body_type,omitempty"`

	MessageID string `json:"message_id,omitempty"`
	// Bounce marks a delivery status notification Postie generated;
	// it is never bounced itself.
	Bounce bool `json:"bounce,omitempty"`

	// Who submitted the message, from the kernel (not the caller's
	// word): the real uid and its user name, and the parent process.
	UID  int    `json:"uid"`
	User string `json:"user,omitempty"`
	Cwd  string `json:"cwd,omitempty"`
	Exe  string `json:"exe,omitempty"`
	// HeldReason holds the message at once (e.g. "rate limit").
	HeldReason string `json:"held_reason,omitempty"`
}

// The header line of a queue file, in two versions:
//
//	POSTIE1 <20-digit length>\n                  (read only)
//	POSTIE2 <20-digit length> <10-digit sends>\n
//
// sends is the runner's "sending" mark: see Locked.MarkSending.
const (
	magic1     = "POSTIE1 "
	magic2     = "POSTIE2 "
	header1Len = len(magic1) + 20 + 1
	sendsOff   = len(magic2) + 20 + 1
	sendsLen   = 10
	header2Len = sendsOff + sendsLen + 1
	maxSends   = 9999999999
	maxEnvSize = 64 << 20 // envelopes with a million recipients still fit
)

// header is what a queue file's header line says.
type header struct {
	size int64 // the message's length
	off  int64 // where the message starts
	// sends counts the final dots the runner has marked (POSTIE2);
	// legacy is set for a POSTIE1 file, which has no counter and is
	// marked with an ID.sending file instead.
	sends  int64
	legacy bool
}

func formatHeader(size, sends int64) []byte {
	return fmt.Appendf(nil, "%s%020d %010d\n", magic2, size, sends)
}

// ErrCorrupt is returned for a file that is not a complete queue file.
var ErrCorrupt = errors.New("not a complete queue file")

// Writer writes one new message. Write the message, then Commit; on any
// error call Abort (it is safe to call after Commit).
type Writer struct {
	ID   string
	s    *Spool
	f    *os.File
	bw   *bufio.Writer
	n    int64
	done bool
}

// Create starts a new message in tmp/.
func (s *Spool) Create(now time.Time) (*Writer, error) {
	// Mode 0640: in shared mode the group is the drop group (sendmail's
	// setgid group), which the runner's user belongs to, so the runner
	// can read what callers drop; nobody else can.
	var lastErr error
	for range 5 {
		id := NewID(now)
		p := s.path(TmpDir, id)
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o640)
		if errors.Is(err, os.ErrExist) {
			lastErr = err
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("spool: create %s: %w", p, err)
		}
		// The caller's umask (077 in cron jobs and hardened services)
		// must not lock out the runner, which reads the file through
		// the drop group.
		if err := f.Chmod(0o640); err != nil {
			f.Close()
			os.Remove(p)
			return nil, fmt.Errorf("spool: chmod %s: %w", p, err)
		}
		w := &Writer{ID: id, s: s, f: f, bw: bufio.NewWriterSize(f, 64<<10)}
		if _, err := w.bw.Write(formatHeader(0, 0)); err != nil {
			w.Abort()
			return nil, fileErr("write", p, err)
		}
		return w, nil
	}
	return nil, fmt.Errorf("spool: create in %s: %w", s.path(TmpDir), lastErr)
}

// fileErr wraps err from an operation on the file at path; os.File's
// errors already name the operation and the path, and are not named twice.
func fileErr(op, path string, err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return fmt.Errorf("spool: %w", err)
	}
	return fmt.Errorf("spool: %s %s: %w", op, path, err)
}

// Write appends message bytes.
func (w *Writer) Write(p []byte) (int, error) {
	n, err := w.bw.Write(p)
	w.n += int64(n)
	if err != nil {
		return n, fileErr("write", w.f.Name(), err)
	}
	return n, nil
}

// Size is the number of message bytes written so far.
func (w *Writer) Size() int64 { return w.n }

// Commit appends the envelope, syncs the file, and moves it into incoming/
// durably. After Commit returns nil the message will be delivered or
// bounced.
func (w *Writer) Commit(env *Envelope) error {
	if err := w.seal(env); err != nil {
		return err
	}
	tmp := w.f.Name()
	dst := w.s.path(IncomingDir, w.ID)
	if err := renameNoReplace(tmp, dst); err != nil {
		return fmt.Errorf("spool: rename %s: %w", tmp, err)
	}
	w.done = true
	if err := w.syncRename(); err != nil {
		// The message is in place but perhaps not durable; the caller
		// must not report success. Take it back out.
		w.f.Close()
		os.Remove(dst)
		return err
	}
	if err := w.f.Close(); err != nil {
		os.Remove(dst)
		return fmt.Errorf("spool: close %s: %w", dst, err)
	}
	return nil
}

// Seal completes the file durably but leaves it in tmp/: the runner seals
// a bounce, records in the original message's state that the bounce is
// pending, and only then publishes it (Spool.Publish), so that a crash in
// between neither loses the bounce nor sends it twice.
func (w *Writer) Seal(env *Envelope) error {
	if err := w.seal(env); err != nil {
		return err
	}
	w.done = true
	if err := w.f.Close(); err != nil {
		os.Remove(w.f.Name())
		return fmt.Errorf("spool: close %s: %w", w.f.Name(), err)
	}
	return nil
}

// Publish moves a sealed file from tmp/ into incoming/ durably. A file
// already published (not in tmp/ any more) is not an error.
func (s *Spool) Publish(id string) error {
	if !ValidID(id) {
		return fmt.Errorf("spool: %q is not a queue ID", id)
	}
	src := s.path(TmpDir, id)
	err := renameNoReplace(src, s.path(IncomingDir, id))
	if errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("spool: publish %s: %w", src, err)
	}
	return syncDir(s.path(IncomingDir))
}

// seal writes the envelope and the length, and syncs the file.
func (w *Writer) seal(env *Envelope) error {
	env.ID = w.ID
	env.Size = w.n
	b, err := json.Marshal(env)
	if err != nil {
		return fmt.Errorf("spool: encode envelope: %w", err)
	}
	tmp := w.f.Name()
	if _, err := w.bw.Write(append(b, '\n')); err != nil {
		return fileErr("write", tmp, err)
	}
	if err := w.bw.Flush(); err != nil {
		return fileErr("write", tmp, err)
	}
	if _, err := w.f.WriteAt(formatHeader(w.n, 0), 0); err != nil {
		return fileErr("write", tmp, err)
	}
	if err := w.f.Sync(); err != nil {
		return fileErr("sync", tmp, err)
	}
	return nil
}

// syncRename makes the rename into incoming/ durable by syncing the
// directory. In shared mode sendmail may write into incoming/ but not read
// it (mode 1730), and a directory cannot be opened for fsync without read
// permission; there it syncs the file again instead: the file system's
// journal commits the rename with it (ext4, XFS and btrfs all persist a
// renamed inode's new name on fsync of the inode).
func (w *Writer) syncRename() error {
	dir := w.s.path(IncomingDir)
	d, err := os.Open(dir)
	if errors.Is(err, os.ErrPermission) {
		if err := w.f.Sync(); err != nil {
			return fileErr("sync", w.f.Name(), err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("spool: open %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fileErr("sync", dir, err)
	}
	return nil
}

// Abort removes the unfinished file. It does nothing after a successful
// Commit.
func (w *Writer) Abort() {
	if w.done {
		return
	}
	w.done = true
	w.f.Close()
	os.Remove(w.f.Name())
}

// renameNoReplace renames oldpath to newpath, failing if newpath exists.
func renameNoReplace(oldpath, newpath string) error {
	err := unix.Renameat2(unix.AT_FDCWD, oldpath, unix.AT_FDCWD, newpath, unix.RENAME_NOREPLACE)
	if err == unix.EINVAL || err == unix.ENOSYS {
		// File systems without RENAME_NOREPLACE: link fails on an
		// existing name, which gives the same guarantee.
		if err := os.Link(oldpath, newpath); err != nil {
			return err
		}
		return os.Remove(oldpath)
	}
	if err != nil {
		return &os.LinkError{Op: "rename", Old: oldpath, New: newpath, Err: err}
	}
	return nil
}

// QueueFile is an open queue file.
type QueueFile struct {
	Env *Envelope
	f   *os.File
	hdr header
}

// OpenFile opens and validates the queue file at path.
func OpenFile(path string) (*QueueFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	q, err := readQueueFile(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("spool: %s: %w", path, err)
	}
	return q, nil
}

// readQueueFile validates the queue file open as f.
func readQueueFile(f *os.File) (*QueueFile, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	env, h, err := readEnvelope(f, st.Size())
	if err != nil {
		return nil, err
	}
	return &QueueFile{Env: env, f: f, hdr: h}, nil
}

// ReadEnvelope validates the queue file open as f and returns its envelope.
func ReadEnvelope(f interface {
	io.ReaderAt
	Stat() (os.FileInfo, error)
}) (*Envelope, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	env, _, err := readEnvelope(f, st.Size())
	return env, err
}

// readHeader parses the header line at the start of r.
func readHeader(r io.ReaderAt) (header, error) {
	var b [header2Len]byte
	n, err := r.ReadAt(b[:], 0)
	var h header
	if err != nil && err != io.EOF {
		return h, err // an I/O error is not a bad file
	}
	switch {
	case n >= header1Len && bytes.HasPrefix(b[:], []byte(magic1)) && b[header1Len-1] == '\n':
		h.legacy, h.off = true, int64(header1Len)
	case n == header2Len && bytes.HasPrefix(b[:], []byte(magic2)) && b[sendsOff-1] == ' ' && b[header2Len-1] == '\n':
		h.off = int64(header2Len)
		sends, err := strconv.ParseInt(string(b[sendsOff:sendsOff+sendsLen]), 10, 64)
		if err != nil || sends < 0 {
			return h, ErrCorrupt
		}
		h.sends = sends
	default:
		return h, ErrCorrupt
	}
	size, err := strconv.ParseInt(string(b[len(magic1):len(magic1)+20]), 10, 64)
	if err != nil || size < 0 {
		return h, ErrCorrupt
	}
	h.size = size
	return h, nil
}

// writeMark writes the sending mark n into the header of the POSTIE2
// file f, in place.
func writeMark(f io.WriterAt, n int64) error {
	_, err := f.WriteAt(fmt.Appendf(nil, "%0*d", sendsLen, n), int64(sendsOff))
	return err
}

func readEnvelope(r io.ReaderAt, size int64) (*Envelope, header, error) {
	h, err := readHeader(r)
	if err != nil {
		return nil, h, err
	}
	env, err := readEnvelopeAt(r, size, h)
	return env, h, err
}

func readEnvelopeAt(r io.ReaderAt, size int64, h header) (*Envelope, error) {
	n := h.size
	envOff := h.off + n
	envLen := size - envOff
	if envLen < 3 || envLen > maxEnvSize {
		return nil, ErrCorrupt
	}
	buf := make([]byte, envLen)
	if _, err := r.ReadAt(buf, envOff); err != nil {
		return nil, ErrCorrupt
	}
	if buf[len(buf)-1] != '\n' {
		return nil, ErrCorrupt
	}
	env := &Envelope{}
	if err := json.Unmarshal(buf, env); err != nil {
		return nil, fmt.Errorf("%w: envelope: %v", ErrCorrupt, err)
	}
	if env.Size != n || !ValidID(env.ID) || len(env.Recipients) == 0 {
		return nil, fmt.Errorf("%w: envelope does not match the file", ErrCorrupt)
	}
	for _, a := range append([]string{env.Sender}, env.Recipients...) {
		if bytes.ContainsAny([]byte(a), "\r\n\x00<>") {
			return nil, fmt.Errorf("%w: bad address in envelope", ErrCorrupt)
		}
	}
	return env, nil
}

// Message returns a reader of the message (header and body).
func (q *QueueFile) Message() *io.SectionReader {
	return io.NewSectionReader(q.f, q.hdr.off, q.Env.Size)
}

// File returns the underlying file (for locking).
func (q *QueueFile) File() *os.File { return q.f }

// Close closes the file (and releases any lock held on it).
func (q *QueueFile) Close() error { return q.f.Close() }

// Name is the queue file's path.
func (q *QueueFile) Name() string { return q.f.Name() }

// idFromPath returns the base name of p.
func idFromPath(p string) string { return filepath.Base(p) }
