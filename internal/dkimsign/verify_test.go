package dkimsign

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/emersion/go-msgauth/dkim"
)

// testMessage is a message to sign: msg, or for a large one what gen
// writes. transmitted is what SMTP's DATA adds when the message does not
// end in a complete line: the verifiers see the message as delivered.
// goExtra completes a message without a blank line for go-msgauth's
// verifier, which needs one.
type testMessage struct {
	name        string
	msg         string
	gen         func(io.Writer) error
	transmitted string
	goExtra     string
}

func (m testMessage) open() io.ReadCloser {
	if m.gen != nil {
		return generated(m.gen)
	}
	return io.NopCloser(strings.NewReader(m.msg))
}

const stdHeader = "From: Alice Example <alice@example.com>\r\n" +
	"To: Bob <bob@example.net>\r\n" +
	"Subject: test message\r\n" +
	"Date: Mon, 02 Jan 2006 15:04:05 +0000\r\n" +
	"Message-ID: <20060102150405.1@example.com>\r\n"

// multipartMessage has a text part and a base64 attachment of 3000
// pseudo-random bytes.
func multipartMessage() string {
	att := make([]byte, 3000)
	var x uint32 = 88172645
	for i := range att {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		att[i] = byte(x)
	}
	enc := base64.StdEncoding.EncodeToString(att)
	var b strings.Builder
	b.WriteString(stdHeader +
		"MIME-Version: 1.0\r\n" +
		"Content-Type: multipart/mixed;\r\n boundary=\"=_b0undary\"\r\n" +
		"\r\n" +
		"This is a multi-part message in MIME format.\r\n" +
		"\r\n--=_b0undary\r\n" +
		"Content-Type: text/plain; charset=utf-8\r\n" +
		"Content-Transfer-Encoding: 8bit\r\n" +
		"\r\n" +
		"See the attachment. Grüße.\r\n" +
		"\r\n--=_b0undary\r\n" +
		"Content-Type: application/octet-stream; name=\"data.bin\"\r\n" +
		"Content-Disposition: attachment; filename=\"data.bin\"\r\n" +
		"Content-Transfer-Encoding: base64\r\n" +
		"\r\n")
	for len(enc) > 76 {
		b.WriteString(enc[:76] + "\r\n")
		enc = enc[76:]
	}
	b.WriteString(enc + "\r\n\r\n--=_b0undary--\r\n")
	return b.String()
}

var testMessages = []testMessage{
	{name: "plain", msg: stdHeader + "\r\nHello Bob.\r\n"},
	{name: "8-bit body", msg: stdHeader +
		"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" +
		"Grüße aus Köln — 日本語のテキスト\r\n" +
		"latin-1 bytes: \xe9t\xe9 \xe0 la plage\r\n" +
		"\x80\xff control-ish high octets\r\n"},
	{name: "long lines and folded fields", msg: "From: Alice Example <alice@example.com>\r\n" +
		"To: one@example.net, two@example.net,\r\n\tthree@example.net,\r\n   four@example.net\r\n" +
		"Subject: a subject that is long enough that a careful mail user agent\r\n" +
		" folds it over several lines,\r\n\t\tusing tabs    and   runs of  spaces   \r\n" +
		"Date: Mon, 02 Jan 2006 15:04:05 +0000\r\n" +
		"References: <" + strings.Repeat("r", 60) + "@example.com>\r\n <" + strings.Repeat("s", 60) + "@example.com>\r\n" +
		"Message-ID: <long@example.com>\r\n" +
		"\r\n" +
		strings.Repeat("x", 998) + "\r\n" +
		"words   separated \t by\t\truns   of white space\r\n" +
		strings.Repeat("a b\t", 240) + "\r\n"},
	{name: "trailing white space and blank lines", msg: stdHeader + "\r\n" +
		"line with trailing spaces   \r\n" +
		"\t\r\n" +
		"line with trailing tab\t\r\n" +
		" \t \r\n" +
		"last text line \r\n" +
		"\r\n\r\n \r\n\r\n"},
	{name: "multipart with attachment", msg: multipartMessage()},
	{name: "only From", msg: "From: alice@example.com\r\n\r\nNo other header field.\r\n"},
	{name: "repeated and odd-case fields", msg: "Received: from a.example by b.example; Mon, 02 Jan 2006 15:04:05 +0000\r\n" +
		"Received: from c.example by a.example; Mon, 02 Jan 2006 15:04:04 +0000\r\n" +
		"from: Alice <alice@example.com>\r\n" +
		"TO: bob@example.net\r\n" +
		"cc: carol@example.net\r\n" +
		"To: dave@example.net\r\n" +
		"CC: erin@example.net\r\n" +
		"subject: repeated\r\n" +
		"Reply-To: alice+replies@example.com\r\n" +
		"In-Reply-To: <parent@example.net>\r\n" +
		"References: <grandparent@example.net>\r\n" +
		"References: <parent@example.net>\r\n" +
		"X-Not-Signed: whatever\r\n" +
		"\r\nbody\r\n"},
	{name: "empty body", msg: stdHeader + "\r\n"},
	{name: "no final CRLF", msg: stdHeader + "\r\nthe last line has no line break", transmitted: "\r\n"},
	{name: "header only", msg: stdHeader + "X-Last: no blank line and no CRLF", transmitted: "\r\n", goExtra: "\r\n"},
	{name: "large 20 MB", gen: func(w io.Writer) error { return writeLargeMessage(w, 20<<20) }},
}

// tamper is a change made after signing, inserted just below the
// signature fields (top of the header section, where a verifier that did
// not over-sign would not look), and whether verification must then fail.
var tampers = []struct {
	name     string
	insert   string
	wantFail bool
}{
	{"second Subject", "Subject: injected\r\n", true},
	{"extra To", "To: mallory@example.org\r\n", true},
	{"Cc where there was none", "Cc: mallory@example.org\r\n", true},
	{"Reply-To where there was none", "Reply-To: mallory@example.org\r\n", true},
	{"second From", "From: mallory@example.org\r\n", true},
	{"Received (not signed): still passes", "Received: from relay.example by mx.example.net; Mon, 02 Jan 2006 15:05:00 +0000\r\n", false},
}

type signedFile struct {
	name     string // message/profile, or message/tamper
	path     string
	keys     []*Key
	wantPass bool
	goExtra  string // appended for go-msgauth, which needs the blank line
}

// signAll signs every test message with every profile of testKeys, and
// tampered copies of the plain message, writing each as delivered.
func signAll(t *testing.T, keys []*Key, dir string) []signedFile {
	s := NewSigner(keys)
	var files []signedFile
	for i, m := range testMessages {
		for _, domain := range []string{"example.com", "simple.example", "openssl.example"} {
			if m.gen != nil && domain != "example.com" {
				continue // large: one profile is enough
			}
			r := m.open()
			sig, err := s.Sign(domain, r)
			r.Close()
			tcheck(t, err, "signing "+m.name+" for "+domain)
			checkSignatureFields(t, sig, 2)
			p := filepath.Join(dir, fmt.Sprintf("%02d-%s-%s.eml", i, strings.ReplaceAll(m.name, " ", "_"), domain))
			writeSigned(t, p, sig, "", m)
			f := signedFile{name: m.name + "/" + domain, path: p, keys: s.KeysFor(domain), wantPass: true, goExtra: m.goExtra}
			files = append(files, f)

			if i == 0 && domain == "example.com" {
				for j, tm := range tampers {
					p := filepath.Join(dir, fmt.Sprintf("tampered-%02d.eml", j))
					writeSigned(t, p, sig, tm.insert, m)
					files = append(files, signedFile{name: m.name + "/tampered: " + tm.name, path: p, keys: f.keys, wantPass: !tm.wantFail})
				}
			}
		}
	}
	return files
}

func writeSigned(t *testing.T, path, sig, insert string, m testMessage) {
	f, err := os.Create(path)
	tcheck(t, err, "creating signed message")
	defer f.Close()
	w := bufio.NewWriter(f)
	w.WriteString(sig + insert)
	r := m.open()
	defer r.Close()
	_, err = io.Copy(w, r)
	tcheck(t, err, "writing signed message")
	w.WriteString(m.transmitted)
	tcheck(t, w.Flush(), "writing signed message")
}

// checkSignatureFields checks that sig is n DKIM-Signature fields, folded
// into lines under 998 octets, each line ending in CRLF.
func checkSignatureFields(t *testing.T, sig string, n int) {
	t.Helper()
	if got := strings.Count(sig, "DKIM-Signature:"); got != n {
		t.Errorf("%d DKIM-Signature fields, want %d:\n%s", got, n, sig)
	}
	if !strings.HasPrefix(sig, "DKIM-Signature:") || !strings.HasSuffix(sig, "\r\n") {
		t.Errorf("signature fields do not start with DKIM-Signature: and end with CRLF: %q", sig)
	}
	for _, l := range strings.SplitAfter(sig, "\n") {
		if l == "" {
			continue
		}
		if !strings.HasSuffix(l, "\r\n") || strings.ContainsAny(strings.TrimSuffix(l, "\r\n"), "\r\n") || len(l) > 998 {
			t.Errorf("bad signature line %q", l)
		}
	}
}

// TestSignVerify signs messages of many shapes and checks the signatures
// with three independent verifiers given the public keys directly:
// go-msgauth, dkimpy (RSA and Ed25519) and Perl Mail::DKIM (RSA; the
// Debian 12 version has no Ed25519).
func TestSignVerify(t *testing.T) {
	keys := testKeys(t)
	dir := t.TempDir()
	files := signAll(t, keys, dir)
	keysFile := writeKeysFile(t, dir, keys)
	var paths []string
	for _, f := range files {
		paths = append(paths, f.path)
	}

	t.Run("go-msgauth", func(t *testing.T) {
		t.Parallel()
		for _, f := range files {
			t.Run(f.name, func(t *testing.T) {
				r, err := os.Open(f.path)
				tcheck(t, err, "open")
				defer r.Close()
				vs, err := dkim.VerifyWithOptions(io.MultiReader(r, strings.NewReader(f.goExtra)),
					&dkim.VerifyOptions{LookupTXT: txtLookup(keys)})
				tcheck(t, err, "verify")
				if len(vs) != len(f.keys) {
					t.Fatalf("%d verifications, want %d", len(vs), len(f.keys))
				}
				for i, v := range vs {
					if v.Domain != f.keys[i].domain {
						t.Errorf("signature %d: d=%s, want %s", i, v.Domain, f.keys[i].domain)
					}
					if pass := v.Err == nil; pass != f.wantPass {
						t.Errorf("signature %d (%s): err = %v, want pass = %v", i, f.keys[i].Algorithm(), v.Err, f.wantPass)
					}
				}
			})
		}
	})

	t.Run("dkimpy", func(t *testing.T) {
		t.Parallel()
		py := findPython(t)
		res := runVerifier(t, py, "testdata/verify_dkimpy.py", keysFile, paths)
		for _, f := range files {
			t.Run(f.name, func(t *testing.T) {
				checkResults(t, res[f.path], f, func(k *Key) bool { return true }, "fail")
			})
		}
	})

	t.Run("Mail::DKIM", func(t *testing.T) {
		t.Parallel()
		perl := findMailDKIM(t)
		res := runVerifier(t, perl, "testdata/verify_maildkim.pl", keysFile, paths)
		logged := false
		for _, f := range files {
			t.Run(f.name, func(t *testing.T) {
				checkResults(t, res[f.path], f, func(k *Key) bool { return k.keyType == "rsa" }, "fail")
			})
			for _, r := range res[f.path] {
				if r.selector == "ed" && !logged {
					t.Logf("Mail::DKIM on Ed25519 (not checked): %s %s", r.result, r.detail)
					logged = true
				}
			}
		}
	})
}

type verifierResult struct {
	selector, domain, result, detail string
}

// checkResults checks a verifier's results for f: one per key, and for the
// keys where checked(key), "pass" or wantFail as f wants.
func checkResults(t *testing.T, rs []verifierResult, f signedFile, checked func(*Key) bool, wantFail string) {
	t.Helper()
	if len(rs) != len(f.keys) {
		t.Fatalf("%d results, want %d: %v", len(rs), len(f.keys), rs)
	}
	for _, k := range f.keys {
		var r *verifierResult
		for i := range rs {
			if rs[i].selector == k.selector && rs[i].domain == k.domain {
				r = &rs[i]
			}
		}
		if r == nil {
			t.Errorf("no result for s=%s d=%s: %v", k.selector, k.domain, rs)
			continue
		}
		if !checked(k) {
			continue
		}
		want := "pass"
		if !f.wantPass {
			want = wantFail
		}
		if r.result != want {
			t.Errorf("%s (s=%s d=%s): %s (%s), want %s", k.Algorithm(), k.selector, k.domain, r.result, r.detail, want)
		}
	}
}

// runVerifier runs a verifier script over all paths at once (interpreter
// start-up dominates for small messages) and returns its results by path.
func runVerifier(t *testing.T, interp, script, keysFile string, paths []string) map[string][]verifierResult {
	t.Helper()
	cmd := exec.Command(interp, append([]string{script, keysFile}, paths...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", interp, script, err, stderr.String())
	}
	res := make(map[string][]verifierResult)
	for _, line := range strings.Split(strings.TrimSuffix(string(out), "\n"), "\n") {
		f := strings.SplitN(line, "\t", 6)
		if len(f) != 6 {
			t.Fatalf("%s: unexpected output line %q", script, line)
		}
		if f[4] == "none" {
			res[f[0]] = nil
			continue
		}
		res[f[0]] = append(res[f[0]], verifierResult{selector: f[2], domain: f[3], result: f[4], detail: f[5]})
	}
	return res
}

// findPython returns a python3 that can import dkimpy with Ed25519
// support; Debian's python3-dkim is for /usr/bin/python3, which may not be
// the python3 first on PATH.
func findPython(t *testing.T) string {
	t.Helper()
	cands := []string{"/usr/bin/python3"}
	if p, err := exec.LookPath("python3"); err == nil {
		cands = append(cands, p)
	}
	for _, p := range cands {
		if exec.Command(p, "-c", "import dkim, nacl.signing").Run() == nil {
			return p
		}
	}
	t.Skip("dkimpy not found: no python3 can import dkim and nacl (Debian: apt-get install python3-dkim)")
	return ""
}

func findMailDKIM(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("perl")
	if err == nil && exec.Command(p, "-MMail::DKIM::Verifier", "-e", "1").Run() == nil {
		return p
	}
	t.Skip("Perl Mail::DKIM not found (Debian: apt-get install libmail-dkim-perl)")
	return ""
}

var tagRE = regexp.MustCompile(`(?:^|;)\s*([a-z]+)\s*=\s*([^;]*)`)

// sigTags returns the tags of the DKIM-Signature fields in sig, unfolded.
func sigTags(t *testing.T, sig string) []map[string]string {
	t.Helper()
	var all []map[string]string
	for _, field := range strings.Split(sig, "DKIM-Signature:")[1:] {
		v := strings.Join(strings.Fields(field), "")
		tags := make(map[string]string)
		for _, m := range tagRE.FindAllStringSubmatch(v, -1) {
			tags[m[1]] = m[2]
		}
		all = append(all, tags)
	}
	return all
}
