package torture

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/postie-mail/postie/internal/spool"
	"github.com/postie-mail/postie/internal/testsink"
)

// long selects the long versions (POSTIE_LONG=1).
var long = os.Getenv("POSTIE_LONG") == "1"

// The programs under test, built once by TestMain.
var sendmailBin, mailqBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "postie-torture-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, "torture:", err)
		os.Exit(1)
	}
	sendmailBin = filepath.Join(dir, "sendmail")
	mailqBin = filepath.Join(dir, "mailq")
	for bin, pkg := range map[string]string{sendmailBin: "./cmd/sendmail", mailqBin: "./cmd/mailq"} {
		cmd := exec.Command("go", "build", "-o", bin, pkg)
		cmd.Dir = "../.."
		if out, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "torture: go build %s: %v\n%s", pkg, err, out)
			os.RemoveAll(dir)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func tcheck(t testing.TB, err error, what string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// A letter is a test message whose body can be checked wherever it turns
// up: its header carries a unique token and the length and SHA-256 of the
// body as it must arrive (CRLF line ends), so a truncated, mixed or
// doubled body is caught.
type letter struct {
	Token string
	To    []string
	Data  []byte // what the submitter writes (LF line ends)
	Sum   string // "LEN HEX" of the body as delivered
}

const bodyAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

// newLetter makes a message of about size bytes from sender to the
// recipients, with Message-ID <token@torture.test>.
func newLetter(rng *rand.Rand, token, sender string, to []string, size int) *letter {
	var body, crlf bytes.Buffer
	line := make([]byte, 76)
	for body.Len() < size {
		for i := range line {
			line[i] = bodyAlphabet[rng.IntN(len(bodyAlphabet))]
		}
		body.Write(line)
		body.WriteByte('\n')
		crlf.Write(line)
		crlf.WriteString("\r\n")
	}
	sum := sha256.Sum256(crlf.Bytes())
	l := &letter{Token: token, To: to, Sum: fmt.Sprintf("%d %s", crlf.Len(), hex.EncodeToString(sum[:]))}
	var b bytes.Buffer
	fmt.Fprintf(&b, "From: Torture <%s>\nTo: %s\nSubject: torture %s\nMessage-ID: <%s@torture.test>\nX-Torture-Token: %s\nX-Torture-Body: %s\n\n",
		sender, strings.Join(to, ", "), token, token, token, l.Sum)
	b.Write(body.Bytes())
	l.Data = b.Bytes()
	return l
}

// randSize returns a size between lo and hi, uniform in its logarithm, so
// that small and large messages are both common.
func randSize(rng *rand.Rand, lo, hi int) int {
	f := rng.Float64()
	return int(float64(lo) * math.Pow(float64(hi)/float64(lo), f))
}

var (
	tokenRE = regexp.MustCompile(`(?m)^X-Torture-Token: (\S+)\r?$`)
	sumRE   = regexp.MustCompile(`(?m)^X-Torture-Body: (\d+ [0-9a-f]{64})\r?$`)
)

// inspect reads a delivered (or spooled) message: its token, and whether
// its body is exactly the one its header describes. why says what is
// wrong when ok is false.
func inspect(data []byte) (token, sum string, ok bool, why string) {
	i := bytes.Index(data, []byte("\r\n\r\n"))
	if i < 0 {
		return "", "", false, "no end of header"
	}
	hdr, body := data[:i+2], data[i+4:]
	m := tokenRE.FindSubmatch(hdr)
	if m == nil {
		return "", "", false, "no X-Torture-Token"
	}
	token = string(m[1])
	s := sumRE.FindSubmatch(hdr)
	if s == nil {
		return token, "", false, "no X-Torture-Body"
	}
	sum = string(s[1])
	got := sha256.Sum256(body)
	if have := fmt.Sprintf("%d %s", len(body), hex.EncodeToString(got[:])); have != sum {
		return token, sum, false, fmt.Sprintf("body is %s, header says %s", have, sum)
	}
	return token, sum, true, ""
}

// delivery is one message the sink accepted.
type delivery struct {
	At    time.Time
	From  string
	To    []string
	Token string
	Sum   string
	OK    bool
	Why   string
}

// A dsnInfo is what a bounce says: which queue ID and token it reports
// on, and its Final-Recipient addresses.
type dsnInfo struct {
	MessageID  string
	QueueID    string
	Token      string
	Recipients []string
	Statuses   []string
	To         []string // envelope recipients, when delivered
}

var (
	finalRcptRE = regexp.MustCompile(`(?m)^Final-Recipient: rfc822; ?(\S+)\r?$`)
	statusRE    = regexp.MustCompile(`(?m)^Status: (\d\.\d+\.\d+)\r?$`)
	queueIDRE   = regexp.MustCompile(`(?m)^X-Postie-Queue-ID: (\S+)\r?$`)
	msgIDRE     = regexp.MustCompile(`(?mi)^Message-ID: (\S+)\r?$`)
)

func parseDSN(data []byte) dsnInfo {
	var d dsnInfo
	if m := msgIDRE.FindSubmatch(data); m != nil {
		d.MessageID = string(m[1])
	}
	if m := queueIDRE.FindSubmatch(data); m != nil {
		d.QueueID = string(m[1])
	}
	if m := tokenRE.FindSubmatch(data); m != nil {
		d.Token = string(m[1])
	}
	for _, m := range finalRcptRE.FindAllSubmatch(data, -1) {
		d.Recipients = append(d.Recipients, string(m[1]))
	}
	for _, m := range statusRE.FindAllSubmatch(data, -1) {
		d.Statuses = append(d.Statuses, string(m[1]))
	}
	return d
}

// recorder keeps what the sink accepted, by token, and the bounces.
type recorder struct {
	mu      sync.Mutex
	byToken map[string][]delivery
	dsns    []dsnInfo
	other   []delivery // no token and not a bounce
	count   int
}

func newRecorder() *recorder { return &recorder{byToken: map[string][]delivery{}} }

func (r *recorder) add(m *testsink.Message) {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.count++
	if m.From == "" {
		d := parseDSN(m.Data)
		d.To = append([]string(nil), m.To...)
		r.dsns = append(r.dsns, d)
		return
	}
	token, sum, ok, why := inspect(m.Data)
	d := delivery{At: now, From: m.From, To: append([]string(nil), m.To...), Token: token, Sum: sum, OK: ok, Why: why}
	if token == "" {
		r.other = append(r.other, d)
		return
	}
	r.byToken[token] = append(r.byToken[token], d)
}

func (r *recorder) deliveries(token string) []delivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]delivery(nil), r.byToken[token]...)
}

// binEnv is a sink and a config file for tests that drive the built
// programs.
type binEnv struct {
	dir      string
	cfgPath  string
	spoolDir string
	sink     *testsink.Sink
	rec      *recorder
}

// newBinEnv starts a sink (STARTTLS, no AUTH) whose every accepted message
// is recorded, and writes a config with deliver = "queue" and short
// timeouts. spoolDir "" puts the spool in the test's directory.
func newBinEnv(t *testing.T, spoolDir string, connections int) *binEnv {
	t.Helper()
	sink, err := testsink.Start(testsink.Options{})
	tcheck(t, err, "start sink")
	t.Cleanup(func() { sink.Close() })
	dir := t.TempDir()
	if spoolDir == "" {
		spoolDir = filepath.Join(dir, "spool")
	}
	e := &binEnv{dir: dir, cfgPath: filepath.Join(dir, "postie.toml"), spoolDir: spoolDir, sink: sink, rec: newRecorder()}
	text := fmt.Sprintf(`hostname = "torture.example"
spool_dir = %q
[smarthost]
address = %q
tls = "starttls"
ca_file = %q
connect_timeout = "10s"
command_timeout = "10s"
data_timeout = "10s"
[queue]
deliver = "queue"
connections = %d
[log]
target = "stderr"
`, spoolDir, sink.Addr, sink.CAFile, connections)
	tcheck(t, os.WriteFile(e.cfgPath, []byte(text), 0o644), "write config")
	sink.SetFault(testsink.Fault{Data: func(m *testsink.Message) error {
		e.rec.add(m)
		return nil
	}})
	return e
}

// run runs a built program with the env's config and returns its exit
// code (-1 when killed by a signal), stdout and stderr.
func (e *binEnv) run(t *testing.T, bin string, stdin []byte, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"-C", e.cfgPath}, args...)...)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=" + e.dir}
	cmd.Dir = e.dir
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if cmd.ProcessState == nil {
		t.Fatalf("%s %v: %v", filepath.Base(bin), args, err)
	}
	return exitCode(cmd.ProcessState), out.String(), errb.String()
}

// exitCode is the exit status, or -1 for a process killed by a signal.
func exitCode(ps *os.ProcessState) int {
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return -1
	}
	return ps.ExitCode()
}

// qentry is one element of mailq --json (the fields the tests use).
type qentry struct {
	ID         string   `json:"id"`
	Size       int64    `json:"size"`
	Sender     string   `json:"sender"`
	Recipients []string `json:"recipients"`
	Attempts   int      `json:"attempts"`
	LastError  *string  `json:"last_error"`
	State      string   `json:"state"`
	HeldReason string   `json:"held_reason"`
	MessageID  string   `json:"message_id"`
}

func (e *binEnv) queue(t *testing.T) []qentry {
	t.Helper()
	code, out, errs := e.run(t, mailqBin, nil, "--json")
	if code != 0 {
		t.Fatalf("mailq --json: exit %d: %s", code, errs)
	}
	var q []qentry
	tcheck(t, json.Unmarshal([]byte(out), &q), "mailq --json output")
	return q
}

// tokenOfMessageID returns the token of "<TOKEN@torture.test>".
func tokenOfMessageID(id string) string {
	id = strings.TrimPrefix(id, "<")
	tok, _, _ := strings.Cut(id, "@")
	return tok
}

// spooled reads a message in the spool (queue/ or incoming/ or failed/)
// and checks it like a delivered one.
func spooled(dir, sub, id string) (token, sum string, ok bool, why string, err error) {
	q, err := spool.OpenFile(filepath.Join(dir, sub, id))
	if err != nil {
		return "", "", false, "", err
	}
	defer q.Close()
	var b bytes.Buffer
	if _, err := b.ReadFrom(q.Message()); err != nil {
		return "", "", false, "", err
	}
	token, sum, ok, why = inspect(b.Bytes())
	return token, sum, ok, why, nil
}

// listDir returns the names in dir (none when it does not exist).
func listDir(dir string) []string {
	ents, _ := os.ReadDir(dir)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func itoa(n int) string { return strconv.Itoa(n) }
