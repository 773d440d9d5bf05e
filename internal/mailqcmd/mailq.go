// Package mailqcmd is the mailq program: it lists the queue, flushes it,
// and administers single messages.
package mailqcmd

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/postie-mail/postie/internal/config"
	"github.com/postie-mail/postie/internal/maillog"
	"github.com/postie-mail/postie/internal/runner"
	"github.com/postie-mail/postie/internal/spool"
	"github.com/postie-mail/postie/internal/sysuser"
)

// Exit codes from sysexits(3).
const (
	exOK       = 0
	exUsage    = 64
	exDataErr  = 65
	exNoInput  = 66
	exSoftware = 70
	exCantCrt  = 73
	exTempFail = 75
	exNoPerm   = 77
	exConfig   = 78
)

// IO is the program's standard streams.
type IO struct {
	In       io.Reader
	Out, Err io.Writer
}

// Main runs mailq with argv (argv[0] is the program name) and returns the
// exit code.
func Main(argv []string, std IO) int {
	fs := flag.NewFlagSet("mailq", flag.ContinueOnError)
	fs.SetOutput(std.Err)
	var (
		cfgPath    = fs.String("C", "", "config file")
		asJSON     = fs.Bool("json", false, "print the queue as JSON")
		flush      = fs.Bool("q", false, "deliver queued messages now (all, or the IDs given)")
		due        = fs.Bool("due", false, "with -q: only messages whose retry time has come")
		background = fs.Bool("background", false, "with -q: run as the background runner (one at a time; others ask it to rescan)")
		del        = fs.Bool("d", false, "delete the messages given by ID")
		yes        = fs.Bool("y", false, "do not ask for confirmation")
		show       = fs.Bool("s", false, "show the messages given by ID: envelope, header, delivery history")
		hold       = fs.Bool("hold", false, "hold the messages given by ID")
		release    = fs.Bool("release", false, "release held (or uncertain) messages given by ID for delivery")
		requeue    = fs.Bool("requeue", false, "retry the messages given by ID at the next flush, whatever their retry time (same as --release)")
		expire     = fs.Bool("expire", false, "return the messages given by ID to their senders now (bounce)")
		delivered  = fs.Bool("delivered", false, "mark uncertain messages given by ID as delivered (removes them)")
		check      = fs.Bool("check", false, "check the config and the way to the smarthost, sending nothing; an address argument adds a MAIL/RCPT probe")
		dkimTXT    = fs.Bool("dkim-txt", false, "print the DNS TXT record of each DKIM key")
		verbose    = fs.Bool("v", false, "print the SMTP dialogue (AUTH redacted) on stderr")
		senders    = fs.Bool("senders", false, "report who submitted how much in the last hour and day, with held counts")
		relUser    = fs.String("release-user", "", "release every message held for a rate limit from this user (name or uid)")
		delUser    = fs.String("delete-user", "", "delete every held message from this user (name or uid)")
		fState     = fs.String("state", "", "list only messages in this state (queued, deferred, held, uncertain, sending)")
		fSender    = fs.String("sender", "", "list only messages whose sender contains this")
		fRcpt      = fs.String("recipient", "", "list only messages with a recipient containing this")
		fOlder     = fs.Duration("older", 0, "list only messages older than this (e.g. 2h)")
		fUser      = fs.String("user", "", "list only messages submitted by this user (name or uid)")
	)
	fs.Usage = func() {
		fmt.Fprintln(std.Err, "usage: mailq [-C config] [--json] | -q [--due] [ID...] | -d [-y] ID... | -s ID... | --hold ID... | --release ID... | --delivered ID... | --check [address] | --dkim-txt")
		fs.PrintDefaults()
	}
	if err := fs.Parse(argv[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exOK
		}
		return exUsage
	}
	ids := fs.Args()
	cfg, code := loadConfig(*cfgPath, std.Err)
	if cfg == nil {
		return code
	}
	// Root on a packaged install acts as the queue runner's user, so
	// that the state files it writes stay the runner's.
	if err := sysuser.DropToOwner(cfg.SpoolDir); err != nil {
		fmt.Fprintf(std.Err, "mailq: %v\n", err)
		return exNoPerm
	}
	sp := spool.New(cfg.SpoolDir)
	needIDs := func(what string) bool {
		if len(ids) == 0 {
			fmt.Fprintf(std.Err, "mailq: %s needs one or more queue IDs\n", what)
			return false
		}
		for _, id := range ids {
			if !spool.ValidID(id) {
				fmt.Fprintf(std.Err, "mailq: %q is not a queue ID\n", id)
				return false
			}
		}
		return true
	}
	filter := &Filter{State: *fState, Sender: *fSender, Recipient: *fRcpt, Older: *fOlder, User: *fUser}
	switch {
	case *senders:
		return reportSenders(cfg, std)
	case *relUser != "":
		return perUser(sp, *relUser, false, std)
	case *delUser != "":
		return perUser(sp, *delUser, true, std)
	case *check:
		return runCheck(cfg, ids, *verbose, std)
	case *dkimTXT:
		return printDKIM(cfg, std)
	case *flush:
		for _, id := range ids {
			if !spool.ValidID(id) {
				fmt.Fprintf(std.Err, "mailq: %q is not a queue ID\n", id)
				return exUsage
			}
		}
		return Flush(cfg, ids, *due, *background, *verbose, std)
	case *del:
		if !needIDs("-d") {
			return exUsage
		}
		return deleteMessages(sp, ids, *yes, std)
	case *show:
		if !needIDs("-s") {
			return exUsage
		}
		return showMessages(sp, ids, std)
	case *expire:
		if !needIDs("--expire") {
			return exUsage
		}
		return expireMessages(cfg, ids, std)
	case *hold, *release, *requeue, *delivered:
		what := map[bool]string{*hold: "--hold", *release: "--release", *requeue: "--requeue", *delivered: "--delivered"}[true]
		if !needIDs(what) {
			return exUsage
		}
		return adminMessages(sp, ids, *hold, *release || *requeue, *delivered, std)
	}
	if len(ids) > 0 {
		fmt.Fprintf(std.Err, "mailq: unexpected argument %q\n", ids[0])
		return exUsage
	}
	return ListFiltered(cfg, *asJSON, filter, std)
}

// loadConfig locates and reads the config; on failure it reports and
// returns the exit code.
func loadConfig(flagC string, stderr io.Writer) (*config.Config, int) {
	path, explicit, err := config.Locate(flagC, sysuser.Privileged(), os.Getuid() == 0, os.Getenv)
	if err != nil {
		fmt.Fprintf(stderr, "mailq: %v\n", err)
		return nil, exUsage
	}
	cfg, err := config.Load(path, explicit)
	if err != nil {
		fmt.Fprintf(stderr, "mailq: %v\n", err)
		return nil, exConfig
	}
	return cfg, exOK
}

// Flush delivers the queue. Exit 0 when nothing was left undelivered
// by a temporary failure, 75 otherwise.
func Flush(cfg *config.Config, ids []string, due, background, verbose bool, std IO) int {
	sp := spool.New(cfg.SpoolDir)
	if err := sp.Init(); err != nil {
		fmt.Fprintf(std.Err, "mailq: %v\n", err)
		if errors.Is(err, fs.ErrPermission) {
			// Someone else's spool (the package's, for a user who is
			// neither root nor the queue runner), as for a listing.
			return exNoPerm
		}
		return exCantCrt
	}
	log := maillog.New(cfg.Log.Target)
	var debug io.Writer
	if verbose {
		debug = std.Err
	}
	r, err := runner.New(cfg, log, debug)
	if err != nil {
		fmt.Fprintf(std.Err, "mailq: %v\n", err)
		return exConfig
	}
	if f, ok := std.Err.(*os.File); ok && !background && isTerminal(f) {
		r.Progress = f
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	opts := runner.Options{IDs: ids, DueOnly: due || background}
	if background {
		return runBackground(ctx, sp, r, opts, std)
	}
	sum, err := r.Run(ctx, opts)
	if err != nil {
		fmt.Fprintf(std.Err, "mailq: %v\n", err)
		return exTempFail
	}
	if !r.HasSmarthost() && sum.Deferred > 0 {
		fmt.Fprintf(std.Err, "mailq: %v; %d message(s) stay queued\n", runner.ErrNoSmarthost, sum.Deferred)
	} else if !background && (sum.Sent+sum.Deferred+sum.Bounced+sum.Held+sum.Uncertain) > 0 {
		fmt.Fprintf(std.Err, "mailq: %s\n", sum)
		if sum.Deferred > 0 {
			fmt.Fprintf(std.Err, "mailq: last error: %s\n", sum.LastError)
		}
	}
	if sum.Deferred > 0 {
		return exTempFail
	}
	return exOK
}

// expireMessages bounces messages now.
func expireMessages(cfg *config.Config, ids []string, std IO) int {
	r, err := runner.New(cfg, maillog.New(cfg.Log.Target), nil)
	if err != nil {
		fmt.Fprintf(std.Err, "mailq: %v\n", err)
		return exConfig
	}
	sum, err := r.Run(context.Background(), runner.Options{IDs: ids, Expire: true})
	if err != nil {
		fmt.Fprintf(std.Err, "mailq: %v\n", err)
		return exTempFail
	}
	fmt.Fprintf(std.Out, "%d message(s) returned to sender\n", sum.Bounced)
	if sum.Bounced != len(ids) {
		fmt.Fprintf(std.Err, "mailq: %d message(s) not found or being delivered\n", len(ids)-sum.Bounced)
		return exTempFail
	}
	return exOK
}

// runBackground is the runner started after enqueue: only one runs at a
// time. A later one that finds the lock taken leaves a "kick" for the
// running one, which scans again before it exits, so no new message waits
// for the next timer.
func runBackground(ctx context.Context, sp *spool.Spool, r *runner.Runner, opts runner.Options, std IO) int {
	kick := sp.Dir + "/kick"
	if f, err := os.OpenFile(kick, os.O_CREATE|os.O_WRONLY, 0o600); err == nil {
		f.Close()
	}
	lock, err := os.OpenFile(sp.Dir+"/run.lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		fmt.Fprintf(std.Err, "mailq: %v\n", err)
		return exCantCrt
	}
	defer lock.Close()
	for {
		if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
			return exOK // the running one will see the kick
		}
		for {
			os.Remove(kick)
			if _, err := r.Run(ctx, opts); err != nil {
				r.Log.Errorf("background run: %v", err)
			}
			if _, err := os.Stat(kick); err != nil || ctx.Err() != nil {
				break
			}
		}
		unix.Flock(int(lock.Fd()), unix.LOCK_UN)
		// A kick that arrived after our last check and before the
		// unlock would otherwise wait for the timer.
		if _, err := os.Stat(kick); err != nil || ctx.Err() != nil {
			return exOK
		}
	}
}

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
