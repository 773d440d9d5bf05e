package torture

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/postie-mail/postie/internal/spool"
)

// TestDiskFull puts the spool on a 512 KiB tmpfs and submits messages
// until it is full. The submission that does not fit must fail with exit
// 75 (EX_TEMPFAIL, so that callers retry) and one clear line on stderr,
// leaving nothing in tmp/ and only complete messages in incoming/; every
// message queued before must be intact and delivered, even while the
// file system is still full.
func TestDiskFull(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("disk-full torture skipped: mounting a tmpfs as the spool needs root")
	}
	mnt := filepath.Join(t.TempDir(), "spool")
	tcheck(t, os.Mkdir(mnt, 0o700), "mkdir")
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=512k,mode=0700", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Skipf("disk-full torture skipped: cannot mount a tmpfs at %s: %v: %s", mnt, err, strings.TrimSpace(string(out)))
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", mnt, err, out)
			exec.Command("umount", "-l", mnt).Run()
		}
	})
	e := newBinEnv(t, mnt, 2)
	rng := rand.New(rand.NewPCG(3, 4))
	var queued []*letter
	var code int
	var stderr string
	for i := 0; ; i++ {
		if i == 200 {
			t.Fatalf("%d messages fit in a 512 KiB spool", i)
		}
		token := fmt.Sprintf("D%04d", i)
		l := newLetter(rng, token, "sender@torture.example", []string{"rcpt-" + token + "@dest.example"}, randSize(rng, 8<<10, 40<<10))
		code, _, stderr = e.run(t, sendmailBin, l.Data, "-t", "-i")
		if code != 0 {
			break
		}
		queued = append(queued, l)
	}
	t.Logf("disk full after %d messages: sendmail exit %d: %s", len(queued), code, strings.TrimSpace(stderr))
	checkFull := func(code int, stderr string) {
		t.Helper()
		if code != 75 {
			t.Errorf("sendmail on a full spool: exit %d, want 75 (EX_TEMPFAIL); stderr: %q", code, stderr)
		}
		lines := strings.Split(strings.TrimRight(stderr, "\n"), "\n")
		if len(lines) != 1 || !strings.HasPrefix(lines[0], "sendmail: ") ||
			!(strings.Contains(lines[0], "full") || strings.Contains(lines[0], "no space")) {
			t.Errorf("sendmail on a full spool should say so in one line; stderr: %q", stderr)
		}
		if left := listDir(filepath.Join(mnt, spool.TmpDir)); len(left) > 0 {
			t.Errorf("tmp/ holds %v after a failed submission", left)
		}
		in := listDir(filepath.Join(mnt, spool.IncomingDir))
		if len(in) != len(queued) {
			t.Errorf("incoming/ holds %d files, %d messages were queued", len(in), len(queued))
		}
		for _, name := range in {
			if _, _, ok, why, err := spooled(mnt, spool.IncomingDir, name); err != nil || !ok {
				t.Errorf("incoming/%s is not a complete message: %v %s", name, err, why)
			}
		}
	}
	checkFull(code, stderr)
	if len(queued) == 0 {
		t.Fatal("not even one message fit")
	}
	// Still full: a few more tries fail the same way.
	for i := range 3 {
		l := newLetter(rng, fmt.Sprintf("X%d", i), "sender@torture.example", []string{"x@dest.example"}, 64<<10)
		code, _, stderr := e.run(t, sendmailBin, l.Data, "-t", "-i")
		checkFull(code, stderr)
	}

	// Deliver with the file system still full.
	code, _, stderr = e.run(t, mailqBin, nil, "-q")
	if code != 0 {
		t.Errorf("mailq -q on a full spool: exit %d: %s", code, stderr)
	}
	for _, l := range queued {
		ds := e.rec.deliveries(l.Token)
		if len(ds) != 1 {
			t.Errorf("%s delivered %d times", l.Token, len(ds))
			continue
		}
		if !ds[0].OK || ds[0].Sum != l.Sum {
			t.Errorf("%s arrived corrupt: %s (sum %s, want %s)", l.Token, ds[0].Why, ds[0].Sum, l.Sum)
		}
	}
	if q := e.queue(t); len(q) != 0 {
		t.Errorf("%d messages left after the flush: %+v", len(q), q)
	}
	// With the queue delivered there is room again.
	l := newLetter(rng, "AFTER", "sender@torture.example", []string{"after@dest.example"}, 8<<10)
	if code, _, stderr := e.run(t, sendmailBin, l.Data, "-t", "-i"); code != 0 {
		t.Errorf("sendmail after the flush: exit %d: %s", code, stderr)
	}
	t.Logf("disk full: %d messages queued before the spool filled, %d delivered intact", len(queued), e.rec.count)
}
