package clients_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSNail: s-nail runs "MTA -i -- rcpt... cc... bcc..." and writes no
// Bcc field; it writes no From either, so Postie adds one for the caller.
func TestSNail(t *testing.T) {
	t.Parallel()
	need(t, "s-nail", "/usr/bin/s-nail")
	r := newRig(t)
	env := envelope{callerAddr(), []string{"rcpt@example.com", "cc@example.com", "bcc@example.com"}}
	// -:/ loads no resource files; sendwait makes s-nail wait for the
	// MTA and report its exit status.
	r.mustRun(true, []byte("Hello from s-nail\n.\nafter the dot\n"), []string{"MAILRC=/dev/null"}, "/usr/bin/s-nail",
		"-:/", "-Ssendwait", "-Smta="+bins.sendmail, "-s", "s-nail test",
		"-c", "cc@example.com", "-b", "bcc@example.com", "rcpt@example.com")
	r.expectQueued(env)
	m := r.deliver(1)[0]
	checkEnvelope(t, m, env)
	checkStandard(t, m)
	checkAddrs(t, m, "From", callerAddr())
	checkAddrs(t, m, "To", "rcpt@example.com")
	checkAddrs(t, m, "Cc", "cc@example.com")
	checkHeader(t, m, "Subject", "s-nail test")
	checkBody(t, m, "Hello from s-nail\n.\nafter the dot\n")
}

// TestBSDMailx: Debian's bsd-mailx runs "sendmail -i -t [-f from]" with
// the sendmail variable, and writes the Bcc field for sendmail to remove.
func TestBSDMailx(t *testing.T) {
	t.Parallel()
	need(t, "bsd-mailx", "/usr/bin/bsd-mailx")
	r := newRig(t)
	rc := filepath.Join(r.dir, "mailrc")
	writeFile(t, rc, "set sendmail="+bins.sendmail+"\n")
	env := envelope{"sender@example.com", []string{"rcpt@example.com", "cc@example.com", "bcc@example.com"}}
	r.mustRun(true, []byte("Hello from mailx\n.\nafter the dot\n"), []string{"MAILRC=" + rc}, "/usr/bin/bsd-mailx",
		"-s", "mailx test", "-c", "cc@example.com", "-b", "bcc@example.com", "-r", "sender@example.com", "rcpt@example.com")
	r.expectQueued(env)
	m := r.deliver(1)[0]
	checkEnvelope(t, m, env)
	checkStandard(t, m)
	checkAddrs(t, m, "From", "sender@example.com")
	checkAddrs(t, m, "To", "rcpt@example.com")
	checkAddrs(t, m, "Cc", "cc@example.com")
	checkHeader(t, m, "Subject", "mailx test")
	checkBody(t, m, "Hello from mailx\n.\nafter the dot\n")
}

// TestBSDMailxRoot: "echo ... | mail -s subj root", the way shell scripts
// and many packages report to root.
func TestBSDMailxRoot(t *testing.T) {
	t.Parallel()
	need(t, "bsd-mailx", "/usr/bin/bsd-mailx")
	r := newRig(t)
	rc := filepath.Join(r.dir, "mailrc")
	writeFile(t, rc, "set sendmail="+bins.sendmail+"\n")
	env := envelope{callerAddr(), []string{"admin@example.com"}}
	r.mustRun(true, []byte("disk 91% full\n"), []string{"MAILRC=" + rc}, "/usr/bin/bsd-mailx", "-s", "disk report", "root")
	r.expectQueued(env)
	m := r.deliver(1)[0]
	checkEnvelope(t, m, env)
	checkStandard(t, m)
	checkAddrs(t, m, "To", "root@"+hostname)
	checkAddrs(t, m, "From", callerAddr())
	checkBody(t, m, "disk 91% full\n")
}

// TestMutt: mutt runs "$sendmail -- rcpt... cc... bcc..." and, with
// write_bcc unset (the default), writes no Bcc field.
func TestMutt(t *testing.T) {
	t.Parallel()
	need(t, "mutt", "/usr/bin/mutt")
	r := newRig(t)
	rc := filepath.Join(r.dir, "muttrc")
	writeFile(t, rc, `set sendmail="`+bins.sendmail+` -oem -oi"
set record=""
set copy=no
set from="Ops <ops@example.com>"
set use_from=yes
set hostname="`+hostname+`"
set charset="utf-8"
`)
	env := envelope{callerAddr(), []string{"rcpt@example.com", "cc@example.com", "bcc@example.com"}}
	r.mustRun(true, []byte("Hello from mutt\n.\nafter the dot\n"), nil, "/usr/bin/mutt",
		"-n", "-F", rc, "-s", "mutt test", "-c", "cc@example.com", "-b", "bcc@example.com", "rcpt@example.com")
	r.expectQueued(env)
	m := r.deliver(1)[0]
	checkEnvelope(t, m, env)
	checkStandard(t, m)
	checkAddrs(t, m, "From", "ops@example.com")
	checkAddrs(t, m, "To", "rcpt@example.com")
	checkAddrs(t, m, "Cc", "cc@example.com")
	checkHeader(t, m, "Subject", "mutt test")
	checkBody(t, m, "Hello from mutt\n.\nafter the dot\n")
}

// TestGitSendEmail: git send-email with --smtp-server naming a program runs
// "PROGRAM -i [-f sender] rcpt..." and writes no Bcc field. The patch body
// (with a lone "." line in the commit message) must arrive as
// format-patch wrote it.
func TestGitSendEmail(t *testing.T) {
	t.Parallel()
	need(t, "git-email", "/usr/bin/git", "/usr/lib/git-core/git-send-email")
	r := newRig(t)
	repo := filepath.Join(r.dir, "repo")
	git := func(args ...string) string {
		t.Helper()
		return r.mustRun(false, nil, nil, "/usr/bin/git", append([]string{"-C", repo,
			"-c", "user.name=Dev Eloper", "-c", "user.email=dev@example.com"}, args...)...).stdout
	}
	r.mustRun(false, nil, nil, "/usr/bin/git", "init", "-q", repo)
	writeFile(t, filepath.Join(repo, "f"), "a\n")
	git("add", "f")
	git("commit", "-q", "-m", "init")
	writeFile(t, filepath.Join(repo, "f"), "a\nb\n")
	git("commit", "-q", "-a", "-m", "Add b to f", "-m", "Body line\n.\nafter the dot")
	patch := strings.TrimSpace(git("format-patch", "-1", "-o", filepath.Join(r.dir, "patches")))
	env := envelope{"dev@example.com", []string{"rcpt@example.com", "cc@example.com", "bcc@example.com"}}
	// --smtp-domain spares a slow FQDN lookup; it names nothing sent.
	git("send-email", "--smtp-server="+bins.sendmail, "--smtp-domain="+hostname, "--envelope-sender=auto",
		"--to=rcpt@example.com", "--cc=cc@example.com", "--bcc=bcc@example.com",
		"--suppress-cc=all", "--confirm=never", "--quiet", patch)
	r.expectQueued(env)
	m := r.deliver(1)[0]
	checkEnvelope(t, m, env)
	checkStandard(t, m)
	checkAddrs(t, m, "From", "dev@example.com")
	checkAddrs(t, m, "To", "rcpt@example.com")
	checkAddrs(t, m, "Cc", "cc@example.com")
	checkHeader(t, m, "Subject", "[PATCH] Add b to f")
	raw, err := os.ReadFile(patch)
	if err != nil {
		t.Fatal(err)
	}
	_, body, ok := bytes.Cut(raw, []byte("\n\n"))
	if !ok {
		t.Fatalf("patch %s has no body", patch)
	}
	if !bytes.Contains(body, []byte("Body line\n.\nafter the dot\n")) {
		t.Fatalf("format-patch body lacks the commit message: %q", body)
	}
	checkBody(t, m, string(body))
}
