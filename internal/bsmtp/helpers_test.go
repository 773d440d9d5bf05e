package bsmtp

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postie-mail/postie/internal/address"
	"github.com/postie-mail/postie/internal/config"
	"github.com/postie-mail/postie/internal/enqueue"
	"github.com/postie-mail/postie/internal/spool"
)

// sessionTimeout bounds one Serve call in tests; a session that does not
// end by then is a hang.
const sessionTimeout = 10 * time.Second

type fixture struct {
	dir string
	sp  *spool.Spool
	env *enqueue.Env
	cfg *config.Config
}

func newFixture(t testing.TB, aliases map[string]string, maxSize int64) *fixture {
	t.Helper()
	return newFixtureIn(t, t.TempDir(), aliases, maxSize)
}

// newFixtureIn is newFixture with the spool in dir.
func newFixtureIn(t testing.TB, dir string, aliases map[string]string, maxSize int64) *fixture {
	t.Helper()
	sp := spool.New(dir)
	if err := sp.Init(); err != nil {
		t.Fatalf("spool init: %v", err)
	}
	al, err := address.NewAliases(aliases)
	if err != nil {
		t.Fatalf("aliases: %v", err)
	}
	return &fixture{
		dir: dir,
		sp:  sp,
		env: &enqueue.Env{
			Hostname: "test.example",
			Resolver: &address.Resolver{Aliases: al, Hostname: "test.example"},
			Spool:    sp,
			MaxSize:  maxSize,
			Caller:   enqueue.Caller{UID: 33, User: "www-data", FullName: "Web Server"},
			Now:      time.Now,
		},
		cfg: &config.Config{Hostname: "test.example", MaxMessageSize: maxSize},
	}
}

// logBuffer is a go-smtp error log that keeps what is logged.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Printf(format string, v ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.WriteString(strings.TrimSpace(fmt.Sprintf(format, v...)) + "\n")
}

func (l *logBuffer) Println(v ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.WriteString(fmt.Sprintln(v...))
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

type result struct {
	n   int
	err error
	out string
	log string
}

// run serves input (given all at once, as a pipelining client or a
// script would) and returns what was written.
func (f *fixture) run(t testing.TB, input string) result {
	t.Helper()
	var out bytes.Buffer
	lb := &logBuffer{}
	done := make(chan result, 1)
	go func() {
		n, err := serve(f.env, f.cfg, strings.NewReader(input), &out, lb)
		done <- result{n: n, err: err}
	}()
	select {
	case r := <-done:
		r.out = out.String()
		r.log = lb.String()
		return r
	case <-time.After(sessionTimeout):
		t.Fatalf("session did not end within %v", sessionTimeout)
		return result{}
	}
}

// replies splits server output into replies, each the list of its lines
// without CRLF. A line that is not a reply line ends the list with the
// rest as one reply, which then fails any comparison.
func replies(out string) [][]string {
	var all [][]string
	var cur []string
	for _, line := range strings.SplitAfter(out, "\r\n") {
		if line == "" {
			continue
		}
		l := strings.TrimSuffix(line, "\r\n")
		cur = append(cur, l)
		if len(l) < 4 || l[3] == ' ' || !strings.HasSuffix(line, "\r\n") {
			all = append(all, cur)
			cur = nil
		}
	}
	if cur != nil {
		all = append(all, cur)
	}
	return all
}

// lastLines returns the last line of each reply.
func lastLines(out string) []string {
	var l []string
	for _, r := range replies(out) {
		l = append(l, r[len(r)-1])
	}
	return l
}

var queuedRe = regexp.MustCompile(`^250 2\.0\.0 Ok: queued as ([0-9A-Z]{16})$`)

// queuedIDs returns the queue IDs named in "250 Ok: queued as" replies.
func queuedIDs(out string) []string {
	var ids []string
	for _, l := range lastLines(out) {
		if m := queuedRe.FindStringSubmatch(l); m != nil {
			ids = append(ids, m[1])
		}
	}
	return ids
}

// checkReplies compares the last line of each reply with a list of
// prefixes.
func checkReplies(t testing.TB, out string, want []string) {
	t.Helper()
	got := lastLines(out)
	ok := len(got) == len(want)
	for i := 0; ok && i < len(want); i++ {
		ok = strings.HasPrefix(got[i], want[i])
	}
	if !ok {
		t.Errorf("replies:\n  got  %q\n  want %q (prefixes)", got, want)
	}
}

type queued struct {
	env *spool.Envelope
	msg string
}

// queuedMessages returns the messages in incoming/, keyed by ID.
func (f *fixture) queuedMessages(t testing.TB) map[string]queued {
	t.Helper()
	entries, err := f.sp.List()
	if err != nil {
		t.Fatalf("spool list: %v", err)
	}
	m := map[string]queued{}
	for _, e := range entries {
		q, err := spool.OpenFile(filepath.Join(f.dir, spool.IncomingDir, e.Env.ID))
		if err != nil {
			t.Fatalf("open %s: %v", e.Env.ID, err)
		}
		b, err := io.ReadAll(q.Message())
		q.Close()
		if err != nil {
			t.Fatalf("read %s: %v", e.Env.ID, err)
		}
		m[e.Env.ID] = queued{env: q.Env, msg: string(b)}
	}
	return m
}

// inOrder returns the queued messages in the order of ids.
func (f *fixture) inOrder(t testing.TB, ids []string) []queued {
	t.Helper()
	all := f.queuedMessages(t)
	var l []queued
	for _, id := range ids {
		q, ok := all[id]
		if !ok {
			t.Fatalf("reply named %s, which is not in the spool", id)
		}
		l = append(l, q)
	}
	if len(all) != len(ids) {
		t.Fatalf("spool holds %d messages, replies named %d", len(all), len(ids))
	}
	return l
}

func dirNames(t testing.TB, dir string) []string {
	t.Helper()
	d, err := os.Open(dir)
	if err != nil {
		t.Fatalf("%v", err)
	}
	defer d.Close()
	n, err := d.Readdirnames(-1)
	if err != nil {
		t.Fatalf("%v", err)
	}
	slices.Sort(n)
	return n
}

// checkTmpEmpty asserts that no partial spool file was left behind.
func (f *fixture) checkTmpEmpty(t testing.TB) {
	t.Helper()
	if n := dirNames(t, filepath.Join(f.dir, spool.TmpDir)); len(n) != 0 {
		t.Errorf("tmp/ holds %q", n)
	}
}

// header returns the value of the first field named k in msg.
func header(msg, k string) (string, bool) {
	hdr, _, _ := strings.Cut(msg, "\r\n\r\n")
	for _, l := range strings.Split(hdr, "\r\n") {
		name, v, ok := strings.Cut(l, ":")
		if ok && strings.EqualFold(name, k) {
			return strings.TrimSpace(v), true
		}
	}
	return "", false
}

func body(msg string) string {
	_, b, _ := strings.Cut(msg, "\r\n\r\n")
	return b
}

// client is an interactive SMTP client over pipes: it waits for each
// reply as Symfony's SmtpTransport does.
type client struct {
	t    testing.TB
	in   *io.PipeWriter // sendmail's standard input
	out  *bufio.Reader  // sendmail's standard output
	done chan result
}

func (f *fixture) dial(t testing.TB) *client {
	t.Helper()
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	c := &client{t: t, in: inW, out: bufio.NewReader(outR), done: make(chan result, 1)}
	go func() {
		n, err := Serve(f.env, f.cfg, inR, outW)
		// Like the process exiting: the client sees EOF.
		outW.Close()
		inR.Close()
		c.done <- result{n: n, err: err}
	}()
	return c
}

// reply reads one whole reply and returns its exact bytes.
func (c *client) reply() string {
	c.t.Helper()
	type line struct {
		s   string
		err error
	}
	var b strings.Builder
	for {
		ch := make(chan line, 1)
		go func() {
			s, err := c.out.ReadString('\n')
			ch <- line{s, err}
		}()
		select {
		case l := <-ch:
			if l.err != nil {
				c.t.Fatalf("reading reply: %v (so far %q)", l.err, b.String())
			}
			b.WriteString(l.s)
			if len(l.s) < 4 || l.s[3] != '-' {
				return b.String()
			}
		case <-time.After(sessionTimeout):
			c.t.Fatalf("no reply within %v (so far %q)", sessionTimeout, b.String())
		}
	}
}

// send writes raw client bytes.
func (c *client) send(s string) {
	c.t.Helper()
	if _, err := io.WriteString(c.in, s); err != nil {
		c.t.Fatalf("write %q: %v", s, err)
	}
}

// cmd sends s and returns the reply, failing unless it matches the
// regular expression want.
func (c *client) cmd(s, want string) string {
	c.t.Helper()
	c.send(s)
	r := c.reply()
	if !regexp.MustCompile(`^(?:` + want + `)$`).MatchString(r) {
		c.t.Fatalf("after %q: reply %q, want /%s/", s, r, want)
	}
	return r
}

// wait closes standard input and returns what Serve returned.
func (c *client) wait() result {
	c.t.Helper()
	c.in.Close()
	select {
	case r := <-c.done:
		return r
	case <-time.After(sessionTimeout):
		c.t.Fatalf("Serve did not return within %v", sessionTimeout)
		return result{}
	}
}

func timeAfter() <-chan time.Time { return time.After(sessionTimeout) }
