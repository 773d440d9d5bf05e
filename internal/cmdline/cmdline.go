// Package cmdline parses sendmail's command line the way Sendmail and
// Postfix do.
//
// Generic flag libraries get sendmail wrong: flags cluster like getopt
// ("-ti"), an option's argument may be attached or the next word
// ("-fADDR", "-f ADDR", "-FCronDaemon", "-F 'Cron Daemon'"), -o takes its
// option letter attached ("-oi", "-oem", "-odb"), -q takes an optional
// interval only when attached ("-q", "-q30m"), and the first word that is
// not a flag starts the recipients. Every flag the programs that call
// sendmail use is accepted; flags that make no sense for a relay-only
// agent are accepted and ignored, as Postfix does, except where ignoring
// would surprise (-X, -bd, -bt are refused).
package cmdline

import (
	"fmt"
	"path/filepath"
	"strings"
)

// Mode is what sendmail is asked to do.
type Mode string

// Modes (-b letters).
const (
	ModeDeliver    Mode = "deliver"    // -bm, the default
	ModeSMTP       Mode = "smtp"       // -bs
	ModeList       Mode = "list"       // -bp, or invoked as mailq
	ModeVerify     Mode = "verify"     // -bv
	ModeNewAliases Mode = "newaliases" // -bi, -I, or invoked as newaliases
	ModeFlush      Mode = "flush"      // -q
)

// Args is a parsed command line.
type Args struct {
	Mode Mode
	// ExtractRecipients is -t.
	ExtractRecipients bool
	// IgnoreDots is -i or -oi: a lone "." does not end the message.
	IgnoreDots bool
	// Sender is -f or -r; nil when not given. "<>" or "" is the null
	// sender.
	Sender *string
	// FullName is -F.
	FullName string
	// Verbose counts -v.
	Verbose int
	// DSN: -N (notify list), -R (ret), -V (envid).
	Notify []string
	Ret    string
	EnvID  string
	// BodyType is -B: "7BIT" or "8BITMIME".
	BodyType string
	// Config is -C.
	Config string
	// QueueArg is what followed -q ("" for a plain -q).
	QueueArg string
	// Recipients are the non-flag arguments.
	Recipients []string
}

// UsageError is a bad command line; sendmail exits 64 (EX_USAGE).
type UsageError struct{ Msg string }

func (e *UsageError) Error() string { return e.Msg }

func usage(format string, a ...any) error { return &UsageError{Msg: fmt.Sprintf(format, a...)} }

// takesArg lists the option letters that take an argument, attached or as
// the next word.
const takesArg = "ABCFLNORVXbdefhopr"

// ignoredBool lists flags accepted and ignored: -G (gateway submission),
// -U (initial user submission), -n (no aliasing), -m (me too), -x, -c,
// -S? are historical; Postfix ignores them too.
const ignoredBool = "GUnmxc"

// Parse parses argv (argv[0] is the program name, which selects the mode
// for mailq and newaliases).
func Parse(argv []string) (*Args, error) {
	a := &Args{Mode: ModeDeliver}
	if len(argv) == 0 {
		return a, nil
	}
	switch filepath.Base(argv[0]) {
	case "mailq":
		a.Mode = ModeList
	case "newaliases":
		a.Mode = ModeNewAliases
	}
	args := argv[1:]
	for _, s := range args {
		if strings.ContainsAny(s, "\r\n\x00") {
			return nil, usage("argument %q contains a line break or NUL", clip(s))
		}
	}
	i := 0
	for ; i < len(args); i++ {
		arg := args[i]
		if arg == "--" {
			i++
			break
		}
		if len(arg) < 2 || arg[0] != '-' {
			break
		}
		// Walk the cluster of flags in arg.
		for j := 1; j < len(arg); j++ {
			c := arg[j]
			if strings.IndexByte(takesArg, c) >= 0 {
				val := arg[j+1:]
				if val == "" {
					if i+1 >= len(args) {
						return nil, usage("option -%c requires an argument", c)
					}
					i++
					val = args[i]
				}
				if err := a.setArg(c, val); err != nil {
					return nil, err
				}
				break
			}
			switch c {
			case 't':
				a.ExtractRecipients = true
			case 'i':
				a.IgnoreDots = true
			case 'v':
				a.Verbose++
			case 'I':
				a.Mode = ModeNewAliases
			case 'q':
				a.Mode = ModeFlush
				a.QueueArg = arg[j+1:]
				j = len(arg)
			default:
				if strings.IndexByte(ignoredBool, c) >= 0 {
					continue
				}
				return nil, usage("unknown option -%c", c)
			}
		}
	}
	a.Recipients = append(a.Recipients, args[i:]...)
	return a, nil
}

func (a *Args) setArg(c byte, val string) error {
	switch c {
	case 'f', 'r':
		v := val
		a.Sender = &v
	case 'F':
		a.FullName = val
	case 'o':
		// -oi is -i; every other sendmail option (-oem, -oee, -odb,
		// -odi, -odq, -ob*, -oQ...) concerns a local MTA's delivery
		// and is ignored.
		if val == "i" {
			a.IgnoreDots = true
		}
	case 'O':
		if strings.HasPrefix(strings.ToLower(val), "ignoredots") {
			a.IgnoreDots = !strings.HasSuffix(strings.ToLower(val), "=false")
		}
	case 'b':
		switch val {
		case "m":
			a.Mode = ModeDeliver
		case "s":
			a.Mode = ModeSMTP
		case "p":
			a.Mode = ModeList
		case "v":
			a.Mode = ModeVerify
		case "i":
			a.Mode = ModeNewAliases
		case "d", "D":
			return usage("-b%s (daemon mode) is not supported: Postie is not a listening MTA", val)
		case "t", "h", "H", "P":
			return usage("-b%s is not supported", val)
		default:
			return usage("unknown option -b%s", val)
		}
	case 'N':
		for _, n := range strings.Split(strings.ToLower(val), ",") {
			n = strings.TrimSpace(n)
			switch n {
			case "never", "success", "failure", "delay":
				a.Notify = append(a.Notify, n)
			default:
				return usage("-N: unknown DSN notification %q (use never, or success,failure,delay)", n)
			}
		}
		if len(a.Notify) > 1 {
			for _, n := range a.Notify {
				if n == "never" {
					return usage("-N: never cannot be combined with other notifications")
				}
			}
		}
	case 'R':
		switch strings.ToLower(val) {
		case "full", "hdrs":
			a.Ret = strings.ToLower(val)
		default:
			return usage("-R: %q is not full or hdrs", val)
		}
	case 'V':
		for _, r := range val {
			if r < '!' || r > '~' || r == '+' || r == '=' {
				return usage("-V: envelope ID %q must be printable ASCII without '+' and '='", clip(val))
			}
		}
		if len(val) > 100 {
			return usage("-V: envelope ID longer than 100 characters")
		}
		a.EnvID = val
	case 'B':
		switch strings.ToUpper(val) {
		case "7BIT", "8BITMIME":
			a.BodyType = strings.ToUpper(val)
		default:
			return usage("-B: %q is not 7BIT or 8BITMIME", val)
		}
	case 'C':
		a.Config = val
	case 'X':
		return usage("-X (traffic log file) is not supported")
	case 'A', 'L', 'h', 'p', 'e', 'd':
		// -Ac/-Am (Postfix), -L tag, -h hop count, -p protocol,
		// -e error mode, -d debug: accepted and ignored.
	}
	return nil
}

func clip(s string) string {
	if len(s) > 60 {
		return s[:57] + "..."
	}
	return s
}
