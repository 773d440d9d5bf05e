package torture

import (
	"bytes"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/emersion/go-smtp"

	"github.com/postie-mail/postie/internal/testsink"
)

// The random kills of TestCrash rarely land between two adjacent system
// calls. These tests kill mailq -q at one exact system call, with
// strace's fault injection: the call is not performed (it fails with
// EIO) and the process gets SIGKILL, as if it had been killed just
// before it. Then a second mailq -q runs normally, and the outcome must
// be what the spool's durability rules promise.

// killAt runs mailq -q under strace, killing it when it first makes one
// of the system calls syscalls on path. It skips the test when strace is
// missing or cannot trace, and fails it when the process was not killed
// (the call never happened).
func (e *binEnv) killAt(t *testing.T, path, syscalls string) {
	t.Helper()
	strace, err := exec.LookPath("strace")
	if err != nil {
		t.Skip("strace is not installed: the exact-instant kill tests need it (apt-get install strace)")
	}
	args := []string{"-f", "-qq", "-o", "/dev/null"}
	if path != "" {
		args = append(args, "-P", path)
	}
	args = append(args, "-e", "trace="+syscalls, "-e", "inject="+syscalls+":error=EIO:signal=KILL:when=1",
		mailqBin, "-C", e.cfgPath, "-q")
	cmd := exec.Command(strace, args...)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + e.dir}
	cmd.Dir = e.dir
	var errb bytes.Buffer
	cmd.Stderr = &errb
	err = cmd.Run()
	if strings.Contains(errb.String(), "ptrace") || strings.Contains(errb.String(), "Operation not permitted") {
		t.Skipf("strace cannot trace here: %s", strings.TrimSpace(errb.String()))
	}
	// strace exits with the tracee's signal re-raised or 128+9.
	if cmd.ProcessState == nil || (exitCode(cmd.ProcessState) != -1 && exitCode(cmd.ProcessState) != 137) {
		t.Fatalf("mailq -q was not killed at %s of %s: %v; stderr:\n%s", syscalls, path, err, errb.String())
	}
}

// submit queues l with sendmail -t -i and returns its queue ID.
func (e *binEnv) submit(t *testing.T, l *letter) string {
	t.Helper()
	before := map[string]bool{}
	for _, n := range listDir(filepath.Join(e.spoolDir, "incoming")) {
		before[n] = true
	}
	if code, _, errs := e.run(t, sendmailBin, l.Data, "-t", "-i"); code != 0 {
		t.Fatalf("sendmail: exit %d: %s", code, errs)
	}
	for _, n := range listDir(filepath.Join(e.spoolDir, "incoming")) {
		if !before[n] {
			return n
		}
	}
	t.Fatal("sendmail exited 0 and incoming/ holds no new message")
	return ""
}

// TestKillAfterReplyBeforeRemove kills the runner after the server
// accepted the message and before the queue file is removed. The
// message was delivered; it must not be delivered again (it may come
// back held as uncertain).
func TestKillAfterReplyBeforeRemove(t *testing.T) {
	e := newBinEnv(t, "", 1)
	rng := rand.New(rand.NewPCG(5, 6))
	l := newLetter(rng, "K1", "sender@torture.example", []string{"bob@dest.example"}, 2<<10)
	id := e.submit(t, l)
	e.killAt(t, filepath.Join(e.spoolDir, "queue", id), "unlinkat")
	if n := len(e.rec.deliveries(l.Token)); n != 1 {
		t.Fatalf("the killed run delivered %d copies, want 1", n)
	}
	e.run(t, mailqBin, nil, "-q")
	if n := len(e.rec.deliveries(l.Token)); n != 1 {
		t.Errorf("delivered %d times: a runner killed after the 250 reply to the final dot and before removing queue/%s "+
			"leaves the message queued without its sending marker (runner.finishRelay calls ClearSending before Remove), "+
			"so the next flush sends it again", n, id)
	}
	for _, q := range e.queue(t) {
		if q.State != "uncertain" {
			t.Errorf("%s left as %s", q.ID, q.State)
		}
	}
}

// TestKillAfterPartialDeliveryBeforeState kills the runner after one of
// two recipients was accepted (the other got 451) and before the state
// recording that is written. The accepted recipient must not get the
// message again.
func TestKillAfterPartialDeliveryBeforeState(t *testing.T) {
	e := newBinEnv(t, "", 1)
	e.sink.SetFault(testsink.Fault{
		Rcpt: func(to string) error {
			if strings.HasPrefix(to, "later@") {
				return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 2, 1}, Message: "Mailbox busy"}
			}
			return nil
		},
		Data: func(m *testsink.Message) error { e.rec.add(m); return nil },
	})
	rng := rand.New(rand.NewPCG(7, 8))
	l := newLetter(rng, "K2", "sender@torture.example", []string{"now@dest.example", "later@dest.example"}, 2<<10)
	id := e.submit(t, l)
	e.killAt(t, filepath.Join(e.spoolDir, "queue", id+".state"), "rename,renameat,renameat2")
	if n := len(e.rec.deliveries(l.Token)); n != 1 {
		t.Fatalf("the killed run delivered %d copies, want 1", n)
	}
	e.run(t, mailqBin, nil, "-q")
	if n := len(e.rec.deliveries(l.Token)); n != 1 {
		t.Errorf("now@ got the message %d times: a runner killed after a partial delivery and before the state "+
			"file names the delivered recipients leaves no sending marker (runner.finishRelay calls ClearSending "+
			"before SaveState), so the next flush sends to every recipient again", n)
	}
}

// TestKillAfterBounceBeforeRemove kills the runner after it queued the
// bounce for a recipient refused with 550 and before it removed the
// message. The sender must get one bounce, not two.
func TestKillAfterBounceBeforeRemove(t *testing.T) {
	e := newBinEnv(t, "", 1)
	e.sink.SetFault(testsink.Fault{
		Rcpt: func(to string) error {
			if strings.HasPrefix(to, "gone@") {
				return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "No such user"}
			}
			return nil
		},
		Data: func(m *testsink.Message) error { e.rec.add(m); return nil },
	})
	rng := rand.New(rand.NewPCG(9, 10))
	l := newLetter(rng, "K3", "sender@torture.example", []string{"gone@dest.example"}, 2<<10)
	id := e.submit(t, l)
	e.killAt(t, filepath.Join(e.spoolDir, "queue", id), "unlinkat")
	e.run(t, mailqBin, nil, "-q")
	e.rec.mu.Lock()
	n := len(e.rec.dsns)
	e.rec.mu.Unlock()
	if n != 1 {
		t.Errorf("the sender got %d bounces for one refused recipient: the bounce is committed to incoming/ before "+
			"the failed recipient is recorded (runner.finishRelay: bounce, then Remove/SaveState), so a runner "+
			"killed in between bounces the recipient again on the next flush", n)
	}
}

// TestKillAroundMark kills the runner at the system calls of the sending
// mark (spool.Locked.MarkSending), all before the final dot: nothing was
// delivered. Killed before the mark is written into the queue file's
// header, the next flush delivers the message once. Killed after that,
// before the runner's marks journal has the mark or before the journal's
// fdatasync (the first fdatasync of a run), the mark is in the page cache
// and the message cannot be told from one whose dot was sent: it is held
// as uncertain, never sent twice (the same as a runner killed after the
// dot). The next runner folds the dead runner's journal and removes it.
func TestKillAroundMark(t *testing.T) {
	tests := []struct {
		name      string
		syscalls  string
		anyFile   bool // the call is on the journal, whose name is not known
		delivered int
		state     string // of the message left queued; "" for none
	}{
		{"before the write", "pwrite64", false, 1, ""},
		{"before the journal sync", "fdatasync", true, 0, "uncertain"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newBinEnv(t, "", 1)
			rng := rand.New(rand.NewPCG(11, uint64(i)))
			l := newLetter(rng, "K4", "sender@torture.example", []string{"bob@dest.example"}, 2<<10)
			id := e.submit(t, l)
			path := filepath.Join(e.spoolDir, "queue", id)
			if tt.anyFile {
				path = ""
			}
			e.killAt(t, path, tt.syscalls)
			if n := len(e.rec.deliveries(l.Token)); n != 0 {
				t.Fatalf("the run killed at %s delivered %d copies before the final dot", tt.syscalls, n)
			}
			if j, _ := filepath.Glob(filepath.Join(e.spoolDir, "marks.*[0-9A-Z]")); len(j) != 1 {
				t.Errorf("journals left by the killed runner: %q, want one", j)
			}
			e.run(t, mailqBin, nil, "-q")
			if n := len(e.rec.deliveries(l.Token)); n != tt.delivered {
				t.Errorf("delivered %d times after a kill %s of the mark, want %d", n, tt.name, tt.delivered)
			}
			q := e.queue(t)
			switch {
			case tt.state == "" && len(q) != 0:
				t.Errorf("queue after the second flush: %+v, want empty", q)
			case tt.state != "" && (len(q) != 1 || q[0].State != tt.state):
				t.Errorf("queue after the second flush: %+v, want %s held as %s", q, id, tt.state)
			}
			if j, _ := filepath.Glob(filepath.Join(e.spoolDir, "marks.*[0-9A-Z]")); len(j) != 0 {
				t.Errorf("journals left after the second flush: %q, want none", j)
			}
		})
	}
}

// TestKillSharedPickup kills the runner at each step of picking up another
// user's file (shared mode: the file is copied to queue/.ID.pickup, the
// original removed, then the copy placed as queue/ID). The message must
// be delivered exactly once by the next flush, and nothing of the pickup
// left behind: a message left both in incoming/ and in queue/ would be
// delivered twice.
func TestKillSharedPickup(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to give the queued file to another user")
	}
	tests := []struct {
		name     string
		file     func(spool, id string) string
		syscalls string
	}{
		{"before the original is removed", func(spool, id string) string { return filepath.Join(spool, "incoming", id) }, "unlinkat"},
		{"before the copy is placed", func(spool, id string) string { return filepath.Join(spool, "queue", "."+id+".pickup") }, "renameat2,linkat"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newBinEnv(t, "", 1)
			rng := rand.New(rand.NewPCG(13, uint64(i)))
			l := newLetter(rng, "K5", "sender@torture.example", []string{"bob@dest.example"}, 2<<10)
			id := e.submit(t, l)
			tcheck(t, os.Chown(filepath.Join(e.spoolDir, "incoming", id), 65534, 65534), "chown")
			e.killAt(t, tt.file(e.spoolDir, id), tt.syscalls)
			if n := len(e.rec.deliveries(l.Token)); n != 0 {
				t.Fatalf("the run killed in the pickup delivered %d copies", n)
			}
			// Wherever the kill left it, mailq lists it, once.
			if q := e.queue(t); len(q) != 1 || q[0].ID != id || q[0].State != "queued" {
				t.Errorf("queue after a kill %s: %+v, want %s queued", tt.name, q, id)
			}
			e.run(t, mailqBin, nil, "-q")
			if n := len(e.rec.deliveries(l.Token)); n != 1 {
				t.Errorf("delivered %d times after a kill %s, want 1", n, tt.name)
			}
			e.run(t, mailqBin, nil, "-q")
			if n := len(e.rec.deliveries(l.Token)); n != 1 {
				t.Errorf("delivered %d times after one more flush, want 1", n)
			}
			if left := append(listDir(filepath.Join(e.spoolDir, "incoming")), listDir(filepath.Join(e.spoolDir, "queue"))...); len(left) != 0 {
				t.Errorf("left in the spool: %q", left)
			}
		})
	}
}
