package dkimsign

import (
	"bufio"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func tcheck(t testing.TB, err error, what string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// Key material is made once per test binary: RSA 2048 generation is the
// slow part.
var (
	keyMaterialOnce sync.Once
	testRSA         *rsa.PrivateKey
	testEd25519     ed25519.PrivateKey
)

func keyMaterial(t testing.TB) (*rsa.PrivateKey, ed25519.PrivateKey) {
	keyMaterialOnce.Do(func() {
		var err error
		testRSA, err = rsa.GenerateKey(rand.Reader, 2048)
		tcheck(t, err, "generating RSA key")
		_, testEd25519, err = ed25519.GenerateKey(rand.Reader)
		tcheck(t, err, "generating Ed25519 key")
	})
	return testRSA, testEd25519
}

// writePEM writes a PEM block of the given type in a new file with mode
// perm and returns its path.
func writePEM(t testing.TB, dir, name, typ string, der []byte, perm os.FileMode) string {
	t.Helper()
	p := filepath.Join(dir, name)
	data := pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
	tcheck(t, os.WriteFile(p, data, perm), "writing key file")
	tcheck(t, os.Chmod(p, perm), "chmod key file") // despite the umask
	return p
}

func pkcs8(t testing.TB, k any) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(k)
	tcheck(t, err, "marshalling PKCS#8")
	return der
}

// copyFixture copies testdata/name to dir with mode 0600 (git does not keep
// modes) and returns its path.
func copyFixture(t testing.TB, dir, name string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	tcheck(t, err, "reading fixture")
	p := filepath.Join(dir, name)
	tcheck(t, os.WriteFile(p, data, 0o600), "writing fixture copy")
	return p
}

func loadKey(t testing.TB, kc KeyConfig) *Key {
	t.Helper()
	k, err := LoadKey(kc, os.Getuid(), os.Getgid())
	tcheck(t, err, "LoadKey "+kc.PrivateKeyFile)
	return k
}

// testKeys returns the keys of three signing profiles:
//   - example.com: RSA 2048 (PKCS#1 file) and Ed25519, relaxed/relaxed;
//   - simple.example: the same key pair as PKCS#8, simple/simple;
//   - openssl.example: keys written by openssl (RSA 1024 PKCS#1 and Ed25519
//     PKCS#8, testdata/), "relaxed" (relaxed/simple) and x= a day later.
func testKeys(t testing.TB) []*Key {
	t.Helper()
	rk, ek := keyMaterial(t)
	dir := t.TempDir()
	rsaPKCS1 := writePEM(t, dir, "rsa-pkcs1.pem", "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rk), 0o600)
	rsaPKCS8 := writePEM(t, dir, "rsa-pkcs8.pem", "PRIVATE KEY", pkcs8(t, rk), 0o600)
	ed := writePEM(t, dir, "ed25519.pem", "PRIVATE KEY", pkcs8(t, ek), 0o600)
	return []*Key{
		loadKey(t, KeyConfig{Domain: "example.com", Selector: "rsa2048", PrivateKeyFile: rsaPKCS1}),
		loadKey(t, KeyConfig{Domain: "example.com", Selector: "ed", PrivateKeyFile: ed}),
		loadKey(t, KeyConfig{Domain: "simple.example", Selector: "rsa", PrivateKeyFile: rsaPKCS8, Canonicalization: "simple/simple"}),
		loadKey(t, KeyConfig{Domain: "simple.example", Selector: "ed", PrivateKeyFile: ed, Canonicalization: "simple/simple"}),
		loadKey(t, KeyConfig{Domain: "openssl.example", Selector: "rsa1024", PrivateKeyFile: copyFixture(t, dir, "openssl-rsa1024-pkcs1.pem"), Canonicalization: "relaxed", Expiration: 24 * time.Hour}),
		loadKey(t, KeyConfig{Domain: "openssl.example", Selector: "ed", PrivateKeyFile: copyFixture(t, dir, "openssl-ed25519.pem"), Canonicalization: "relaxed", Expiration: 24 * time.Hour}),
	}
}

// txtLookup answers DNS TXT queries for keys, as go-msgauth's
// VerifyOptions.LookupTXT.
func txtLookup(keys []*Key) func(string) ([]string, error) {
	m := make(map[string]string)
	for _, k := range keys {
		m[k.selector+"._domainkey."+k.domain] = k.TXTValue()
	}
	return func(name string) ([]string, error) {
		v, ok := m[strings.ToLower(strings.TrimSuffix(name, "."))]
		if !ok {
			return nil, fmt.Errorf("no TXT record for %s", name)
		}
		return []string{v}, nil
	}
}

// writeKeysFile writes the "name<TAB>TXT value" file the verifier scripts
// read instead of querying DNS.
func writeKeysFile(t testing.TB, dir string, keys []*Key) string {
	t.Helper()
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s._domainkey.%s\t%s\n", k.selector, k.domain, k.TXTValue())
	}
	p := filepath.Join(dir, "keys.txt")
	tcheck(t, os.WriteFile(p, []byte(b.String()), 0o644), "writing keys file")
	return p
}

// writeLargeMessage writes a message of about size bytes, generated as it
// goes: a MIME text header, then lines of varying length (up to 990
// octets) mixing 8-bit text, runs of spaces and tabs, trailing white
// space and blank lines. The same size gives the same bytes.
func writeLargeMessage(w io.Writer, size int) error {
	bw := bufio.NewWriterSize(w, 64<<10)
	fmt.Fprintf(bw, "From: Big Sender <big@example.com>\r\n"+
		"To: someone@example.net\r\n"+
		"Subject: a large message\r\n"+
		"Date: Mon, 02 Jan 2006 15:04:05 +0000\r\n"+
		"Message-ID: <large-%d@example.com>\r\n"+
		"MIME-Version: 1.0\r\n"+
		"Content-Type: text/plain; charset=utf-8\r\n"+
		"Content-Transfer-Encoding: 8bit\r\n"+
		"\r\n", size)
	words := []string{"the", "quick", "brown", "fox", "Grüße", "naïve", "日本語", "jumps", "\t", "  ", "over", "lazy", "dog", "€"}
	var x uint32 = 2463534242
	next := func() uint32 { // xorshift32: cheap and deterministic
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		return x
	}
	n := 0
	line := make([]byte, 0, 1024)
	for n < size {
		line = line[:0]
		want := int(next() % 120)
		if next()%50 == 0 {
			want = 900 + int(next()%80) // a long line, still under 998
		}
		for len(line) < want {
			line = append(line, words[next()%uint32(len(words))]...)
			line = append(line, ' ')
		}
		switch next() % 8 {
		case 0:
			line = append(line, " \t "...) // trailing white space
		case 1:
			line = line[:0] // blank line
		}
		line = append(line, '\r', '\n')
		m, err := bw.Write(line)
		n += m
		if err != nil {
			return err
		}
	}
	// End in trailing blank lines, which relaxed and simple body
	// canonicalization both drop.
	if _, err := bw.WriteString("last line\r\n\r\n\r\n"); err != nil {
		return err
	}
	return bw.Flush()
}

// generated returns a reader of what gen writes, made as it is read.
func generated(gen func(io.Writer) error) io.ReadCloser {
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(gen(pw)) }()
	return pr
}
