// Package ratelimit counts what each local user submits and decides when a
// submission goes over the configured limits.
//
// Counters live in the spool (limits/UID), one small file per user of
// fixed-size buckets, five minutes each over the last 24 hours. A
// submission takes the file's flock, adds itself, and writes the buckets
// back in place, so concurrent sendmail processes count exactly and the
// counts survive restarts, with no daemon. The counts are advisory for
// accounting: losing the last few minutes of them in a crash is harmless,
// so the file is not fsynced.
//
// On a shared host the directory is 1730 with the drop group, like
// incoming/: sendmail can create and update its caller's file but nobody
// can list or read the directory, so a user cannot reset their counter.
package ratelimit

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// Dir is the counters' directory under the spool.
const Dir = "limits"

const (
	bucketSpan = 5 * time.Minute
	nBuckets   = 24 * 60 / 5
	bucketSize = 8 + 4*3 // start (unix seconds), messages, recipients, held
	// lastLogOff stores when a hold was last logged, for "once per
	// burst" logging.
	lastLogOff = nBuckets * bucketSize
	fileSize   = lastLogOff + 8
)

// Limits are one user's limits; zero means unlimited.
type Limits struct {
	MessagesPerHour      int
	RecipientsPerMessage int
	RecipientsPerHour    int
}

// Zero reports whether no limit is set.
func (l Limits) Zero() bool {
	return l.MessagesPerHour == 0 && l.RecipientsPerMessage == 0 && l.RecipientsPerHour == 0
}

// Counts are what a user sent in a window.
type Counts struct {
	Messages, Recipients, Held int
}

type bucket struct {
	start             int64
	msgs, rcpts, held uint32
}

// Decision is the outcome of Check.
type Decision struct {
	// Over is the limit exceeded ("" when within limits).
	Over string
	// LogHold is set for the first hold of a burst (none logged in the
	// last hour): log it then, not once per message.
	LogHold bool
	Hour    Counts
}

// Check counts a submission of nrcpt recipients by uid against lim, and
// records it (as held when over a limit). It is atomic across processes.
func Check(spoolDir string, uid int, nrcpt int, lim Limits, now time.Time) (Decision, error) {
	var d Decision
	if lim.Zero() {
		// Still count, for the report.
		return d, update(spoolDir, uid, now, func(b []bucket, lastLog *int64) bool {
			add(b, now, 1, nrcpt, 0)
			return true
		})
	}
	err := update(spoolDir, uid, now, func(b []bucket, lastLog *int64) bool {
		h := sum(b, now, time.Hour)
		d.Hour = h
		switch {
		case lim.RecipientsPerMessage > 0 && nrcpt > lim.RecipientsPerMessage:
			d.Over = fmt.Sprintf("rate limit: %d recipients in one message (limit %d)", nrcpt, lim.RecipientsPerMessage)
		case lim.MessagesPerHour > 0 && h.Messages-h.Held+1 > lim.MessagesPerHour:
			d.Over = fmt.Sprintf("rate limit: over %d messages per hour", lim.MessagesPerHour)
		case lim.RecipientsPerHour > 0 && h.Recipients+nrcpt > lim.RecipientsPerHour:
			d.Over = fmt.Sprintf("rate limit: over %d recipients per hour", lim.RecipientsPerHour)
		}
		held := 0
		if d.Over != "" {
			held = 1
			if now.Unix()-*lastLog > int64(time.Hour/time.Second) {
				d.LogHold = true
				*lastLog = now.Unix()
			}
		}
		// Held messages' recipients are not counted toward the hourly
		// recipient limit: they were not sent.
		r := nrcpt
		if held == 1 {
			r = 0
		}
		add(b, now, 1, r, held)
		return true
	})
	return d, err
}

func add(b []bucket, now time.Time, msgs, rcpts, held int) {
	start := now.Truncate(bucketSpan).Unix()
	i := int(start/int64(bucketSpan/time.Second)) % nBuckets
	if b[i].start != start {
		b[i] = bucket{start: start}
	}
	b[i].msgs += uint32(msgs)
	b[i].rcpts += uint32(rcpts)
	b[i].held += uint32(held)
}

// sum adds the buckets that fall within window before now. Buckets are
// five minutes: "the last hour" is the last 12 buckets, including the
// current one.
func sum(b []bucket, now time.Time, window time.Duration) Counts {
	var c Counts
	from := now.Add(-window).Truncate(bucketSpan).Unix()
	for _, x := range b {
		if x.start > from && x.start <= now.Unix() {
			c.Messages += int(x.msgs)
			c.Recipients += int(x.rcpts)
			c.Held += int(x.held)
		}
	}
	return c
}

func path(spoolDir string, uid int) string {
	return filepath.Join(spoolDir, Dir, strconv.Itoa(uid))
}

// update runs fn on uid's buckets under the file's lock and writes them
// back.
func update(spoolDir string, uid int, now time.Time, fn func(b []bucket, lastLog *int64) bool) error {
	dir := filepath.Join(spoolDir, Dir)
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("ratelimit: %w", err)
	}
	p := path(spoolDir, uid)
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o660)
	if err != nil {
		return fmt.Errorf("ratelimit: %w", err)
	}
	defer f.Close()
	// Readable by the runner (through the drop group) whatever the
	// caller's umask, for mailq --senders.
	f.Chmod(0o660)
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		return fmt.Errorf("ratelimit: lock %s: %w", p, err)
	}
	b, lastLog, err := read(f)
	if err != nil {
		return err
	}
	if !fn(b, &lastLog) {
		return nil
	}
	buf := encode(b, lastLog)
	if _, err := f.WriteAt(buf, 0); err != nil {
		return fmt.Errorf("ratelimit: write %s: %w", p, err)
	}
	return nil
}

func read(r io.ReaderAt) ([]bucket, int64, error) {
	buf := make([]byte, fileSize)
	n, err := r.ReadAt(buf, 0)
	if err != nil && err != io.EOF {
		return nil, 0, fmt.Errorf("ratelimit: read: %w", err)
	}
	b := make([]bucket, nBuckets)
	if n < fileSize {
		return b, 0, nil // new or foreign file: start afresh
	}
	for i := range b {
		o := i * bucketSize
		b[i] = bucket{
			start: int64(binary.LittleEndian.Uint64(buf[o:])),
			msgs:  binary.LittleEndian.Uint32(buf[o+8:]),
			rcpts: binary.LittleEndian.Uint32(buf[o+12:]),
			held:  binary.LittleEndian.Uint32(buf[o+16:]),
		}
	}
	return b, int64(binary.LittleEndian.Uint64(buf[lastLogOff:])), nil
}

func encode(b []bucket, lastLog int64) []byte {
	buf := make([]byte, fileSize)
	for i, x := range b {
		o := i * bucketSize
		binary.LittleEndian.PutUint64(buf[o:], uint64(x.start))
		binary.LittleEndian.PutUint32(buf[o+8:], x.msgs)
		binary.LittleEndian.PutUint32(buf[o+12:], x.rcpts)
		binary.LittleEndian.PutUint32(buf[o+16:], x.held)
	}
	binary.LittleEndian.PutUint64(buf[lastLogOff:], uint64(lastLog))
	return buf
}

// Sender is one line of the report.
type Sender struct {
	UID       int
	Hour, Day Counts
}

// Report returns every user's counts for the last hour and day, most
// messages in the last hour first.
func Report(spoolDir string, now time.Time) ([]Sender, error) {
	ents, err := os.ReadDir(filepath.Join(spoolDir, Dir))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("ratelimit: %w", err)
	}
	var out []Sender
	for _, e := range ents {
		uid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		f, err := os.Open(filepath.Join(spoolDir, Dir, e.Name()))
		if err != nil {
			continue
		}
		unix.Flock(int(f.Fd()), unix.LOCK_SH)
		b, _, err := read(f)
		f.Close()
		if err != nil {
			continue
		}
		s := Sender{UID: uid, Hour: sum(b, now, time.Hour), Day: sum(b, now, 24*time.Hour)}
		if s.Day.Messages > 0 {
			out = append(out, s)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Hour.Messages != out[j].Hour.Messages {
			return out[i].Hour.Messages > out[j].Hour.Messages
		}
		if out[i].Day.Messages != out[j].Day.Messages {
			return out[i].Day.Messages > out[j].Day.Messages
		}
		return out[i].UID < out[j].UID
	})
	return out, nil
}
