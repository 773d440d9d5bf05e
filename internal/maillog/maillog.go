// Package maillog writes the delivery log: one line per delivery attempt
// per message, in the form administrators know from Postfix:
//
//	ID: to=<a@example.com>, relay=smtp.example.com[192.0.2.1]:587, delay=1.2, tries=1, status=sent (250 2.0.0 Ok: queued as X)
//
// Lines go to syslog (facility mail, tag "postie") or, when syslog is not
// available (containers) or the config says so, to stderr.
package maillog

import (
	"fmt"
	"io"
	"log/syslog"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Logger writes log lines. It is safe for concurrent use.
type Logger struct {
	mu sync.Mutex
	// dial connects to syslog; set until the first line, which calls
	// it once.
	dial   func() (sysWriter, error)
	sys    sysWriter
	w      io.Writer // when there is no syslog; nil drops the line
	prefix string
}

// sysWriter is the part of *syslog.Writer a Logger uses.
type sysWriter interface {
	Info(string) error
	Warning(string) error
}

// dialSyslog connects to the local syslog, facility mail, tag postie.
func dialSyslog() (sysWriter, error) {
	return syslog.New(syslog.LOG_MAIL|syslog.LOG_INFO, "postie")
}

// New returns a Logger for target "syslog" or "stderr". A syslog Logger
// connects on its first line, not before: a run that logs nothing (a
// flush of an empty queue) never dials, and log/syslog tries six socket
// paths and types when there is no /dev/log. It tries once: when syslog
// cannot be reached, its lines go to stderr.
func New(target string) *Logger {
	l := &Logger{w: os.Stderr, prefix: "postie: "}
	if target == "syslog" {
		l.dial = dialSyslog
	}
	return l
}

// NewSyslog returns a Logger that writes to syslog only, connecting on
// its first line; when syslog cannot be reached its lines are dropped.
// sendmail logs submissions with it: it must print nothing on stderr when
// all is well (Symfony treats any byte there as failure).
func NewSyslog() *Logger { return &Logger{dial: dialSyslog} }

// NewWriter returns a Logger writing to w (tests, -v).
func NewWriter(w io.Writer) *Logger { return &Logger{w: w, prefix: "postie: "} }

// Printf logs one informational line.
func (l *Logger) Printf(format string, a ...any) { l.log(false, format, a...) }

// Errorf logs one line at warning level.
func (l *Logger) Errorf(format string, a ...any) { l.log(true, format, a...) }

func (l *Logger) log(warn bool, format string, a ...any) {
	msg := oneLine(fmt.Sprintf(format, a...))
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.dial != nil {
		if s, err := l.dial(); err == nil {
			l.sys = s
		}
		l.dial = nil
	}
	if l.sys != nil {
		if warn {
			l.sys.Warning(msg)
		} else {
			l.sys.Info(msg)
		}
		return
	}
	if l.w == nil {
		return
	}
	fmt.Fprintf(l.w, "%s%s\n", l.prefix, msg)
}

// Attempt is one delivery attempt of one message.
type Attempt struct {
	ID     string
	To     []string
	Relay  string
	Delay  time.Duration
	Tries  int
	Status string // sent, deferred, bounced, uncertain, held, expired
	Reply  string
}

// Delivery logs an attempt in Postfix's form.
func (l *Logger) Delivery(a Attempt) {
	to := make([]string, len(a.To))
	for i, t := range a.To {
		to[i] = "<" + t + ">"
	}
	relay := a.Relay
	if relay == "" {
		relay = "none"
	}
	l.log(a.Status != "sent", "%s: to=%s, relay=%s, delay=%s, tries=%d, status=%s (%s)",
		a.ID, strings.Join(to, ","), relay, seconds(a.Delay), a.Tries, a.Status, a.Reply)
}

// seconds formats a delay as Postfix does: "0.43", "15", "7200".
func seconds(d time.Duration) string {
	s := strconv.FormatFloat(d.Seconds(), 'f', 2, 64)
	s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	if s == "" {
		return "0"
	}
	return s
}

// oneLine keeps a log entry on one line whatever a server replied.
func oneLine(s string) string {
	return strings.NewReplacer("\r\n", " ", "\n", " ", "\r", " ").Replace(s)
}
