// Package accounting_test checks, with two real local users, that every
// message carries a trace of who submitted it and that a user over the
// rate limits has the excess held, not lost, while another user's mail
// flows. It needs root (to create the users) and skips otherwise.
package accounting_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postie-mail/postie/internal/testsink"
)

func run(t *testing.T, stdin string, name string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		return out.String() + errb.String(), fmt.Errorf("%s %v: %v: %s", name, args, err, errb.String())
	}
	return out.String(), nil
}

func TestTwoUsers(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates two local users")
	}
	if _, err := exec.LookPath("useradd"); err != nil {
		t.Skip("useradd not available")
	}
	if _, err := exec.LookPath("runuser"); err != nil {
		t.Skip("runuser not available")
	}
	users := []string{"postie-ok", "postie-spam"}
	for _, u := range users {
		exec.Command("userdel", "-r", u).Run()
		if _, err := run(t, "", "useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", u); err != nil {
			t.Fatal(err)
		}
		u := u
		t.Cleanup(func() { exec.Command("userdel", u).Run() })
	}
	base, err := os.MkdirTemp("/tmp", "postie-acct")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	os.Chmod(base, 0o755)
	bin := filepath.Join(base, "bin")
	for _, c := range []string{"sendmail", "mailq"} {
		if out, err := exec.Command("go", "build", "-o", filepath.Join(bin, c), "../../cmd/"+c).CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", c, err, out)
		}
	}
	sink, err := testsink.Start(testsink.Options{Users: map[string]string{"u": "p"}, RequireAuth: true})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	// A spool every local user may drop into: tmp/, incoming/ and
	// limits/ are 1733 (the package uses 1730 with a setgid drop group;
	// this test is about accounting, not about that privilege model,
	// which test/packaging covers).
	spoolDir := filepath.Join(base, "spool")
	for _, d := range []string{"", "queue", "failed"} {
		os.MkdirAll(filepath.Join(spoolDir, d), 0o700)
	}
	os.Chmod(spoolDir, 0o755)
	for _, d := range []string{"tmp", "incoming", "limits"} {
		p := filepath.Join(spoolDir, d)
		os.Mkdir(p, 0o755)
		os.Chmod(p, 0o1733)
	}
	pw := filepath.Join(base, "password")
	os.WriteFile(pw, []byte("p\n"), 0o600)
	cfg := filepath.Join(base, "postie.toml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`hostname = "web1.example.com"
spool_dir = %q
[smarthost]
address = %q
username = "u"
password_file = %q
ca_file = %q
[queue]
deliver = "queue"
[log]
target = "stderr"
[limits]
messages_per_hour = 20
`, spoolDir, sink.Addr, pw, sink.CAFile)), 0o644)
	os.Setenv("POSTIE_CONFIG", cfg)
	defer os.Unsetenv("POSTIE_CONFIG")

	send := func(u string, i int) error {
		msg := fmt.Sprintf("To: rcpt-%s-%d@example.org\nSubject: %s %d\n\nhello %d\n", u, i, u, i, i)
		_, err := run(t, msg, "runuser", "-u", u, "--", "env", "POSTIE_CONFIG="+cfg, filepath.Join(bin, "sendmail"), "-t", "-i")
		return err
	}
	// Both users send while the queue is being flushed.
	stop := make(chan struct{})
	var flushes sync.WaitGroup
	flushes.Add(1)
	go func() {
		defer flushes.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			exec.Command(filepath.Join(bin, "mailq"), "-q").Run()
			time.Sleep(50 * time.Millisecond)
		}
	}()
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for _, job := range []struct {
		u string
		n int
	}{{"postie-ok", 10}, {"postie-spam", 60}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range job.n {
				if err := send(job.u, i); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	flushes.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if out, err := run(t, "", filepath.Join(bin, "mailq"), "-q"); err != nil {
		t.Fatalf("final flush: %v\n%s", err, out)
	}

	okUser, _ := user.Lookup("postie-ok")
	spamUser, _ := user.Lookup("postie-spam")
	got := map[string]int{}
	for _, m := range sink.Messages() {
		u := strings.SplitN(strings.TrimPrefix(m.To[0], "rcpt-"), "-", 3)
		who := u[0] + "-" + u[1]
		got[who]++
		want := map[string]string{"postie-ok": okUser.Uid, "postie-spam": spamUser.Uid}[who]
		trace := fmt.Sprintf("Received: by web1.example.com (Postie, from userid %s %s)", want, who)
		if !bytes.Contains(m.Data, []byte(trace)) {
			t.Errorf("message to %s lacks %q:\n%s", m.To[0], trace, m.Data)
		}
	}
	if got["postie-ok"] != 10 {
		t.Errorf("postie-ok: %d of 10 delivered", got["postie-ok"])
	}
	if got["postie-spam"] != 20 {
		t.Errorf("postie-spam: %d delivered, want the 20 within the limit", got["postie-spam"])
	}
	out, err := run(t, "", filepath.Join(bin, "mailq"), "--json")
	if err != nil {
		t.Fatal(err)
	}
	var q []struct {
		State      string `json:"state"`
		HeldReason string `json:"held_reason"`
		User       string `json:"user"`
		UID        int    `json:"uid"`
	}
	if err := json.Unmarshal([]byte(out), &q); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if len(q) != 40 {
		t.Errorf("%d messages queued, want the 40 held", len(q))
	}
	for _, e := range q {
		if e.State != "held" || e.HeldReason != "rate limit" || e.User != "postie-spam" {
			t.Errorf("queued entry %+v", e)
			break
		}
	}
	rep, err := run(t, "", filepath.Join(bin, "mailq"), "--senders")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(rep), "\n")
	if len(lines) < 3 || !strings.Contains(lines[1], "postie-spam") || !strings.Contains(lines[1], " 60 ") || !strings.Contains(lines[1], " 40 ") {
		t.Errorf("report does not put postie-spam first with 60 sent, 40 held:\n%s", rep)
	}
	// The administrator releases the spammer's held mail in one command.
	if out, err := run(t, "", filepath.Join(bin, "mailq"), "--release-user", "postie-spam"); err != nil || !strings.Contains(out, "40 held") {
		t.Fatalf("release-user: %v %s", err, out)
	}
	run(t, "", filepath.Join(bin, "mailq"), "-q")
	if n := sink.Count(); n != 70 {
		t.Errorf("after release: %d delivered, want 70", n)
	}
}
