// Package clients_test proves Postie against the real programs that call
// sendmail: PHP's mail(), PHPMailer, Symfony Mailer, s-nail, bsd-mailx,
// mutt and git send-email, run from their Debian packages, and the exact
// command lines and message shapes of system programs (cron, cronie,
// anacron, sudo, fail2ban, logwatch, unattended-upgrades, mdadm), fed
// directly. Each test builds nothing itself: TestMain builds sendmail and
// mailq once, and every test gets its own loopback smarthost (testsink,
// STARTTLS + AUTH) and its own spool, so tests run in parallel.
//
// A test whose client is not installed is skipped; CI installs them from
// .ci/packages.
package clients_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/mail"
	"net/textproto"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/postie-mail/postie/internal/testsink"
)

// bins are Postie's programs, built once by TestMain.
var bins struct {
	sendmail string
	mailq    string
}

// caller is who runs the tests, as Postie will see it (real uid).
var caller struct {
	uid  int
	name string
}

// hostname is the config's hostname: the domain bare names get.
const hostname = "web1.example.com"

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	dir, err := os.MkdirTemp("", "postie-clients-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	// Clients such as sudo or cron may run the mailer as another user;
	// keep the binaries reachable.
	if err := os.Chmod(dir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = "/usr/local/go/bin/go"
	}
	// One go build for both: -o names a directory when it ends in a
	// separator and several main packages are built.
	cmd := exec.Command(goTool, "build", "-buildvcs=false", "-o", dir+string(filepath.Separator), "./cmd/sendmail", "./cmd/mailq")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build Postie: %v\n%s", err, out)
		return 1
	}
	bins.sendmail = filepath.Join(dir, "sendmail")
	bins.mailq = filepath.Join(dir, "mailq")

	caller.uid = os.Getuid()
	caller.name = "uid" + strconv.Itoa(caller.uid)
	if u, err := user.LookupId(strconv.Itoa(caller.uid)); err == nil {
		caller.name = u.Username
	}
	return m.Run()
}

// callerAddr is the envelope sender Postie uses when none is given: the
// caller's login name, qualified.
func callerAddr() string { return caller.name + "@" + hostname }

// need skips the test unless every path exists.
func need(t *testing.T, pkg string, paths ...string) {
	t.Helper()
	for _, p := range paths {
		if _, err := os.Stat(p); err != nil {
			t.Skipf("%s is not installed (Debian package %s; CI installs it from .ci/packages)", p, pkg)
		}
	}
}

// rig is one test's world: a smarthost, a spool and a config.
type rig struct {
	t      *testing.T
	sink   *testsink.Sink
	dir    string
	spool  string
	config string
	home   string
}

func newRig(t *testing.T) *rig {
	t.Helper()
	sink, err := testsink.Start(testsink.Options{Users: map[string]string{"u": "p"}, RequireAuth: true})
	if err != nil {
		t.Fatalf("start the sink: %v", err)
	}
	t.Cleanup(func() { sink.Close() })
	dir := t.TempDir()
	r := &rig{
		t:      t,
		sink:   sink,
		dir:    dir,
		spool:  filepath.Join(dir, "spool"),
		config: filepath.Join(dir, "postie.toml"),
		home:   filepath.Join(dir, "home"),
	}
	if err := os.Mkdir(r.home, 0o700); err != nil {
		t.Fatal(err)
	}
	pw := filepath.Join(dir, "password")
	if err := os.WriteFile(pw, []byte("p\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`hostname = %q
spool_dir = %q

[smarthost]
address = %q
tls = "starttls"
username = "u"
password_file = %q
ca_file = %q

[queue]
deliver = "queue"

[log]
target = "stderr"

[aliases]
root = "admin@example.com"
`, hostname, r.spool, sink.Addr, pw, sink.CAFile)
	if err := os.WriteFile(r.config, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return r
}

// env is the environment of every process a test starts: Postie finds its
// config through POSTIE_CONFIG, and clients find no personal config of the
// user running the tests.
func (r *rig) env(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "POSTIE_CONFIG", "HOME", "MAILRC", "MAIL", "LC_ALL", "LANG", "EMAIL", "REPLYTO",
			"GIT_CONFIG_GLOBAL", "GIT_CONFIG_SYSTEM", "GIT_DIR", "GIT_WORK_TREE":
			continue
		}
		env = append(env, kv)
	}
	env = append(env, "POSTIE_CONFIG="+r.config, "HOME="+r.home, "LANG=C.UTF-8", "GIT_CONFIG_NOSYSTEM=1")
	return append(env, extra...)
}

type result struct {
	code           int
	stdout, stderr string
}

func (res result) String() string {
	return fmt.Sprintf("exit %d, stdout %q, stderr %q", res.code, res.stdout, res.stderr)
}

// run runs a program to completion with stdin (nil: empty) and the rig's
// environment plus extra.
func (r *rig) run(stdin []byte, extra []string, name string, args ...string) result {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = r.env(extra...)
	cmd.Dir = r.dir
	cmd.Stdin = bytes.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	res := result{stdout: stdout.String(), stderr: stderr.String()}
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			r.t.Fatalf("run %s %q: %v", name, args, err)
		}
		res.code = ee.ExitCode()
	}
	if ctx.Err() != nil {
		r.t.Fatalf("run %s %q: timed out (%v)", name, args, res)
	}
	return res
}

// sendmail runs Postie's sendmail directly, as a system program would.
func (r *rig) sendmail(stdin []byte, args ...string) result {
	r.t.Helper()
	return r.run(stdin, nil, bins.sendmail, args...)
}

// mustRun runs a client and fails unless it exits 0. With quiet, its stderr
// must be empty too.
func (r *rig) mustRun(quiet bool, stdin []byte, extra []string, name string, args ...string) result {
	r.t.Helper()
	res := r.run(stdin, extra, name, args...)
	if res.code != 0 {
		r.t.Fatalf("%s %q: %v", filepath.Base(name), args, res)
	}
	if quiet && res.stderr != "" {
		r.t.Errorf("%s %q: printed on stderr: %q", filepath.Base(name), args, res.stderr)
	}
	return res
}

// queued is one element of mailq --json.
type queued struct {
	ID         string   `json:"id"`
	Size       int64    `json:"size"`
	Arrival    string   `json:"arrival"`
	Sender     string   `json:"sender"`
	Recipients []string `json:"recipients"`
	State      string   `json:"state"`
	MessageID  string   `json:"message_id"`
}

// envelope is a sender and its recipients, in order.
type envelope struct {
	From string
	To   []string
}

func (e envelope) String() string { return "<" + e.From + "> -> " + strings.Join(e.To, ", ") }

// queue returns mailq --json.
func (r *rig) queue() []queued {
	r.t.Helper()
	res := r.run(nil, nil, bins.mailq, "--json")
	if res.code != 0 || res.stderr != "" {
		r.t.Fatalf("mailq --json: %v", res)
	}
	var q []queued
	if err := json.Unmarshal([]byte(res.stdout), &q); err != nil {
		r.t.Fatalf("mailq --json: %v in %q", err, res.stdout)
	}
	return q
}

// expectQueued checks mailq --json against want, in any order (the queue
// is listed by ID), and returns the entries.
func (r *rig) expectQueued(want ...envelope) []queued {
	r.t.Helper()
	q := r.queue()
	var got, exp []string
	for _, e := range q {
		if e.State != "queued" {
			r.t.Errorf("mailq --json: %s is %q, want queued", e.ID, e.State)
		}
		if _, err := time.Parse(time.RFC3339, e.Arrival); err != nil || e.Size <= 0 {
			r.t.Errorf("mailq --json: %s has arrival %q (%v) and size %d", e.ID, e.Arrival, err, e.Size)
		}
		got = append(got, envelope{e.Sender, e.Recipients}.String())
	}
	for _, e := range want {
		exp = append(exp, e.String())
	}
	slices.Sort(got)
	slices.Sort(exp)
	if !slices.Equal(got, exp) {
		r.t.Fatalf("mailq --json envelopes:\n got %q\nwant %q", got, exp)
	}
	return q
}

// flush runs mailq -q, which must deliver everything, and returns the
// messages the sink accepted (all of them so far).
func (r *rig) flush() []*testsink.Message {
	r.t.Helper()
	res := r.run(nil, nil, bins.mailq, "-q")
	if res.code != 0 {
		r.t.Fatalf("mailq -q: %v", res)
	}
	if q := r.queue(); len(q) != 0 {
		r.t.Fatalf("queue after mailq -q: %+v", q)
	}
	return r.sink.Messages()
}

// deliver flushes and returns the delivered messages, which must be n.
func (r *rig) deliver(n int) []*msg {
	r.t.Helper()
	got := r.flush()
	if len(got) != n {
		r.t.Fatalf("sink got %d messages, want %d", len(got), n)
	}
	out := make([]*msg, len(got))
	for i, m := range got {
		out[i] = parseMsg(r.t, m)
	}
	return out
}

// spoolFiles lists spool/sub (none when it does not exist).
func (r *rig) spoolFiles(sub string) []string {
	r.t.Helper()
	ents, err := os.ReadDir(filepath.Join(r.spool, sub))
	if err != nil {
		if os.IsNotExist(err) {
			return nil
		}
		r.t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// expectSpoolEmpty checks that nothing is queued or being written.
func (r *rig) expectSpoolEmpty() {
	r.t.Helper()
	for _, sub := range []string{"tmp", "incoming", "queue"} {
		if f := r.spoolFiles(sub); len(f) != 0 {
			r.t.Errorf("spool %s/ holds %q, want nothing", sub, f)
		}
	}
	if q := r.queue(); len(q) != 0 {
		r.t.Errorf("mailq --json lists %+v, want nothing", q)
	}
}

// msg is a message as the smarthost received it.
type msg struct {
	*testsink.Message
	Header mail.Header
	Body   []byte // after the blank line, as received (CRLF)
}

func parseMsg(t *testing.T, m *testsink.Message) *msg {
	t.Helper()
	mm, err := mail.ReadMessage(bytes.NewReader(m.Data))
	if err != nil {
		t.Fatalf("received message does not parse: %v\n%s", err, m.Data)
	}
	i := bytes.Index(m.Data, []byte("\r\n\r\n"))
	if i < 0 {
		t.Fatalf("received message has no CRLF CRLF between header and body:\n%q", m.Data)
	}
	return &msg{Message: m, Header: mm.Header, Body: m.Data[i+4:]}
}

func (m *msg) envelope() envelope { return envelope{m.From, m.To} }

// checkEnvelope checks the envelope the smarthost saw.
func checkEnvelope(t *testing.T, m *msg, want envelope) {
	t.Helper()
	if m.From != want.From || !slices.Equal(m.To, want.To) {
		t.Errorf("smarthost envelope %v, want %v", m.envelope(), want)
	}
}

// checkStandard checks what every delivered message must have: SMTP
// conformance of the bytes, From, Date, Message-ID, no Bcc, Postie's
// trace field naming the caller, and delivery over TLS with AUTH.
func checkStandard(t *testing.T, m *msg) {
	t.Helper()
	checkConformant(t, m.Data)
	for _, k := range []string{"From", "Date", "Message-Id"} {
		if len(m.Header[k]) != 1 {
			t.Errorf("header %s: %q, want exactly one", k, m.Header[k])
		}
	}
	if _, err := m.Header.Date(); err != nil {
		t.Errorf("Date %q: %v", m.Header.Get("Date"), err)
	}
	if _, err := m.Header.AddressList("From"); err != nil {
		t.Errorf("From %q does not parse: %v", m.Header.Get("From"), err)
	}
	for _, k := range []string{"Bcc", "Resent-Bcc"} {
		if v, ok := m.Header[k]; ok {
			t.Errorf("header %s was delivered: %q", k, v)
		}
	}
	want := fmt.Sprintf("by %s (Postie, from userid %d %s)", hostname, caller.uid, caller.name)
	n := 0
	for _, v := range m.Header["Received"] {
		if strings.HasPrefix(v, "by "+hostname+" (Postie") {
			n++
			if !strings.HasPrefix(v, want) {
				t.Errorf("Received %q, want it to start with %q", v, want)
			}
		}
	}
	if n != 1 {
		t.Errorf("Postie Received fields: %d in %q, want 1", n, m.Header["Received"])
	}
	if !m.TLS || m.User != "u" {
		t.Errorf("delivered with TLS=%v as user %q, want TLS as u", m.TLS, m.User)
	}
}

// checkConformant checks the bytes on the wire: every line ends with CRLF,
// no bare CR, no NUL (see the package doc of internal/conform).
func checkConformant(t *testing.T, data []byte) {
	t.Helper()
	for i, c := range data {
		switch {
		case c == 0:
			t.Errorf("NUL at offset %d of the delivered message", i)
			return
		case c == '\n' && (i == 0 || data[i-1] != '\r'):
			t.Errorf("bare LF at offset %d of the delivered message: %q", i, around(data, i))
			return
		case c == '\r' && (i+1 >= len(data) || data[i+1] != '\n'):
			t.Errorf("bare CR at offset %d of the delivered message: %q", i, around(data, i))
			return
		}
	}
	if len(data) > 0 && !bytes.HasSuffix(data, []byte("\r\n")) {
		t.Errorf("delivered message does not end with CRLF")
	}
}

func around(b []byte, i int) []byte {
	return b[max(0, i-20):min(len(b), i+20)]
}

// checkHeader checks that field k has exactly the values want.
func checkHeader(t *testing.T, m *msg, k string, want ...string) {
	t.Helper()
	if got := m.Header[textprotoKey(k)]; !slices.Equal(got, want) {
		t.Errorf("header %s: %q, want %q", k, got, want)
	}
}

// checkAddrs checks that field k holds exactly the addresses want.
func checkAddrs(t *testing.T, m *msg, k string, want ...string) {
	t.Helper()
	l, err := m.Header.AddressList(k)
	if err != nil {
		t.Errorf("header %s %q: %v", k, m.Header[textprotoKey(k)], err)
		return
	}
	var got []string
	for _, a := range l {
		got = append(got, a.Address)
	}
	if !slices.Equal(got, want) {
		t.Errorf("header %s addresses %q (from %q), want %q", k, got, m.Header[textprotoKey(k)], want)
	}
}

// checkBody compares the body with want, which is given with LF line
// endings (the delivered body has CRLF).
func checkBody(t *testing.T, m *msg, want string) {
	t.Helper()
	w := crlf(want)
	if !bytes.Equal(m.Body, []byte(w)) {
		t.Errorf("body:\n got %q\nwant %q", m.Body, w)
	}
}

// crlf turns LF line endings into CRLF (CRLF stays).
func crlf(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "\r\n", "\n"), "\n", "\r\n")
}

// textprotoKey is the key net/mail files field k under.
func textprotoKey(k string) string { return textproto.CanonicalMIMEHeaderKey(k) }

// checkPostieMessageID checks a Message-ID that Postie added: its queue
// ID at the hostname, as mailq reported it.
func checkPostieMessageID(t *testing.T, m *msg, q queued) {
	t.Helper()
	want := "<" + q.ID + "@" + hostname + ">"
	if got := m.Header.Get("Message-Id"); got != want || q.MessageID != want {
		t.Errorf("Message-ID %q, mailq message_id %q, want %q", got, q.MessageID, want)
	}
}
