package sendmailcmd

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/postie-mail/postie/internal/maillog"
)

// sendmail leaves everything that delivers or reads the queue to the mailq
// program: -bp, -q, invocation as mailq, and deliver = "foreground" or
// "background" after an enqueue. Linked into sendmail, delivery (the SMTP
// client, TLS, DKIM, OAuth2, bounces, the charset tables) made every
// enqueue pay for its package initialisers: without it a sendmail -t run
// takes a fifth less time and CPU (bench/peers/NOTES.md, "Enqueue").
//
// Privileges: mailq runs only as the caller, with what the caller could
// run it with directly. Before sendmail becomes mailq (-bp, -q, invoked as
// mailq) it gives up the setgid group (dropRaised): root's mailq then
// drops to the spool's owner itself, and anyone else's is that user's own
// mailq, as /usr/bin/mailq would be (refused the shared queue with 77).
// An ordinary user of the setgid sendmail gets no foreground or
// background delivery (see Main).

// Program is the sendmail program. Its zero value is the installed one;
// tests set the fields to see what it hands to mailq.
type Program struct {
	// FindMailq returns the path of the mailq program. Nil means
	// FindMailq, the package function.
	FindMailq func() (string, error)
	// Exec replaces this process with the program at path, as
	// syscall.Exec (the default when nil) does, and returns only when
	// that fails. An Exec that runs the program as a child instead (a
	// test) reports its exit status as an *exec.ExitError, or nil for
	// exit 0, and Main returns that status.
	Exec func(path string, argv, env []string) error
	// Log is the submission log; nil means the one the config names.
	Log *maillog.Logger
}

// FindMailq returns the mailq program that goes with this sendmail: the
// first of MailqCandidates that is an executable file other than this
// program itself (a mailq that is a link to sendmail would run itself
// forever).
func FindMailq() (string, error) {
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("cannot find mailq: %w", err)
	}
	return findMailq(exe, MailqCandidates(exe))
}

// MailqCandidates returns where to look for mailq, in order: beside the
// executable exe (bin/sendmail and bin/mailq of a build), then, when exe
// is in an sbin directory, the bin directory next to it (the package
// installs /usr/sbin/sendmail and /usr/bin/mailq). Never $PATH, which the
// caller controls, and no fixed /usr/bin/mailq for a sendmail installed
// elsewhere: on a machine with another MTA that is the other MTA's mailq.
func MailqCandidates(exe string) []string {
	dir := filepath.Dir(exe)
	paths := []string{filepath.Join(dir, "mailq")}
	if filepath.Base(dir) == "sbin" {
		paths = append(paths, filepath.Join(filepath.Dir(dir), "bin", "mailq"))
	}
	return paths
}

// findMailq returns the first of paths that is an executable regular file
// and not the file exe.
func findMailq(exe string, paths []string) (string, error) {
	self, _ := os.Stat(exe)
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil || !st.Mode().IsRegular() || st.Mode().Perm()&0o111 == 0 {
			continue
		}
		if self != nil && os.SameFile(st, self) {
			continue
		}
		return p, nil
	}
	return "", fmt.Errorf("cannot find mailq (looked for %s): %w", strings.Join(paths, ", "), fs.ErrNotExist)
}

func (p Program) findMailq() (string, error) {
	if p.FindMailq != nil {
		return p.FindMailq()
	}
	return FindMailq()
}

// mailqArgs returns mailq's command line for a config at cfgPath (passed
// on with -C when the caller named it, by -C or $POSTIE_CONFIG) and
// further arguments.
func mailqArgs(cfgPath string, explicit bool, args ...string) []string {
	argv := []string{"mailq"}
	if explicit {
		argv = append(argv, "-C", cfgPath)
	}
	return append(argv, args...)
}

// flushArgs returns mailq's arguments for delivering ids now (all when
// none), printing the SMTP dialogue when verbose. "--" keeps an ID that
// starts with "-" from being read as a flag.
func flushArgs(ids []string, verbose bool) []string {
	args := []string{"-q"}
	if verbose {
		args = append(args, "-v")
	}
	if len(ids) > 0 {
		args = append(append(args, "--"), ids...)
	}
	return args
}

// becomeMailq replaces sendmail with mailq and argv, and returns the exit
// code only when that fails (or when a test's Exec ran mailq as a child).
// sendmail's raised ids are given up first; see the note at the top.
func (p Program) becomeMailq(argv []string, std IO) int {
	path, err := p.findMailq()
	if err != nil {
		fmt.Fprintf(std.Err, "sendmail: %v\n", err)
		return exUnavailable
	}
	if err := dropRaised(); err != nil {
		fmt.Fprintf(std.Err, "sendmail: %v\n", err)
		return exOSErr
	}
	run := p.Exec
	if run == nil {
		run = syscall.Exec
	}
	err = run(path, argv, os.Environ())
	if err == nil {
		return 0
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	fmt.Fprintf(std.Err, "sendmail: run %s: %v\n", path, err)
	return exOSErr
}

// dropRaised sets the effective group and user ids back to the real ones
// (the caller's), so that what sendmail execs does not inherit the
// setgid group.
func dropRaised() error {
	if g := os.Getgid(); os.Getegid() != g {
		if err := syscall.Setgid(g); err != nil {
			return fmt.Errorf("give up the setgid group: %w", err)
		}
	}
	if u := os.Getuid(); os.Geteuid() != u {
		if err := syscall.Setuid(u); err != nil {
			return fmt.Errorf("give up the setuid user: %w", err)
		}
	}
	return nil
}

// deliverNow runs mailq -q for the message just queued and waits for it
// (deliver = "foreground"). The caller must not be privileged. What
// mailq says goes to the caller's stderr; its exit status does not
// matter, since the message is queued either way. SIGINT and SIGTERM are
// passed on, so that mailq stops as it would on its own and sendmail
// still exits 0, as when delivery ran inside sendmail.
func (p Program) deliverNow(argv []string, std IO) {
	path, err := p.findMailq()
	if err != nil {
		fmt.Fprintf(std.Err, "sendmail: queued, not delivered now: %v\n", err)
		return
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	cmd := &exec.Cmd{Path: path, Args: argv, Stdout: std.Out, Stderr: std.Err}
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(std.Err, "sendmail: queued, not delivered now: %v\n", err)
		return
	}
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		close(done)
	}()
	for {
		select {
		case s := <-sigs:
			cmd.Process.Signal(s)
		case <-done:
			return
		}
	}
}
