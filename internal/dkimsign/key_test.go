package dkimsign

import (
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestLoadKey(t *testing.T) {
	rk, ek := keyMaterial(t)
	dir := t.TempDir()
	uid, gid := os.Getuid(), os.Getgid()
	rsaDER := x509.MarshalPKCS1PrivateKey(rk)
	rsaPKCS8 := pkcs8(t, rk)
	edPKCS8 := pkcs8(t, ek)

	tests := []struct {
		name    string
		path    string
		gid     int    // runner's group; gid if 0
		wantAlg string // on success
		wantErr string // regexp; the file's path is always required in it
	}{
		{name: "PKCS#1 RSA", path: writePEM(t, dir, "pkcs1.pem", "RSA PRIVATE KEY", rsaDER, 0o600), wantAlg: "rsa-sha256"},
		{name: "PKCS#8 RSA", path: writePEM(t, dir, "pkcs8-rsa.pem", "PRIVATE KEY", rsaPKCS8, 0o600), wantAlg: "rsa-sha256"},
		{name: "PKCS#8 Ed25519", path: writePEM(t, dir, "pkcs8-ed.pem", "PRIVATE KEY", edPKCS8, 0o600), wantAlg: "ed25519-sha256"},
		{name: "openssl genpkey ed25519", path: copyFixture(t, dir, "openssl-ed25519.pem"), wantAlg: "ed25519-sha256"},
		{name: "openssl genrsa 1024", path: copyFixture(t, dir, "openssl-rsa1024-pkcs1.pem"), wantAlg: "rsa-sha256"},
		{name: "group-readable, runner's group", path: writePEM(t, dir, "g-ok.pem", "RSA PRIVATE KEY", rsaDER, 0o640), wantAlg: "rsa-sha256"},
		{name: "leading non-key block", path: func() string {
			p := filepath.Join(dir, "params.pem")
			data := "-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n" + string(mustRead(t, writePEM(t, dir, "tmp.pem", "PRIVATE KEY", edPKCS8, 0o600)))
			tcheck(t, os.WriteFile(p, []byte(data), 0o600), "write")
			return p
		}(), wantAlg: "ed25519-sha256"},

		{name: "world-readable", path: writePEM(t, dir, "world.pem", "RSA PRIVATE KEY", rsaDER, 0o644),
			wantErr: `has mode 0644: readable by others; chmod 600 it`},
		{name: "world-readable only", path: writePEM(t, dir, "world2.pem", "PRIVATE KEY", edPKCS8, 0o604),
			wantErr: `has mode 0604: readable by others`},
		{name: "group-readable, other group", path: writePEM(t, dir, "g-bad.pem", "RSA PRIVATE KEY", rsaDER, 0o640), gid: gid + 4242,
			wantErr: `has mode 0640 and group \d+, not the runner's group \d+: readable by that group`},
		{name: "garbage", path: writeFile(t, dir, "garbage.pem", "this is not a key\n", 0o600),
			wantErr: `no PEM "RSA PRIVATE KEY" or "PRIVATE KEY" block`},
		{name: "empty", path: writeFile(t, dir, "empty.pem", "", 0o600),
			wantErr: `no PEM`},
		{name: "corrupt PKCS#1", path: writePEM(t, dir, "corrupt1.pem", "RSA PRIVATE KEY", rsaDER[:len(rsaDER)/2], 0o600),
			wantErr: `not a valid PKCS#1 RSA key`},
		{name: "corrupt PKCS#8", path: writePEM(t, dir, "corrupt8.pem", "PRIVATE KEY", []byte("\x30\x03\x02\x01\x00"), 0o600),
			wantErr: `not a valid PKCS#8 key`},
		{name: "RSA 512 PKCS#1", path: copyFixture(t, dir, "rsa512-pkcs1.pem"),
			wantErr: `RSA key has 512 bits: too short`},
		{name: "RSA 512 PKCS#8", path: copyFixture(t, dir, "rsa512-pkcs8.pem"),
			wantErr: `RSA key has 512 bits: too short`},
		{name: "EC key", path: copyFixture(t, dir, "ec-p256.pem"),
			wantErr: `unsupported key type \*ecdsa.PrivateKey`},
		{name: "SEC1 EC key", path: writePEM(t, dir, "sec1.pem", "EC PRIVATE KEY", []byte{0x30, 0}, 0o600),
			wantErr: `unsupported PEM type "EC PRIVATE KEY"`},
		{name: "encrypted PKCS#8", path: writePEM(t, dir, "enc.pem", "ENCRYPTED PRIVATE KEY", []byte{0x30, 0}, 0o600),
			wantErr: `key is encrypted`},
		{name: "public key only", path: writePEM(t, dir, "pub.pem", "PUBLIC KEY", mustPKIX(t, ek.Public()), 0o600),
			wantErr: `no PEM`},
		{name: "missing file", path: filepath.Join(dir, "nonexistent.pem"),
			wantErr: `no such file or directory`},
		{name: "directory", path: dir,
			wantErr: `is not a regular file`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g := gid
			if tc.gid != 0 {
				g = tc.gid
			}
			k, err := LoadKey(KeyConfig{Domain: "Example.COM.", Selector: "s1", PrivateKeyFile: tc.path}, uid, g)
			if tc.wantErr != "" {
				if err == nil {
					t.Fatalf("LoadKey succeeded, want error %q", tc.wantErr)
				}
				msg := err.Error()
				if !regexp.MustCompile(tc.wantErr).MatchString(msg) {
					t.Errorf("error %q does not match %q", msg, tc.wantErr)
				}
				if !strings.Contains(msg, tc.path) || !strings.HasPrefix(msg, "dkim: ") {
					t.Errorf("error %q does not start with dkim: and name %s", msg, tc.path)
				}
				checkNoKeyMaterial(t, msg, tc.path)
				return
			}
			tcheck(t, err, "LoadKey")
			if k.Algorithm() != tc.wantAlg || k.Domain() != "example.com" || k.Selector() != "s1" {
				t.Errorf("got %s %s %s, want %s example.com s1", k.Algorithm(), k.Domain(), k.Selector(), tc.wantAlg)
			}
		})
	}
}

// checkNoKeyMaterial fails if msg contains a run of 16 base64 characters
// of the key file, or any of its DER bytes as hex.
func checkNoKeyMaterial(t *testing.T, msg, path string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "-----") || len(line) < 16 {
			continue
		}
		for i := 0; i+16 <= len(line); i += 8 {
			if strings.Contains(msg, line[i:i+16]) {
				t.Errorf("error %q contains key file content %q", msg, line[i:i+16])
				return
			}
		}
	}
}

func TestLoadKeyOwner(t *testing.T) {
	rk, _ := keyMaterial(t)
	p := writePEM(t, t.TempDir(), "k.pem", "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rk), 0o600)
	uid := os.Getuid()
	if uid == 0 {
		// Root owns the file, and a root-owned key is accepted whoever
		// the runner is; give it to someone else.
		tcheck(t, os.Chown(p, 4242, -1), "chown")
		uid = 4243
	} else {
		uid++ // the file's owner is not the runner, and not root
	}
	_, err := LoadKey(KeyConfig{Domain: "example.com", Selector: "s", PrivateKeyFile: p}, uid, os.Getgid())
	if err == nil || !strings.Contains(err.Error(), "is owned by uid") || !strings.Contains(err.Error(), p) {
		t.Fatalf("LoadKey of a key owned by another user: err = %v", err)
	}
}

func TestLoadKeyConfig(t *testing.T) {
	_, ek := keyMaterial(t)
	p := writePEM(t, t.TempDir(), "k.pem", "PRIVATE KEY", pkcs8(t, ek), 0o600)
	tests := []struct {
		kc      KeyConfig
		wantErr string
		domain  string
		can     string
	}{
		{kc: KeyConfig{Domain: "bücher.example", Selector: "s"}, domain: "xn--bcher-kva.example", can: "relaxed/relaxed"},
		{kc: KeyConfig{Domain: "example.com", Selector: "2024_a.b", Canonicalization: "simple"}, domain: "example.com", can: "simple/simple"},
		{kc: KeyConfig{Domain: "example.com", Selector: "s", Canonicalization: "Relaxed"}, domain: "example.com", can: "relaxed/simple"},
		{kc: KeyConfig{Domain: "example.com", Selector: "s", Canonicalization: "simple/relaxed"}, domain: "example.com", can: "simple/relaxed"},
		{kc: KeyConfig{Domain: "", Selector: "s"}, wantErr: `domain "": empty`},
		{kc: KeyConfig{Domain: "exa mple.com", Selector: "s"}, wantErr: `not a DNS name`},
		{kc: KeyConfig{Domain: "example.com", Selector: ""}, wantErr: `selector "" is not a DNS name`},
		{kc: KeyConfig{Domain: "example.com", Selector: "s;h=x"}, wantErr: `is not a DNS name`},
		{kc: KeyConfig{Domain: "example.com", Selector: "s", Canonicalization: "nofws"}, wantErr: `canonicalization "nofws"`},
		{kc: KeyConfig{Domain: "example.com", Selector: "s", Expiration: time.Second}, wantErr: `at least a minute`},
		{kc: KeyConfig{Domain: "example.com", Selector: "s", Expiration: -time.Hour}, wantErr: `at least a minute`},
	}
	for _, tc := range tests {
		tc.kc.PrivateKeyFile = p
		k, err := LoadKey(tc.kc, os.Getuid(), os.Getgid())
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("LoadKey(%+v) = %v, want error containing %q", tc.kc, err, tc.wantErr)
			}
			continue
		}
		tcheck(t, err, "LoadKey")
		if k.domain != tc.domain || string(k.headerCan)+"/"+string(k.bodyCan) != tc.can {
			t.Errorf("LoadKey(%+v): domain %s, c=%s/%s; want %s, %s", tc.kc, k.domain, k.headerCan, k.bodyCan, tc.domain, tc.can)
		}
	}
}

var txtRecordRE = regexp.MustCompile(`^([a-z0-9_.-]+)\._domainkey\.([a-z0-9.-]+)\. IN TXT (?:"([^"]*)"|\( ((?:"[^"]*" )+)\))$`)

var quotedRE = regexp.MustCompile(`"([^"]*)"`)

func TestTXTRecord(t *testing.T) {
	keys := testKeys(t)
	rk, ek := keyMaterial(t)
	for _, k := range keys[:2] {
		rec := k.TXTRecord()
		t.Log(rec)
		m := txtRecordRE.FindStringSubmatch(rec)
		if m == nil {
			t.Fatalf("TXTRecord %q does not match %s", rec, txtRecordRE)
		}
		if m[1] != k.selector || m[2] != k.domain {
			t.Errorf("record name %s._domainkey.%s, want %s._domainkey.%s", m[1], m[2], k.selector, k.domain)
		}
		var strs []string
		if m[3] != "" {
			strs = []string{m[3]}
		} else {
			for _, q := range quotedRE.FindAllStringSubmatch(m[4], -1) {
				strs = append(strs, q[1])
			}
		}
		for _, s := range strs {
			if len(s) > 255 {
				t.Errorf("TXT string of %d bytes", len(s))
			}
		}
		value := strings.Join(strs, "")
		if value != k.TXTValue() {
			t.Errorf("strings join to %q, want %q", value, k.TXTValue())
		}
		p := value[strings.Index(value, "p=")+2:]
		pub, err := base64.StdEncoding.DecodeString(p)
		tcheck(t, err, "decoding p=")
		switch k.keyType {
		case "rsa":
			if !strings.HasPrefix(value, "v=DKIM1; k=rsa; p=MIIB") || len(strs) != 2 {
				t.Errorf("RSA 2048 record %q: want v=DKIM1; k=rsa; p=MIIB... in 2 strings", rec)
			}
			got, err := x509.ParsePKIXPublicKey(pub)
			tcheck(t, err, "parsing p=")
			if !rk.PublicKey.Equal(got.(*rsa.PublicKey)) {
				t.Error("p= is not the public key")
			}
		case "ed25519":
			if !strings.HasPrefix(value, "v=DKIM1; k=ed25519; p=") || len(strs) != 1 || m[3] == "" {
				t.Errorf("Ed25519 record %q: want one string v=DKIM1; k=ed25519; p=...", rec)
			}
			if !ek.Public().(ed25519.PublicKey).Equal(ed25519.PublicKey(pub)) {
				t.Error("p= is not the raw Ed25519 public key (RFC 8463)")
			}
		}
	}
}

func writeFile(t testing.TB, dir, name, content string, perm os.FileMode) string {
	t.Helper()
	p := filepath.Join(dir, name)
	tcheck(t, os.WriteFile(p, []byte(content), perm), "write")
	return p
}

func mustRead(t testing.TB, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	tcheck(t, err, "read")
	return b
}

func mustPKIX(t testing.TB, pub any) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	tcheck(t, err, "MarshalPKIXPublicKey")
	return der
}
