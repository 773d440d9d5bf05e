package clients_test

import (
	"bytes"
	"io"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// bsSession is a sendmail -bs process driven line by line.
type bsSession struct {
	t       *testing.T
	proc    *exec.Cmd
	in      io.WriteCloser
	replies chan string
	stderr  bytes.Buffer
}

// startBSMTP starts sendmail -bs with more flags; the process is killed
// when the test ends.
func (r *rig) startBSMTP(flags ...string) *bsSession {
	r.t.Helper()
	s := &bsSession{t: r.t, replies: make(chan string, 100)}
	s.proc = exec.Command(bins.sendmail, append([]string{"-bs"}, flags...)...)
	s.proc.Env = r.env()
	s.proc.Dir = r.dir
	s.proc.Stderr = &s.stderr
	var err error
	if s.in, err = s.proc.StdinPipe(); err != nil {
		r.t.Fatal(err)
	}
	out, err := s.proc.StdoutPipe()
	if err != nil {
		r.t.Fatal(err)
	}
	if err := s.proc.Start(); err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { s.proc.Process.Kill(); s.proc.Wait() })
	go func() {
		buf := make([]byte, 4096)
		var acc string
		for {
			n, err := out.Read(buf)
			acc += string(buf[:n])
			for {
				line, rest, ok := strings.Cut(acc, "\r\n")
				if !ok {
					break
				}
				s.replies <- line
				acc = rest
			}
			if err != nil {
				close(s.replies)
				return
			}
		}
	}()
	return s
}

// expect reads replies up to a final one (code and a space) and checks
// its code.
func (s *bsSession) expect(code string) string {
	s.t.Helper()
	for {
		select {
		case line, ok := <-s.replies:
			if !ok {
				s.t.Fatalf("sendmail -bs closed its output waiting for %s", code)
			}
			if len(line) >= 4 && line[3] == ' ' {
				if !strings.HasPrefix(line, code) {
					s.t.Fatalf("reply %q, want %s", line, code)
				}
				return line
			}
		case <-time.After(10 * time.Second):
			s.t.Fatalf("no %s reply", code)
		}
	}
}

func (s *bsSession) send(text string) {
	s.t.Helper()
	if _, err := io.WriteString(s.in, text); err != nil {
		s.t.Fatal(err)
	}
}

// cmd sends one line and expects a reply with code.
func (s *bsSession) cmd(line, code string) string {
	s.t.Helper()
	s.send(line + "\r\n")
	return s.expect(code)
}

// TestBSMTPLocalNames: sendmail -bs, like Postfix's and Sendmail's, is a
// local submission: an unqualified MAIL FROM or RCPT TO is a local name,
// qualified and aliased exactly as the same name given on the command
// line (sendmail -f www-data root).
func TestBSMTPLocalNames(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	s := r.startBSMTP()
	s.expect("220")
	s.cmd("EHLO app.example.com", "250")
	// go-smtp's server requires a domain in MAIL and RCPT; bare names
	// are refused with a syntax error and the session goes on. This is
	// a documented difference from Postfix (README): SMTP clients send
	// qualified addresses, and name@hostname or name@localhost reach
	// the aliases.
	s.cmd("MAIL FROM:<www-data>", "501")
	s.cmd("MAIL FROM:<www-data@localhost>", "250")
	s.cmd("RCPT TO:<root>", "501")
	s.cmd("RCPT TO:<root@localhost>", "250")
	s.cmd("DATA", "354")
	s.cmd("Subject: local names\r\n\r\nbody\r\n.", "250")
	s.cmd("QUIT", "221")
	env := envelope{"www-data@localhost", []string{"admin@example.com"}}
	r.expectQueued(env)
	m := r.deliver(1)[0]
	checkEnvelope(t, m, env)
	checkStandard(t, m)
}

// TestBSMTPHostnameAlias: RCPT TO:<root@hostname> reaches root's alias
// over -bs (bsmtp's Rcpt does this); the command-line counterpart is
// pinned in TestSystemPrograms ("script: root@hostname argument").
func TestBSMTPHostnameAlias(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	s := r.startBSMTP()
	s.expect("220")
	s.cmd("EHLO app.example.com", "250")
	s.cmd("MAIL FROM:<app@example.com>", "250")
	s.cmd("RCPT TO:<root@"+hostname+">", "250")
	s.cmd("DATA", "354")
	s.cmd("Subject: qualified root\r\n\r\nbody\r\n.", "250")
	s.cmd("QUIT", "221")
	env := envelope{"app@example.com", []string{"admin@example.com"}}
	r.expectQueued(env)
	m := r.deliver(1)[0]
	checkEnvelope(t, m, env)
	checkStandard(t, m)
}
