// Package dkim_test proves Postie's DKIM signing end to end: messages of
// many shapes go in through the real sendmail binary, out through
// mailq -q (which signs them, in a pass over the spool file through
// internal/conform, and sends them) to a loopback smarthost, and what the
// smarthost received is checked by verifiers that share no code with
// Postie: dkimpy (Debian python3-dkim; RSA and Ed25519) and Perl's
// Mail::DKIM (Debian libmail-dkim-perl; RSA only, since the Debian 12
// version has no Ed25519). They read the public keys from the records
// `mailq --dkim-txt` prints, not from DNS.
//
// OpenDKIM's opendkim-testmsg (Debian opendkim-tools) is not used: it
// verifies only with keys fetched from DNS and has no option to read one
// from a file (its -K keeps temporary files).
//
// TestMain builds sendmail and mailq, makes the keys with openssl, starts
// the smarthost (internal/testsink, STARTTLS + AUTH) and writes the
// config. A verifier that is not installed is skipped; CI installs them
// from .ci/packages. POSTIE_LONG=1 adds a 60 MB message.
package dkim_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/postie-mail/postie/internal/testsink"
)

// hostname is the config's hostname. No key is for its domain, so a
// message whose From Postie adds (user@hostname) goes out unsigned.
const hostname = "web1.example.com"

// world is what TestMain sets up for every test.
var world struct {
	sendmail, mailq string // the built programs
	config          string // POSTIE_CONFIG
	received        string // where the sink writes each message it accepts
	keysFile        string // "name<TAB>TXT value" lines for the verifier scripts
	records         []string
	sink            *testsink.Sink
	// skip, when set, says why the tests cannot run here (no openssl).
	skip string
}

// Verifier scripts shared with internal/dkimsign's tests.
var (
	dkimpyScript   = filepath.Join("..", "..", "internal", "dkimsign", "testdata", "verify_dkimpy.py")
	maildkimScript = filepath.Join("..", "..", "internal", "dkimsign", "testdata", "verify_maildkim.pl")
)

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "postie-dkim-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	if err := setup(dir); err != nil {
		fmt.Fprintf(os.Stderr, "test/dkim: %v\n", err)
		return 1
	}
	if world.sink != nil {
		defer world.sink.Close()
	}
	return m.Run()
}

// setup builds the programs, makes the keys, starts the sink, writes the
// config and gets the DNS records. A missing openssl is not an error: the
// tests skip, saying so.
func setup(dir string) error {
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		world.skip = "openssl not found: it makes the DKIM keys (Debian package openssl)"
		return nil
	}
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		return err
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = "/usr/local/go/bin/go"
	}
	// One go build for both links them side by side.
	cmd := exec.Command(goTool, "build", "-o", dir+string(filepath.Separator), "./cmd/sendmail", "./cmd/mailq")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./cmd/sendmail ./cmd/mailq: %v\n%s", err, out)
	}
	world.sendmail = filepath.Join(dir, "sendmail")
	world.mailq = filepath.Join(dir, "mailq")

	keys, err := makeKeys(openssl, dir)
	if err != nil {
		return err
	}

	world.received = filepath.Join(dir, "received")
	if err := os.Mkdir(world.received, 0o755); err != nil {
		return err
	}
	sink, err := testsink.Start(testsink.Options{
		Users:       map[string]string{"u": "p"},
		RequireAuth: true,
		Dir:         world.received,
	})
	if err != nil {
		return fmt.Errorf("start the sink: %v", err)
	}
	world.sink = sink

	pw := filepath.Join(dir, "password")
	if err := os.WriteFile(pw, []byte("p\n"), 0o600); err != nil {
		return err
	}
	world.config = filepath.Join(dir, "postie.toml")
	cfg := fmt.Sprintf(`hostname = %q
spool_dir = %q

[smarthost]
address = %q
tls = "starttls"
username = "u"
password_file = %q
ca_file = %q

[dkim]
domain = "example.com"
selector = "rsa"
private_key_file = %q

[[dkim.key]]
domain = "example.com"
selector = "ed"
private_key_file = %q

[[dkim.key]]
domain = "other.example"
selector = "k1"
private_key_file = %q

[queue]
deliver = "queue"

[log]
target = "stderr"
`, hostname, filepath.Join(dir, "spool"), sink.Addr, pw, sink.CAFile, keys.rsa, keys.ed, keys.k1)
	if err := os.WriteFile(world.config, []byte(cfg), 0o644); err != nil {
		return err
	}

	res, err := run(nil, world.mailq, "--dkim-txt")
	if err != nil {
		return err
	}
	if res.code != 0 {
		return fmt.Errorf("mailq --dkim-txt: %v", res)
	}
	records, lines, err := parseTXTRecords(res.stdout)
	if err != nil {
		return fmt.Errorf("mailq --dkim-txt: %v in %q", err, res.stdout)
	}
	world.records = records
	world.keysFile = filepath.Join(dir, "keys.txt")
	return os.WriteFile(world.keysFile, []byte(strings.Join(lines, "")), 0o644)
}

// keyFiles are the private keys of the config.
type keyFiles struct {
	rsa string // example.com, s=rsa: RSA 2048, PKCS#1 ("RSA PRIVATE KEY")
	ed  string // example.com, s=ed: Ed25519, PKCS#8
	k1  string // other.example, s=k1: RSA 2048, PKCS#8 ("PRIVATE KEY")
}

// makeKeys writes the keys with openssl, mode 0600, and checks that each
// file is in the PEM form it is meant to test.
func makeKeys(openssl, dir string) (keyFiles, error) {
	k := keyFiles{
		rsa: filepath.Join(dir, "rsa-pkcs1.pem"),
		ed:  filepath.Join(dir, "ed25519.pem"),
		k1:  filepath.Join(dir, "rsa-pkcs8.pem"),
	}
	gen := func(path, pemType string, argvs ...[]string) error {
		var errs []error
		for _, argv := range argvs {
			out, err := exec.Command(openssl, argv...).CombinedOutput()
			if err != nil {
				errs = append(errs, fmt.Errorf("openssl %s: %v: %s", strings.Join(argv, " "), err, bytes.TrimSpace(out)))
				continue
			}
			if err := os.Chmod(path, 0o600); err != nil {
				return err
			}
			data, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			if want := "-----BEGIN " + pemType + "-----\n"; !bytes.HasPrefix(data, []byte(want)) {
				errs = append(errs, fmt.Errorf("openssl %s wrote %q..., want %q", strings.Join(argv, " "), firstLine(data), want))
				continue
			}
			return nil
		}
		return errors.Join(errs...)
	}
	// OpenSSL 3 genrsa writes PKCS#8 unless told -traditional, which
	// OpenSSL 1.1 does not know (it writes PKCS#1 by default).
	if err := gen(k.rsa, "RSA PRIVATE KEY",
		[]string{"genrsa", "-traditional", "-out", k.rsa, "2048"},
		[]string{"genrsa", "-out", k.rsa, "2048"}); err != nil {
		return k, err
	}
	if err := gen(k.ed, "PRIVATE KEY", []string{"genpkey", "-algorithm", "ed25519", "-out", k.ed}); err != nil {
		return k, err
	}
	if err := gen(k.k1, "PRIVATE KEY", []string{"genpkey", "-algorithm", "rsa", "-pkeyopt", "rsa_keygen_bits:2048", "-out", k.k1}); err != nil {
		return k, err
	}
	return k, nil
}

func firstLine(b []byte) string {
	l, _, _ := bytes.Cut(b, []byte("\n"))
	return string(l)
}

var (
	txtRecordRE = regexp.MustCompile(`^(\S+)\.\s+IN\s+TXT\s+(.*)$`)
	quotedRE    = regexp.MustCompile(`"([^"]*)"`)
)

// parseTXTRecords parses the zone-file lines of mailq --dkim-txt,
// `sel._domainkey.dom. IN TXT ( "..." "..." )` or with a single string
// and no parentheses, into the names and the lines of a keys file. Each
// character-string must hold at most 255 octets (RFC 1035 §3.3).
func parseTXTRecords(out string) (names, lines []string, err error) {
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		m := txtRecordRE.FindStringSubmatch(strings.TrimSpace(l))
		if m == nil {
			return nil, nil, fmt.Errorf("line %q is not `name. IN TXT ...`", l)
		}
		rdata := strings.TrimSpace(m[2])
		if strings.HasPrefix(rdata, "(") != strings.HasSuffix(rdata, ")") {
			return nil, nil, fmt.Errorf("unbalanced parentheses in %q", l)
		}
		var value strings.Builder
		strs := quotedRE.FindAllStringSubmatch(rdata, -1)
		if len(strs) == 0 {
			return nil, nil, fmt.Errorf("no quoted string in %q", l)
		}
		for _, s := range strs {
			if len(s[1]) > 255 {
				return nil, nil, fmt.Errorf("a character-string of %d octets (more than 255) in %q", len(s[1]), l)
			}
			value.WriteString(s[1])
		}
		names = append(names, m[1])
		lines = append(lines, m[1]+"\t"+value.String()+"\n")
	}
	return names, lines, nil
}

type result struct {
	code           int
	stdout, stderr string
}

func (r result) String() string {
	return fmt.Sprintf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
}

// run runs one of Postie's programs with the test config and stdin (nil:
// empty), and returns how it ended. An error means it could not be run.
func run(stdin io.Reader, name string, args ...string) (result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "POSTIE_CONFIG=") {
			env = append(env, kv)
		}
	}
	cmd.Env = append(env, "POSTIE_CONFIG="+world.config)
	if stdin == nil {
		stdin = strings.NewReader("")
	}
	cmd.Stdin = stdin
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	res := result{stdout: stdout.String(), stderr: stderr.String()}
	if ctx.Err() != nil {
		return res, fmt.Errorf("%s %q: timed out (%v)", filepath.Base(name), args, res)
	}
	if err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			return res, fmt.Errorf("%s %q: %v", filepath.Base(name), args, err)
		}
		res.code = ee.ExitCode()
	}
	return res, nil
}

func tcheck(t testing.TB, err error, what string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// received is one message as the smarthost got it.
type received struct {
	rcpt string // envelope recipient (X-Sink-To)
	path string // the message alone, as sent in DATA, for the verifiers
}

// collect strips the X-Sink-From and X-Sink-To lines the sink puts above
// every message it writes and stores what remains (what Postie sent) in
// dir, keyed by the envelope recipient.
func collect(t *testing.T, dir string) map[string]received {
	t.Helper()
	ents, err := os.ReadDir(world.received)
	tcheck(t, err, "reading the sink's directory")
	got := make(map[string]received)
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".eml") {
			continue
		}
		src := filepath.Join(world.received, e.Name())
		dst := filepath.Join(dir, e.Name())
		rcpt, err := stripSinkLines(src, dst)
		tcheck(t, err, "stripping "+src)
		if _, dup := got[rcpt]; dup {
			t.Errorf("two messages to %s", rcpt)
		}
		got[rcpt] = received{rcpt: rcpt, path: dst}
		tcheck(t, os.Remove(src), "removing "+src)
	}
	return got
}

// stripSinkLines copies src to dst without its first two lines, which
// must be the sink's X-Sink-From and X-Sink-To, and returns the X-Sink-To
// value. It streams: a message may be 60 MB.
func stripSinkLines(src, dst string) (string, error) {
	in, err := os.Open(src)
	if err != nil {
		return "", err
	}
	defer in.Close()
	br := bufio.NewReaderSize(in, 64<<10)
	var rcpt string
	for i, prefix := range []string{"X-Sink-From: ", "X-Sink-To: "} {
		l, err := br.ReadString('\n')
		if err != nil || !strings.HasPrefix(l, prefix) || !strings.HasSuffix(l, "\r\n") {
			return "", fmt.Errorf("line %d is %q, want %s...CRLF", i+1, l, prefix)
		}
		rcpt = strings.TrimSuffix(strings.TrimPrefix(l, prefix), "\r\n")
	}
	out, err := os.Create(dst)
	if err != nil {
		return "", err
	}
	if _, err := br.WriteTo(out); err != nil {
		out.Close()
		return "", err
	}
	return rcpt, out.Close()
}
