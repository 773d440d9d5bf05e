package clients_test

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// startSendmail starts sendmail with a pipe on its stdin.
func (r *rig) startSendmail(args ...string) (*exec.Cmd, io.WriteCloser) {
	r.t.Helper()
	cmd := exec.Command(bins.sendmail, args...)
	cmd.Env = r.env()
	cmd.Dir = r.dir
	in, err := cmd.StdinPipe()
	if err != nil {
		r.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	return cmd, in
}

// waitFor polls cond for up to 10 seconds.
func waitFor(cond func() bool) bool {
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return true
		}
	}
	return false
}

// TestKillMidWrite kills sendmail -t -i with SIGKILL while the caller is
// still writing: in the header, and in the body once sendmail has started
// its spool file. Nothing may be queued or delivered; at most the one file
// in tmp/ that the runner removes after its grace period may remain.
func TestKillMidWrite(t *testing.T) {
	t.Parallel()
	for _, where := range []string{"header", "body"} {
		t.Run(where, func(t *testing.T) {
			t.Parallel()
			r := newRig(t)
			// Make the spool exist, so the kill is the only thing
			// that can leave a file behind.
			if res := r.sendmail([]byte("Subject: warm-up\n\nok\n"), "ok@example.com"); res.code != 0 {
				t.Fatalf("warm-up: %v", res)
			}
			r.deliver(1)
			cmd, in := r.startSendmail("-t", "-i")
			if where == "header" {
				io.WriteString(in, "To: victim@example.com\nSubject: half a hea")
				time.Sleep(100 * time.Millisecond)
			} else {
				io.WriteString(in, "To: victim@example.com\nSubject: half\n\n"+strings.Repeat("first half of the body\n", 1000))
				// The header is complete: sendmail creates its file
				// in tmp/ and copies the body there.
				if !waitFor(func() bool { return len(r.spoolFiles("tmp")) > 0 }) {
					t.Fatal("sendmail started no file in tmp/")
				}
			}
			cmd.Process.Kill()
			err := cmd.Wait()
			in.Close()
			if cmd.ProcessState.ExitCode() != -1 {
				t.Fatalf("sendmail was not killed: %v", err)
			}
			for _, sub := range []string{"incoming", "queue"} {
				if f := r.spoolFiles(sub); len(f) != 0 {
					t.Errorf("%s/ holds %q after the kill", sub, f)
				}
			}
			if f := r.spoolFiles("tmp"); len(f) > 1 {
				t.Errorf("tmp/ holds %q, want at most one file", f)
			}
			if q := r.queue(); len(q) != 0 {
				t.Errorf("queued after the kill: %+v", q)
			}
			if got := r.flush(); len(got) != 1 {
				t.Errorf("sink got %d messages, want only the warm-up", len(got))
			}
		})
	}
}

// TestConcurrentKill runs 40 sendmail -t -i processes at once, each given
// a 64 KiB message in small writes, and kills most of them with SIGKILL at
// random instants; every fifth runs to the end. Then:
//   - every process that exited 0 has its message in the queue;
//   - every queued message is one whose writer handed over all of it (a
//     process killed after its commit, before it could exit 0, may
//     legitimately have queued its message: the queue holds exactly the
//     exit-0 messages plus those);
//   - every message delivered is byte for byte the one written.
func TestConcurrentKill(t *testing.T) {
	t.Parallel()
	const n = 40
	r := newRig(t)
	if res := r.sendmail([]byte("Subject: warm-up\n\nok\n"), "ok@example.com"); res.code != 0 {
		t.Fatalf("warm-up: %v", res)
	}
	r.deliver(1)

	type proc struct {
		body     string
		complete bool // all input written and stdin closed
		killed   bool
		code     int
	}
	procs := make([]*proc, n)
	var wg sync.WaitGroup
	for i := range n {
		p := &proc{body: killBody(i)}
		procs[i] = p
		header := fmt.Sprintf("To: k%02d@example.com\nSubject: kill %02d\n\n", i, i)
		cmd, in := r.startSendmail("-t", "-i")
		var done sync.WaitGroup
		done.Add(1)
		wg.Add(2)
		go func() {
			defer wg.Done()
			defer done.Done()
			data := []byte(header + p.body)
			for len(data) > 0 {
				k := min(len(data), 1+rand.IntN(8192))
				if _, err := in.Write(data[:k]); err != nil {
					in.Close()
					return
				}
				data = data[k:]
				if rand.IntN(4) == 0 {
					time.Sleep(time.Duration(rand.IntN(500)) * time.Microsecond)
				}
			}
			if in.Close() == nil {
				p.complete = true
			}
		}()
		go func() {
			defer wg.Done()
			if i%5 != 0 {
				time.Sleep(time.Duration(rand.IntN(60_000)) * time.Microsecond)
				// Killing a process that has exited but not been
				// waited for signals a zombie: its status stays.
				cmd.Process.Kill()
			}
			done.Wait()
			cmd.Wait()
			p.code = cmd.ProcessState.ExitCode()
			p.killed = p.code == -1
		}()
	}
	wg.Wait()

	q := r.queue()
	queuedBy := map[string]queued{}
	for _, e := range q {
		if len(e.Recipients) != 1 {
			t.Errorf("queued %s has recipients %q", e.ID, e.Recipients)
			continue
		}
		queuedBy[e.Recipients[0]] = e
	}
	var exit0, killedIncomplete, killedComplete, killedQueued int
	for i, p := range procs {
		rcpt := fmt.Sprintf("k%02d@example.com", i)
		_, isQueued := queuedBy[rcpt]
		switch {
		case p.code == 0:
			exit0++
			if !isQueued {
				t.Errorf("process %d exited 0 but its message is not queued", i)
			}
		case !p.killed:
			t.Errorf("process %d exited %d without being killed", i, p.code)
		case !p.complete:
			killedIncomplete++
			if isQueued {
				t.Errorf("process %d was killed before it had all its input, yet its message is queued", i)
			}
		default:
			killedComplete++
			if isQueued {
				killedQueued++
			}
		}
	}
	t.Logf("%d processes: %d exited 0, %d killed while writing, %d killed after their input was complete (%d of them queued it)",
		n, exit0, killedIncomplete, killedComplete, killedQueued)
	if len(q) != exit0+killedQueued {
		t.Errorf("%d queued, want %d exit-0 + %d committed before the kill", len(q), exit0, killedQueued)
	}
	if exit0 < n/5 {
		t.Errorf("only %d processes exited 0; the ones never killed must", exit0)
	}

	got := r.flush()[1:] // after the warm-up
	if len(got) != len(q) {
		t.Fatalf("delivered %d, queued %d", len(got), len(q))
	}
	var rcpts []string
	for _, raw := range got {
		m := parseMsg(t, raw)
		checkStandard(t, m)
		var i int
		if _, err := fmt.Sscanf(m.Header.Get("Subject"), "kill %d", &i); err != nil || i < 0 || i >= n {
			t.Errorf("Subject %q", m.Header.Get("Subject"))
			continue
		}
		want := envelope{callerAddr(), []string{fmt.Sprintf("k%02d@example.com", i)}}
		checkEnvelope(t, m, want)
		rcpts = append(rcpts, want.To[0])
		if w := crlf(procs[i].body); !bytes.Equal(m.Body, []byte(w)) {
			t.Errorf("message %d: body of %d bytes differs from the %d written", i, len(m.Body), len(w))
		}
	}
	slices.Sort(rcpts)
	if len(slices.Compact(rcpts)) != len(got) {
		t.Errorf("a message was delivered twice: %q", rcpts)
	}
	for _, sub := range []string{"incoming", "queue"} {
		if f := r.spoolFiles(sub); len(f) != 0 {
			t.Errorf("%s/ holds %q after the flush", sub, f)
		}
	}
	t.Logf("tmp/ holds %d abandoned files", len(r.spoolFiles("tmp")))
}

// killBody is message i's body: 64 KiB of lines that name the message and
// the line, so that a mix-up or truncation shows.
func killBody(i int) string {
	var b strings.Builder
	for j := 0; b.Len() < 64<<10; j++ {
		fmt.Fprintf(&b, "message %02d line %04d %s\n", i, j, strings.Repeat(string(rune('a'+(i+j)%26)), 40))
	}
	return b.String()
}

// TestBSMTPKill drives sendmail -bs as a framework does and kills it with
// SIGKILL: a message whose final dot got its 250 reply must be queued
// (Postie replies only once the message is durable), and a message cut off
// in the middle of DATA, by a kill or by EOF, must not be.
func TestBSMTPKill(t *testing.T) {
	t.Parallel()
	for _, end := range []string{"kill", "eof"} {
		t.Run(end, func(t *testing.T) {
			t.Parallel()
			r := newRig(t)
			s := r.startBSMTP("-i")
			s.expect("220")
			s.cmd("EHLO app.example.com", "250")
			s.cmd("MAIL FROM:<app@example.com>", "250")
			s.cmd("RCPT TO:<first@example.com>", "250")
			s.cmd("DATA", "354")
			s.cmd("Subject: first\r\n\r\nwhole\r\n.", "250")
			s.cmd("MAIL FROM:<app@example.com>", "250")
			s.cmd("RCPT TO:<second@example.com>", "250")
			s.cmd("DATA", "354")
			s.send("Subject: second\r\n\r\n" + strings.Repeat("half of it\r\n", 500))
			time.Sleep(100 * time.Millisecond)
			if end == "kill" {
				s.proc.Process.Kill()
			} else {
				s.in.Close()
			}
			s.proc.Wait()
			if end == "eof" && s.stderr.Len() != 0 {
				t.Errorf("sendmail -bs wrote on stderr: %q", s.stderr.String())
			}
			env := envelope{"app@example.com", []string{"first@example.com"}}
			r.expectQueued(env)
			m := r.deliver(1)[0]
			checkEnvelope(t, m, env)
			checkStandard(t, m)
			checkBody(t, m, "whole\n")
		})
	}
}
