// Package sendmailcmd is the sendmail program: it takes a message from a
// local program and queues it, and answers the other modes sendmail has
// (-bs, -bp, -bv, -q, newaliases).
package sendmailcmd

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/postie-mail/postie/internal/address"
	"github.com/postie-mail/postie/internal/bsmtp"
	"github.com/postie-mail/postie/internal/cmdline"
	"github.com/postie-mail/postie/internal/config"
	"github.com/postie-mail/postie/internal/enqueue"
	"github.com/postie-mail/postie/internal/maillog"
	"github.com/postie-mail/postie/internal/ratelimit"
	"github.com/postie-mail/postie/internal/spool"
	"github.com/postie-mail/postie/internal/sysuser"
)

// Exit codes from sysexits(3) that enqueue does not define.
const (
	exUnavailable = 69 // mailq cannot be found
	exOSErr       = 71 // mailq cannot be run
)

// IO is the program's standard streams.
type IO struct {
	In       io.Reader
	Out, Err io.Writer
}

// Main runs the installed sendmail (the zero Program) with argv and
// returns the exit code. For -bp, -q and invocation as mailq it replaces
// the process with mailq, so std must be the process's own streams then.
func Main(argv []string, std IO) int {
	return Program{}.Main(argv, std)
}

// Main runs sendmail with argv and returns the exit code. Invoked as
// "mailq" it becomes mailq; as "newaliases" it checks the aliases.
func (p Program) Main(argv []string, std IO) int {
	if len(argv) > 0 && filepath.Base(argv[0]) == "mailq" {
		return p.becomeMailq(argv, std)
	}
	errorf := func(code int, format string, a ...any) int {
		fmt.Fprintf(std.Err, "sendmail: "+format+"\n", a...)
		return code
	}
	args, err := cmdline.Parse(argv)
	if err != nil {
		return errorf(enqueue.ExUsage, "%v", err)
	}
	privileged := sysuser.Privileged()
	path, explicit, err := config.Locate(args.Config, privileged, os.Getuid() == 0, os.Getenv)
	if err != nil {
		return errorf(enqueue.ExUsage, "%v", err)
	}
	cfg, err := config.Load(path, explicit)
	if err != nil {
		return errorf(enqueue.ExConfig, "%v", err)
	}
	aliases, err := loadAliases(cfg)
	if err != nil {
		return errorf(enqueue.ExConfig, "%v", err)
	}
	resolver := &address.Resolver{Aliases: aliases, Hostname: cfg.Hostname}

	// -bp and -q are mailq's: becomeMailq gives up sendmail's raised
	// privileges first, so mailq runs as the caller and decides as it
	// does when run directly (a user the shared queue is closed to gets
	// 77; root's mailq drops to the spool's owner).
	switch args.Mode {
	case cmdline.ModeNewAliases:
		// Postie reads aliases directly; there is no database to
		// build. Loading them above checked them.
		return 0
	case cmdline.ModeList:
		return p.becomeMailq(mailqArgs(path, explicit), std)
	case cmdline.ModeFlush:
		return p.becomeMailq(mailqArgs(path, explicit, flushArgs(args.Recipients, args.Verbose > 0)...), std)
	case cmdline.ModeVerify:
		return verify(resolver, cfg, args, std)
	}

	sp := spool.New(cfg.SpoolDir)
	if err := sp.Ready(); err != nil {
		if privileged {
			return errorf(enqueue.ExCantCreat, "%v (is the postie package installed correctly?)", err)
		}
		if err := sp.Init(); err != nil {
			return errorf(enqueue.ExCantCreat, "%v", err)
		}
	}
	caller := sysuser.Current()
	env := &enqueue.Env{
		Hostname:     cfg.Hostname,
		Resolver:     resolver,
		Spool:        sp,
		MaxSize:      cfg.MaxMessageSize,
		Caller:       enqueue.Caller{UID: caller.UID, User: caller.User, FullName: caller.FullName, Cwd: caller.Cwd, Exe: caller.Exe},
		Now:          time.Now,
		RewriteLocal: cfg.Rewrite.Local,
		ForceFrom:    cfg.Rewrite.From,
	}
	log := p.Log
	if log == nil {
		log = submissionLog(cfg)
	}
	env.Admit = admitter(cfg, caller, log)
	if args.Mode == cmdline.ModeSMTP {
		n, err := bsmtp.Serve(env, cfg, std.In, std.Out)
		if err != nil {
			return errorf(enqueue.ExIOErr, "-bs: %v", err)
		}
		if n > 0 {
			p.triggerDelivery(cfg, path, explicit, privileged, log, std)
		}
		return 0
	}
	req := &enqueue.Request{
		Sender:     args.Sender,
		FullName:   args.FullName,
		Recipients: args.Recipients,
		FromHeader: args.ExtractRecipients,
		DotEnds:    !args.IgnoreDots,
		Notify:     args.Notify,
		Ret:        args.Ret,
		EnvID:      args.EnvID,
		BodyType:   args.BodyType,
	}
	res, err := enqueue.Enqueue(env, req, std.In)
	if err != nil {
		var ee *enqueue.Error
		if errors.As(err, &ee) {
			return errorf(ee.Code, "%v", ee.Err)
		}
		return errorf(enqueue.ExTempFail, "%v", err)
	}
	if log != nil {
		logSubmission(log, res, caller)
	}
	if args.Verbose > 0 {
		fmt.Fprintf(std.Err, "sendmail: queued as %s: from=<%s> to=<%s>\n", res.ID, res.Sender, strings.Join(res.Recipients, ">,<"))
	}
	p.triggerDelivery(cfg, path, explicit, privileged, log, std)
	if cfg.Queue.Deliver == "foreground" && !privileged {
		p.deliverNow(mailqArgs(path, explicit, flushArgs([]string{res.ID}, args.Verbose > 0)...), std)
	}
	return 0
}

// submissionLog returns the logger for submission lines, or nil when the
// log goes to stderr: sendmail must print nothing when all is well
// (Symfony treats any byte on stderr as failure). The logger connects to
// syslog on its first line and drops its lines when syslog cannot be
// reached.
func submissionLog(cfg *config.Config) *maillog.Logger {
	if cfg.Log.Target != "syslog" {
		return nil
	}
	return maillog.NewSyslog()
}

// logSubmission writes Postfix pickup's line, with who submitted the
// message as the kernel says.
func logSubmission(log *maillog.Logger, res *enqueue.Result, c sysuser.Caller) {
	line := fmt.Sprintf("%s: uid=%d user=%s from=<%s> nrcpt=%d", res.ID, c.UID, c.User, res.Sender, len(res.Recipients))
	if c.Exe != "" {
		line += " exe=" + c.Exe
	}
	if c.Cwd != "" {
		line += " cwd=" + c.Cwd
	}
	if res.Held != "" {
		line += " held=(" + res.Held + ")"
	}
	log.Printf("%s", line)
}

// admitter applies [limits] to each submission: over a limit the message
// is queued held, or refused with EX_TEMPFAIL in hard mode.
func admitter(cfg *config.Config, c sysuser.Caller, log *maillog.Logger) func(int) (string, error) {
	return func(nrcpt int) (string, error) {
		m, rm, rh := cfg.Limits.For(c.UID, c.User)
		lim := ratelimit.Limits{MessagesPerHour: m, RecipientsPerMessage: rm, RecipientsPerHour: rh}
		d, err := ratelimit.Check(cfg.SpoolDir, c.UID, nrcpt, lim, time.Now())
		if err != nil {
			// Counting failed (a full disk?): do not lose the mail
			// for it; the enqueue itself will say if the disk is
			// the problem.
			return "", nil
		}
		if d.Over == "" {
			return "", nil
		}
		if d.LogHold && log != nil {
			log.Errorf("uid=%d user=%s: %s; holding this user's mail (mailq --release-user %s)", c.UID, c.User, d.Over, c.User)
		}
		if cfg.Limits.Hard {
			return "", &enqueue.Error{Code: enqueue.ExTempFail, Err: fmt.Errorf("%s", d.Over)}
		}
		return "rate limit", nil
	}
}

// triggerDelivery starts a detached background runner (mailq -q
// --background) when the config says deliver = "background". With raised
// privileges (the packaged, shared spool) sendmail cannot read the
// smarthost password and does not try: the systemd path unit on
// incoming/ starts the runner. A runner that cannot be started is
// reported to log (nil: nowhere), never on stderr: the message is queued,
// and callers such as Symfony take any byte there for a failure.
func (p Program) triggerDelivery(cfg *config.Config, path string, explicit, privileged bool, log *maillog.Logger, std IO) {
	if privileged || cfg.Queue.Deliver != "background" {
		return
	}
	if err := p.startRunner(cfg, path, explicit, std); err != nil && log != nil {
		log.Errorf("queued, not delivered now: %v", err)
	}
}

func (p Program) startRunner(cfg *config.Config, path string, explicit bool, std IO) error {
	mailq, err := p.findMailq()
	if err != nil {
		return err
	}
	argv := mailqArgs(path, explicit, "-q", "--background")
	devnull, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer devnull.Close()
	cmd := &exec.Cmd{
		Path:        mailq,
		Args:        argv,
		Stdin:       devnull,
		Stdout:      devnull,
		Stderr:      devnull,
		SysProcAttr: &syscall.SysProcAttr{Setsid: true},
	}
	if cfg.Log.Target == "stderr" {
		// The delivery log has nowhere else to go; keep it with the
		// caller's stderr only when that is a file, never a pipe a
		// caller like Symfony reads and treats as failure.
		if f, ok := std.Err.(*os.File); ok {
			if st, err := f.Stat(); err == nil && st.Mode().IsRegular() {
				cmd.Stderr = f
			}
		}
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	// The runner is detached (own session); reap it in the background
	// if we are still around, but never wait for it.
	go cmd.Wait()
	return nil
}

func loadAliases(cfg *config.Config) (address.Aliases, error) {
	a, err := address.NewAliases(cfg.Aliases)
	if err != nil {
		return nil, err
	}
	if cfg.AliasesFile != "" {
		if err := a.LoadFile(cfg.AliasesFile); err != nil {
			return nil, err
		}
	}
	return a, nil
}

// verify prints each recipient as it would be delivered (-bv).
func verify(res *address.Resolver, cfg *config.Config, args *cmdline.Args, std IO) int {
	if len(args.Recipients) == 0 {
		fmt.Fprintln(std.Err, "sendmail: -bv needs recipients")
		return enqueue.ExUsage
	}
	relay := cfg.Smarthost.Address
	if relay == "" {
		relay = "(no smarthost configured)"
	}
	code := 0
	for _, r := range args.Recipients {
		l, err := address.ParseList(r)
		if err == nil {
			var out []string
			out, err = res.Expand(l)
			for _, a := range out {
				fmt.Fprintf(std.Out, "%s... deliverable: relay %s\n", a, relay)
			}
		}
		if err != nil {
			fmt.Fprintf(std.Out, "%s... undeliverable: %v\n", r, err)
			code = enqueue.ExDataErr
		}
	}
	return code
}
