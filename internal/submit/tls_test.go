package submit

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"strings"
	"testing"
)

func colonHex(b []byte) string {
	h := strings.ToUpper(hex.EncodeToString(b))
	var parts []string
	for i := 0; i < len(h); i += 2 {
		parts = append(parts, h[i:i+2])
	}
	return strings.Join(parts, ":")
}

func certSHA256(c tls.Certificate) []byte {
	s := sha256.Sum256(c.Leaf.Raw)
	return s[:]
}

func spkiSHA256(c tls.Certificate) []byte {
	s := sha256.Sum256(c.Leaf.RawSubjectPublicKeyInfo)
	return s[:]
}

func TestDialTLS(t *testing.T) {
	untrusted := pki.untrusted
	wrongName := pki.wrongName
	tests := []struct {
		name    string
		srv     serverOpts
		mode    TLSMode
		cfg     func(*Config)
		wantErr string // Error.Step, "" for success
		errText string // substring of the error
	}{
		{name: "starttls verified", srv: serverOpts{tls: "starttls"}, mode: TLSStartTLS},
		{name: "implicit verified", srv: serverOpts{tls: "implicit"}, mode: TLSImplicit},
		{name: "default mode is starttls", srv: serverOpts{tls: "starttls"}, mode: ""},
		{name: "starttls not offered", srv: serverOpts{}, mode: TLSStartTLS,
			wantErr: StepTLS, errText: "does not offer STARTTLS"},
		{name: "untrusted certificate", srv: serverOpts{tls: "starttls", cert: &untrusted}, mode: TLSStartTLS,
			wantErr: StepTLS, errText: "certificate"},
		{name: "untrusted certificate implicit", srv: serverOpts{tls: "implicit", cert: &untrusted}, mode: TLSImplicit,
			wantErr: StepTLS, errText: "certificate"},
		{name: "certificate for another name", srv: serverOpts{tls: "starttls", cert: &wrongName}, mode: TLSStartTLS,
			wantErr: StepTLS, errText: "127.0.0.1"},
		{name: "no CA file: system roots only", srv: serverOpts{tls: "starttls"}, mode: TLSStartTLS,
			cfg: func(c *Config) { c.CAFile = "" }, wantErr: StepTLS, errText: "unknown authority"},
		{name: "pin on certificate accepts self-signed", srv: serverOpts{tls: "starttls", cert: &untrusted}, mode: TLSStartTLS,
			cfg: func(c *Config) { c.CAFile = ""; c.TLSFingerprint = colonHex(certSHA256(untrusted)) }},
		{name: "pin on public key", srv: serverOpts{tls: "implicit", cert: &untrusted}, mode: TLSImplicit,
			cfg: func(c *Config) { c.TLSFingerprint = hex.EncodeToString(spkiSHA256(untrusted)) }},
		{name: "pin mismatch fails even for a trusted certificate", srv: serverOpts{tls: "starttls"}, mode: TLSStartTLS,
			cfg:     func(c *Config) { c.TLSFingerprint = hex.EncodeToString(certSHA256(untrusted)) },
			wantErr: StepTLS, errText: "does not match the configured fingerprint"},
		{name: "minimum version 1.3 against a 1.2 server", srv: serverOpts{tls: "starttls", maxTLS: tls.VersionTLS12}, mode: TLSStartTLS,
			cfg: func(c *Config) { c.TLSMinVersion = "1.3" }, wantErr: StepTLS, errText: "version"},
		{name: "minimum version 1.2 against a 1.2 server", srv: serverOpts{tls: "starttls", maxTLS: tls.VersionTLS12}, mode: TLSStartTLS},
		{name: "client certificate sent", srv: serverOpts{tls: "starttls", clientCAs: pki.clientCAs}, mode: TLSStartTLS,
			cfg: func(c *Config) { c.ClientCert, c.ClientKey = pki.clientCert, pki.clientKey }},
		{name: "client certificate required but not configured", srv: serverOpts{tls: "starttls", clientCAs: pki.clientCAs}, mode: TLSStartTLS,
			wantErr: StepTLS, errText: "certificate"},
		{name: "client certificate required, implicit", srv: serverOpts{tls: "implicit", clientCAs: pki.clientCAs}, mode: TLSImplicit,
			wantErr: StepTLS, errText: "certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.srv.mechs = []string{MechPlain}
			ts := newTestServer(t, tt.srv)
			cfg := ts.config(tt.mode)
			cfg.Username = testUser
			cfg.Password = func(context.Context) (string, error) { return testPassword, nil }
			var debug bytes.Buffer
			cfg.Debug = &debug
			if tt.cfg != nil {
				tt.cfg(cfg)
			}
			s, err := Dial(context.Background(), cfg)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Dial: %v\n%s", err, debug.String())
				}
				defer s.Close()
				if r := s.Send(context.Background(), textMessage("a@client.test", []string{"b@example.org"}, testBody)); r.Err != nil {
					t.Fatalf("Send: %v", r.Err)
				}
				msgs := ts.Msgs()
				if len(msgs) != 1 || !msgs[0].tls || msgs[0].helo != "client.test" {
					t.Fatalf("server got %+v, want one message over TLS after EHLO client.test", msgs)
				}
				if !ts.saw("AUTH PLAIN ok") {
					t.Errorf("no successful AUTH: %v", ts.Events())
				}
				if !strings.Contains(debug.String(), "*** TLS established") {
					t.Errorf("debug log lacks the TLS note:\n%s", debug.String())
				}
				return
			}
			if err == nil {
				s.Close()
				t.Fatal("Dial succeeded, want an error")
			}
			e := asError(t, err, tt.wantErr)
			if e.Permanent {
				t.Errorf("error %v is permanent", e)
			}
			if !strings.Contains(e.Error(), tt.errText) {
				t.Errorf("error %q does not mention %q", e, tt.errText)
			}
			// Nothing may follow a TLS failure: no AUTH, no MAIL.
			for _, ev := range ts.Events() {
				if strings.HasPrefix(ev, "AUTH") || strings.HasPrefix(ev, "MAIL") {
					t.Errorf("server saw %q after a TLS failure", ev)
				}
			}
			if strings.Contains(debug.String(), ">>> AUTH") {
				t.Errorf("client sent AUTH:\n%s", debug.String())
			}
		})
	}
}

// TestStartTLSEHLOName checks that the EHLO before STARTTLS carries the
// configured name, not go-smtp's "localhost".
func TestStartTLSEHLOName(t *testing.T) {
	ts := newTestServer(t, serverOpts{tls: "starttls"})
	var debug bytes.Buffer
	cfg := ts.config(TLSStartTLS)
	cfg.Debug = &debug
	s := dial(t, cfg)
	s.Close()
	want := []string{"EHLO client.test tls=false", "EHLO client.test tls=true"}
	got := ts.Events()
	if len(got) < 2 || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("server events %q, want %q first", got, want)
	}
	d := debug.String()
	for _, line := range []string{">>> EHLO client.test", ">>> STARTTLS", "220 "} {
		if !strings.Contains(d, line) {
			t.Errorf("debug log lacks %q:\n%s", line, d)
		}
	}
	if strings.Contains(d, "localhost") {
		t.Errorf("debug log mentions localhost:\n%s", d)
	}
}

func TestParseFingerprint(t *testing.T) {
	sum := sha256.Sum256([]byte("x"))
	plain := hex.EncodeToString(sum[:])
	for _, in := range []string{plain, strings.ToUpper(plain), colonHex(sum[:]), "sha256 Fingerprint=" + colonHex(sum[:]), " " + plain + "\n"} {
		got, err := parseFingerprint(in)
		if err != nil || !bytes.Equal(got, sum[:]) {
			t.Errorf("parseFingerprint(%q) = %x, %v", in, got, err)
		}
	}
	for _, in := range []string{"abcd", plain[:62], plain + "00", "zz" + plain[2:]} {
		if _, err := parseFingerprint(in); err == nil {
			t.Errorf("parseFingerprint(%q) succeeded", in)
		}
	}
	if got, err := parseFingerprint(""); got != nil || err != nil {
		t.Errorf("parseFingerprint(\"\") = %x, %v; want no pin", got, err)
	}
}
