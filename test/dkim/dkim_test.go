package dkim_test

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestRecords checks that mailq --dkim-txt publishes one record per
// configured key; TestMain has parsed them into the verifiers' keys file.
func TestRecords(t *testing.T) {
	if world.skip != "" {
		t.Skip(world.skip)
	}
	want := []string{"rsa._domainkey.example.com", "ed._domainkey.example.com", "k1._domainkey.other.example"}
	if !slices.Equal(world.records, want) {
		t.Errorf("mailq --dkim-txt records %q, want %q", world.records, want)
	}
}

// TestDelivered submits every shape with sendmail, delivers them all with
// one mailq -q, and checks each message the smarthost received: its
// content, the signatures it carries, and what dkimpy and Mail::DKIM say
// of them. Then it changes copies of the delivered plain message: a field
// added that over-signing must catch, the body, and an unsigned field
// that must not matter.
func TestDelivered(t *testing.T) {
	if world.skip != "" {
		t.Skip(world.skip)
	}
	long := os.Getenv("POSTIE_LONG") == "1"
	var todo []shape
	for _, s := range shapes {
		if s.long && !long {
			t.Logf("%s: only with POSTIE_LONG=1", s.name)
			continue
		}
		todo = append(todo, s)
	}

	start := time.Now()
	rcpt := make(map[string]shape) // envelope recipient -> shape
	for i, s := range todo {
		to := fmt.Sprintf("shape%02d@example.net", i)
		rcpt[to] = s
		submit(t, s, to)
	}
	t.Logf("sendmail: %d messages queued in %v", len(todo), time.Since(start).Round(time.Millisecond))

	start = time.Now()
	res, err := run(nil, world.mailq, "-q")
	tcheck(t, err, "mailq -q")
	if res.code != 0 {
		t.Fatalf("mailq -q: %v", res)
	}
	t.Logf("mailq -q: %v: %s", time.Since(start).Round(time.Millisecond), strings.TrimSpace(lastLine(res.stderr)))

	dir := t.TempDir()
	got := collect(t, dir)
	if len(got) != len(todo) {
		t.Fatalf("the smarthost received %d messages, want %d", len(got), len(todo))
	}
	paths := make([]string, 0, len(got)+len(tampers))
	byShape := make(map[string]string) // shape name -> path
	for to, r := range got {
		s, ok := rcpt[to]
		if !ok {
			t.Fatalf("a message to %s, which no shape sent", to)
		}
		byShape[s.name] = r.path
		paths = append(paths, r.path)
	}
	slices.Sort(paths)

	// Changed copies of the plain message.
	plain, err := os.ReadFile(byShape[shapes[0].name])
	tcheck(t, err, "reading the plain message")
	tampered := make(map[string]string) // tamper name -> path
	for i, tm := range tampers {
		p := filepath.Join(dir, fmt.Sprintf("tampered-%d.eml", i))
		changed := tm.change(plain)
		if bytes.Equal(changed, plain) {
			t.Fatalf("tamper %q changed nothing", tm.name)
		}
		tcheck(t, os.WriteFile(p, changed, 0o644), "writing "+p)
		tampered[tm.name] = p
		paths = append(paths, p)
	}

	// Both verifiers read every file in one run each (interpreter start-up
	// dominates for small messages), side by side.
	var wg sync.WaitGroup
	var dkimpy, maildkim verifierRun
	wg.Go(func() { dkimpy = runVerifier(findPython, dkimpyScript, paths) })
	wg.Go(func() { maildkim = runVerifier(findMailDKIM, maildkimScript, paths) })
	wg.Wait()
	t.Logf("dkimpy: %v; Mail::DKIM: %v", dkimpy.took.Round(time.Millisecond), maildkim.took.Round(time.Millisecond))

	var table []string
	for _, s := range todo {
		path := byShape[s.name]
		t.Run(s.name, func(t *testing.T) {
			t.Run("sent", func(t *testing.T) {
				if got := signatures(t, path); !slices.Equal(got, s.sigs) {
					t.Errorf("DKIM-Signature fields s=/d= %q, want %q", got, s.sigs)
				}
				if s.check != nil {
					s.check(t, path)
				}
			})
			t.Run("dkimpy", func(t *testing.T) {
				dkimpy.check(t, path, s.sigs, "pass", func(string) bool { return true })
			})
			t.Run("Mail::DKIM", func(t *testing.T) {
				// Mail::DKIM in Debian 12 cannot verify Ed25519: count those
				// signatures, do not judge them.
				maildkim.check(t, path, s.sigs, "pass", func(sig string) bool { return !strings.HasPrefix(sig, "ed/") })
			})
		})
		table = append(table, fmt.Sprintf("%-56s %-32s dkimpy: %-18s Mail::DKIM: %s",
			s.name, strings.Join(s.sigs, ","), dkimpy.summary(path), maildkim.summary(path)))
	}
	t.Run("tampered", func(t *testing.T) {
		for _, tm := range tampers {
			path := tampered[tm.name]
			want := "fail"
			if !tm.wantFail {
				want = "pass"
			}
			t.Run(tm.name, func(t *testing.T) {
				t.Run("dkimpy", func(t *testing.T) {
					dkimpy.check(t, path, exampleCom, want, func(string) bool { return true })
				})
				t.Run("Mail::DKIM", func(t *testing.T) {
					maildkim.check(t, path, exampleCom, want, func(sig string) bool { return !strings.HasPrefix(sig, "ed/") })
				})
			})
			table = append(table, fmt.Sprintf("%-56s %-32s dkimpy: %-18s Mail::DKIM: %s",
				"plain + "+tm.name, "want "+want, dkimpy.summary(path), maildkim.summary(path)))
		}
	})
	t.Logf("results (Mail::DKIM's Ed25519 results are not judged):\n%s", strings.Join(table, "\n"))
}

// tampers are changes made to the delivered plain message, and whether
// every signature must then fail. The fields are added above the
// signatures, where a verifier does not look for a signed field that was
// not over-signed (h= naming it once more than it occurs).
var tampers = []struct {
	name     string
	change   func([]byte) []byte
	wantFail bool
}{
	{"over-signing: second Subject", prepend("Subject: injected\r\n"), true},
	{"over-signing: Cc where there was none", prepend("Cc: mallory@example.org\r\n"), true},
	{"body changed", func(m []byte) []byte { return bytes.Replace(m, []byte("Hello Bob."), []byte("Hello Rob."), 1) }, true},
	{"Received added (not signed)", prepend("Received: from relay.example.net by mx.example.org; Mon, 2 Nov 2026 10:00:00 +0000\r\n"), false},
}

func prepend(field string) func([]byte) []byte {
	return func(m []byte) []byte { return append([]byte(field), m...) }
}

// submit queues a shape with sendmail, which must exit 0 and say nothing.
func submit(t *testing.T, s shape, to string) {
	t.Helper()
	args := s.args
	if args == nil {
		args = []string{"-t", "-i"}
	}
	if !slices.Contains(args, "-t") {
		args = append(slices.Clone(args), to)
	}
	var stdin io.Reader
	var genErr chan error
	if s.gen != nil {
		pr, pw := io.Pipe()
		genErr = make(chan error, 1)
		go func() {
			err := s.gen(pw, to)
			pw.CloseWithError(err)
			genErr <- err
		}()
		stdin = pr
		defer pr.Close()
	} else {
		stdin = strings.NewReader(s.msg(to))
	}
	res, err := run(stdin, world.sendmail, args...)
	tcheck(t, err, "sendmail")
	if res.code != 0 || res.stderr != "" {
		t.Fatalf("%s: sendmail %q: %v", s.name, args, res)
	}
	if genErr != nil {
		tcheck(t, <-genErr, s.name+": generating the message")
	}
}

func lastLine(s string) string {
	s = strings.TrimRight(s, "\n")
	return s[strings.LastIndexByte(s, '\n')+1:]
}

var sigTagRE = regexp.MustCompile(`(?:^|;)\s*([a-z]+)\s*=\s*([^;]*)`)

// signatures returns the selector/domain of each DKIM-Signature field of
// a sent message, in order, read from the header section by hand.
func signatures(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	tcheck(t, err, "opening what was sent")
	defer f.Close()
	head := make([]byte, 1<<20)
	n, err := io.ReadFull(f, head)
	if err != io.ErrUnexpectedEOF {
		tcheck(t, err, "reading what was sent")
	}
	header, _, ok := bytes.Cut(head[:n], []byte("\r\n\r\n"))
	if !ok {
		t.Fatalf("no end of the header section in the first %d octets", n)
	}
	var sigs []string
	for _, field := range unfold(string(header) + "\r\n") {
		name, value, _ := strings.Cut(field, ":")
		if !strings.EqualFold(strings.TrimSpace(name), "DKIM-Signature") {
			continue
		}
		tags := make(map[string]string)
		for _, m := range sigTagRE.FindAllStringSubmatch(strings.Join(strings.Fields(value), ""), -1) {
			tags[m[1]] = m[2]
		}
		sigs = append(sigs, tags["s"]+"/"+tags["d"])
	}
	return sigs
}

// unfold splits a header section into fields, each with its
// continuation lines.
func unfold(header string) []string {
	var fields []string
	for _, l := range strings.SplitAfter(header, "\r\n") {
		if l == "" {
			continue
		}
		if (l[0] == ' ' || l[0] == '\t') && len(fields) > 0 {
			fields[len(fields)-1] += l
			continue
		}
		fields = append(fields, l)
	}
	return fields
}

// verifierRun is one run of a verifier script over many messages.
type verifierRun struct {
	skip string // why it did not run (not installed)
	err  error
	took time.Duration
	res  map[string][]verifierResult // by path; nil slice: no signature
}

type verifierResult struct {
	sig            string // selector/domain
	result, detail string
}

// runVerifier runs a verifier script over paths with the keys of
// mailq --dkim-txt and parses its "path, index, s=, d=, result, detail"
// lines.
func runVerifier(find func() (string, string), script string, paths []string) verifierRun {
	interp, skip := find()
	if skip != "" {
		return verifierRun{skip: skip}
	}
	start := time.Now()
	cmd := exec.Command(interp, append([]string{script, world.keysFile}, paths...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	vr := verifierRun{took: time.Since(start), res: make(map[string][]verifierResult)}
	if err != nil {
		vr.err = fmt.Errorf("%s %s: %v\n%s", interp, script, err, stderr.String())
		return vr
	}
	for _, line := range strings.Split(strings.TrimSuffix(string(out), "\n"), "\n") {
		f := strings.SplitN(line, "\t", 6)
		if len(f) != 6 {
			vr.err = fmt.Errorf("%s: unexpected output line %q", script, line)
			return vr
		}
		if f[4] == "none" {
			vr.res[f[0]] = nil
			continue
		}
		vr.res[f[0]] = append(vr.res[f[0]], verifierResult{sig: f[2] + "/" + f[3], result: f[4], detail: f[5]})
	}
	return vr
}

// check checks the verifier's results for path: one per signature in
// want (none if want is empty), in any order, and for each judged one the
// result wantResult.
func (vr *verifierRun) check(t *testing.T, path string, want []string, wantResult string, judged func(sig string) bool) {
	t.Helper()
	if vr.skip != "" {
		t.Skip(vr.skip)
	}
	tcheck(t, vr.err, "running the verifier")
	rs, ok := vr.res[path]
	if !ok {
		t.Fatalf("no result for %s", path)
	}
	var sigs []string
	for _, r := range rs {
		sigs = append(sigs, r.sig)
	}
	if !slices.Equal(sorted(sigs), sorted(want)) {
		t.Fatalf("signatures %q, want %q", sigs, want)
	}
	for _, r := range rs {
		if !judged(r.sig) {
			continue
		}
		if r.result != wantResult {
			t.Errorf("%s: %s (%s), want %s", r.sig, r.result, r.detail, wantResult)
		}
	}
}

// summary is a short form of the results for path, for the log.
func (vr *verifierRun) summary(path string) string {
	switch {
	case vr.skip != "":
		return "skipped"
	case vr.err != nil:
		return "error"
	}
	rs, ok := vr.res[path]
	if !ok {
		return "missing"
	}
	if len(rs) == 0 {
		return "none"
	}
	var parts []string
	for _, r := range rs {
		sel, _, _ := strings.Cut(r.sig, "/")
		parts = append(parts, sel+"="+r.result)
	}
	return strings.Join(parts, ",")
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

// findPython returns Debian's python3 if it can import dkimpy with its
// Ed25519 support (PyNaCl); the python3 first on PATH may be another one.
func findPython() (string, string) {
	cands := []string{"/usr/bin/python3"}
	if p, err := exec.LookPath("python3"); err == nil && p != cands[0] {
		cands = append(cands, p)
	}
	for _, p := range cands {
		if exec.Command(p, "-c", "import dkim, nacl.signing").Run() == nil {
			return p, ""
		}
	}
	return "", "dkimpy not found: no python3 can import dkim and nacl (Debian: apt-get install python3-dkim)"
}

func findMailDKIM() (string, string) {
	p, err := exec.LookPath("perl")
	if err == nil && exec.Command(p, "-MMail::DKIM::Verifier", "-e", "1").Run() == nil {
		return p, ""
	}
	return "", "Perl Mail::DKIM not found (Debian: apt-get install libmail-dkim-perl)"
}
