package submit

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
)

// secrets lists every form in which a credential could leak into logs or
// errors: as is, and base64-encoded in each SASL payload that carries it.
func secrets() []string {
	b64 := base64.StdEncoding.EncodeToString
	return []string{
		testPassword,
		b64([]byte(testPassword)),
		b64([]byte("\x00" + testUser + "\x00" + testPassword)),
		testToken,
		staleToken,
		b64([]byte(testToken)),
		b64([]byte("user=" + testUser + "\x01auth=Bearer " + testToken + "\x01\x01")),
		b64([]byte("user=" + testUser + "\x01auth=Bearer " + staleToken + "\x01\x01")),
		// Any three-byte-aligned fragment of the password's base64 in a
		// longer payload starts with the encoding of its first bytes.
		b64([]byte(testPassword[:6])),
		"s3cret",
		"ya29",
	}
}

func assertNoSecrets(t *testing.T, what, s string) {
	t.Helper()
	for _, sec := range secrets() {
		if strings.Contains(s, sec) {
			t.Errorf("%s contains the secret %q:\n%s", what, sec, s)
		}
	}
}

func TestAuth(t *testing.T) {
	password := func(context.Context) (string, error) { return testPassword, nil }
	wrongPassword := func(context.Context) (string, error) { return "wrong-" + testPassword, nil }
	tests := []struct {
		name     string
		offered  []string
		password func(context.Context) (string, error)
		token    bool   // configure a token source: stale first, fresh on refresh
		tokenBad bool   // the token source returns stale tokens only
		force    string // Config.AuthMechanism
		want     string // mechanism that must succeed; "" for a failure
		wantErr  string // substring of the error
		wantCode int    // reply code in the error
		calls    []bool // expected refresh arguments of Token calls
	}{
		{name: "PLAIN preferred", offered: []string{"LOGIN", "CRAM-MD5", "PLAIN"}, password: password, want: MechPlain},
		{name: "LOGIN over CRAM-MD5", offered: []string{"CRAM-MD5", "LOGIN"}, password: password, want: MechLogin},
		{name: "CRAM-MD5 when alone", offered: []string{"CRAM-MD5"}, password: password, want: MechCRAMMD5},
		{name: "forced LOGIN", offered: []string{"PLAIN", "LOGIN", "CRAM-MD5"}, password: password, force: "login", want: MechLogin},
		{name: "forced CRAM-MD5", offered: []string{"PLAIN", "LOGIN", "CRAM-MD5"}, password: password, force: MechCRAMMD5, want: MechCRAMMD5},
		{name: "forced mechanism not offered: no downgrade", offered: []string{"PLAIN", "LOGIN"}, password: password, force: MechCRAMMD5,
			wantErr: "does not offer AUTH mechanism CRAM-MD5"},
		{name: "no usable mechanism", offered: []string{"XOAUTH2"}, password: password, wantErr: "no AUTH mechanism usable"},
		{name: "AUTH not offered", offered: nil, password: password, wantErr: "does not offer AUTH"},
		{name: "wrong password", offered: []string{"PLAIN"}, password: wrongPassword, wantErr: "Authentication failed", wantCode: 535},
		{name: "wrong password LOGIN", offered: []string{"LOGIN"}, password: wrongPassword, wantErr: "Authentication failed", wantCode: 535},
		{name: "wrong password CRAM-MD5", offered: []string{"CRAM-MD5"}, password: wrongPassword, wantErr: "Authentication failed", wantCode: 535},
		{name: "password callback fails", offered: []string{"PLAIN"},
			password: func(context.Context) (string, error) { return "", errors.New("keyring locked") }, wantErr: "keyring locked"},
		{name: "OAUTHBEARER preferred with a token", offered: []string{"PLAIN", "XOAUTH2", "OAUTHBEARER"}, password: password, token: true,
			want: MechOAuthBearer, calls: []bool{false, true}},
		{name: "XOAUTH2 with refresh", offered: []string{"PLAIN", "XOAUTH2"}, token: true, want: MechXOAuth2, calls: []bool{false, true}},
		{name: "forced PLAIN despite a token", offered: []string{"PLAIN", "XOAUTH2"}, password: password, token: true, force: MechPlain, want: MechPlain},
		{name: "XOAUTH2 refresh does not help", offered: []string{"XOAUTH2"}, token: true, tokenBad: true,
			wantErr: "Authentication failed", wantCode: 535, calls: []bool{false, true}},
		{name: "OAUTHBEARER refresh does not help", offered: []string{"OAUTHBEARER"}, token: true, tokenBad: true,
			wantErr: "invalid_token", calls: []bool{false, true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := newTestServer(t, serverOpts{tls: "starttls", mechs: tt.offered})
			cfg := ts.config(TLSStartTLS)
			cfg.Username = testUser
			cfg.Password = tt.password
			cfg.AuthMechanism = tt.force
			var calls []bool
			if tt.token {
				cfg.Token = func(_ context.Context, refresh bool) (string, error) {
					calls = append(calls, refresh)
					if refresh && !tt.tokenBad {
						return testToken, nil
					}
					return staleToken, nil
				}
			}
			var debug bytes.Buffer
			cfg.Debug = &debug
			s, err := Dial(context.Background(), cfg)
			assertNoSecrets(t, "debug log", debug.String())
			if err != nil {
				assertNoSecrets(t, "error", err.Error())
			}
			if !slices.Equal(calls, tt.calls) {
				t.Errorf("Token calls with refresh=%v, want %v", calls, tt.calls)
			}
			if tt.want != "" {
				if err != nil {
					t.Fatalf("Dial: %v\n%s", err, debug.String())
				}
				defer s.Close()
				if !ts.saw("AUTH " + tt.want + " ok") {
					t.Errorf("server events %q lack a successful AUTH %s", ts.Events(), tt.want)
				}
				if !strings.Contains(debug.String(), "<redacted>") && tt.want != MechCRAMMD5 {
					t.Errorf("debug log shows no redaction:\n%s", debug.String())
				}
				return
			}
			if err == nil {
				s.Close()
				t.Fatal("Dial succeeded, want an error")
			}
			e := asError(t, err, StepAuth)
			if e.Permanent {
				t.Errorf("AUTH failure %v is permanent", e)
			}
			if !strings.Contains(e.Error(), tt.wantErr) {
				t.Errorf("error %q does not contain %q", e, tt.wantErr)
			}
			if e.Code != tt.wantCode {
				t.Errorf("error code %d, want %d", e.Code, tt.wantCode)
			}
			if tt.force != "" && ts.saw("AUTH") {
				t.Errorf("server saw AUTH: %v", ts.Events())
			}
		})
	}
}

// TestAuthPlainTextPolicy checks that credentials go over a connection
// without TLS only when explicitly allowed and to loopback.
func TestAuthPlainTextPolicy(t *testing.T) {
	tests := []struct {
		name  string
		allow bool
		host  string
		ok    bool
	}{
		{name: "refused by default", host: "127.0.0.1"},
		{name: "allowed on 127.0.0.1", allow: true, host: "127.0.0.1", ok: true},
		{name: "allowed on localhost", allow: true, host: "localhost", ok: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := newTestServer(t, serverOpts{mechs: []string{MechPlain}})
			cfg := ts.config(TLSNone)
			cfg.Address = tt.host + ":" + ts.port
			cfg.Username = testUser
			cfg.Password = func(context.Context) (string, error) { return testPassword, nil }
			cfg.InsecureAllowPlainAuth = tt.allow
			s, err := Dial(context.Background(), cfg)
			if tt.ok {
				if err != nil {
					t.Fatalf("Dial: %v", err)
				}
				s.Close()
				if !ts.saw("AUTH PLAIN ok") {
					t.Errorf("no AUTH: %v", ts.Events())
				}
				return
			}
			if err == nil {
				s.Close()
				t.Fatal("Dial succeeded, want a refusal")
			}
			e := asError(t, err, StepAuth)
			if !strings.Contains(e.Error(), "without TLS") {
				t.Errorf("error %q does not explain the refusal", e)
			}
			if ts.saw("AUTH") {
				t.Errorf("server saw AUTH: %v", ts.Events())
			}
		})
	}
}

func TestIsLoopbackHost(t *testing.T) {
	for host, want := range map[string]bool{
		"localhost": true, "LOCALHOST": true, "127.0.0.1": true, "127.4.5.6": true, "::1": true,
		"smtp.example.com": false, "10.0.0.1": false, "192.0.2.1": false, "::ffff:192.0.2.1": false,
		"localhost.example.com": false, "": false,
	} {
		if got := isLoopbackHost(host); got != want {
			t.Errorf("isLoopbackHost(%q) = %v, want %v", host, got, want)
		}
	}
}

func TestChooseMechanism(t *testing.T) {
	tests := []struct {
		offered         string
		forced          string
		password, token bool
		want            string
	}{
		{"PLAIN LOGIN CRAM-MD5", "", true, false, MechPlain},
		{"CRAM-MD5 LOGIN", "", true, false, MechLogin},
		{"CRAM-MD5", "", true, false, MechCRAMMD5},
		{"PLAIN XOAUTH2 OAUTHBEARER", "", true, true, MechOAuthBearer},
		{"PLAIN XOAUTH2", "", false, true, MechXOAuth2},
		{"PLAIN XOAUTH2", "", true, false, MechPlain},
		{"PLAIN", "", false, true, ""},
		{"plain login", "", true, false, MechPlain},
		{"PLAIN LOGIN", MechLogin, true, false, MechLogin},
		{"PLAIN", MechLogin, true, false, ""},
	}
	for _, tt := range tests {
		got, err := chooseMechanism(strings.Fields(tt.offered), tt.forced, tt.password, tt.token)
		if got != tt.want || (tt.want == "") != (err != nil) {
			t.Errorf("chooseMechanism(%q, %q, %v, %v) = %q, %v; want %q", tt.offered, tt.forced, tt.password, tt.token, got, err, tt.want)
		}
	}
}

// TestCRAMMD5 checks the client against RFC 2195's example.
func TestCRAMMD5(t *testing.T) {
	c := &cramMD5Client{username: "tim", password: "tanstaaftanstaaf"}
	mech, ir, err := c.Start()
	if mech != MechCRAMMD5 || ir != nil || err != nil {
		t.Fatalf("Start() = %q, %q, %v", mech, ir, err)
	}
	resp, err := c.Next([]byte("<1896.697170952@postoffice.reston.mci.net>"))
	if err != nil || string(resp) != "tim b913a602c7eda7a495b4e6e7334d3890" {
		t.Fatalf("Next() = %q, %v", resp, err)
	}
	if _, err := c.Next([]byte("again")); err == nil {
		t.Error("second challenge accepted")
	}
}

func TestXOAUTH2Client(t *testing.T) {
	c := &xoauth2Client{username: "u@example.com", token: "T"}
	mech, ir, _ := c.Start()
	if mech != MechXOAuth2 || string(ir) != "user=u@example.com\x01auth=Bearer T\x01\x01" {
		t.Fatalf("Start() = %q, %q", mech, ir)
	}
	resp, err := c.Next([]byte(`{"status":"401"}`))
	if err != nil || resp == nil || len(resp) != 0 {
		t.Fatalf("Next(error challenge) = %q, %v; want an empty response", resp, err)
	}
}

func TestConfigErrors(t *testing.T) {
	pw := func(context.Context) (string, error) { return "", nil }
	tok := func(context.Context, bool) (string, error) { return "", nil }
	tests := []struct {
		cfg  Config
		want string
	}{
		{Config{Address: "mx.test"}, "not host:port"},
		{Config{Address: "mx.test:25", TLS: "ssl"}, "unknown TLS mode"},
		{Config{Address: "mx.test:25", Hostname: "bad name"}, "white space"},
		{Config{Address: "mx.test:25", Username: "u"}, "neither a password nor a token"},
		{Config{Address: "mx.test:25", Username: "u", Password: pw, AuthMechanism: "DIGEST-MD5"}, "unsupported AUTH mechanism"},
		{Config{Address: "mx.test:25", Username: "u", Password: pw, AuthMechanism: "XOAUTH2"}, "needs a token"},
		{Config{Address: "mx.test:25", Username: "u", Token: tok, AuthMechanism: "PLAIN"}, "needs a password"},
		{Config{Address: "mx.test:25", TLSMinVersion: "1.1"}, "not supported"},
		{Config{Address: "mx.test:25", TLSFingerprint: "abc"}, "not a SHA-256 fingerprint"},
		{Config{Address: "mx.test:25", CAFile: "/nonexistent/ca.pem"}, "reading CA file"},
		{Config{Address: "mx.test:25", ClientCert: pki.clientCert}, "together"},
	}
	for _, tt := range tests {
		_, err := Dial(context.Background(), &tt.cfg)
		if err == nil {
			t.Errorf("Dial(%+v) succeeded", tt.cfg)
			continue
		}
		e := asError(t, err, StepConfig)
		if !strings.Contains(e.Error(), tt.want) {
			t.Errorf("Dial(%+v): %v; want %q", tt.cfg, e, tt.want)
		}
	}
}

// TestDebugLog feeds the redactor a dialogue in awkward chunks.
func TestDebugLog(t *testing.T) {
	var out bytes.Buffer
	d := newDebugLog(&out)
	plain := base64.StdEncoding.EncodeToString([]byte("\x00" + testUser + "\x00" + testPassword))
	stream := []string{
		"220 mx.test ESMTP\r\n",
		"EHLO client.test\r\n",
		"250-mx.test\r\n250-AUTH PLAIN LOGIN\r\n25", "0 SIZE\r\n",
		"AUTH PLAIN " + plain + "\r\n",
		"535 5.7.8 Authentication failed\r\n",
		"AUTH LOGIN\r\n",
		"334 VXNlcm5hbWU6\r\n",
		base64.StdEncoding.EncodeToString([]byte(testUser)) + "\r\n",
		"334 UGFzc3dvcmQ6\r\n",
		base64.StdEncoding.EncodeToString([]byte(testPassword)) + "\r\n",
		"235 2.7.0 Authentication successful\r\n",
		"MAIL FROM:<a@client.test>\r\n",
		"250 2.1.0 Ok\r\n",
		"DATA\r\n",
		"354 go ahead\r\n",
	}
	for _, s := range stream {
		d.Write([]byte(s))
	}
	d.beginData()
	for _, s := range []string{"Subject: " + testPassword + "\r\n\r\n..dot\r\n", "body\r", "\n.", "\r\n"} {
		d.Write([]byte(s))
	}
	d.Write([]byte("250 2.0.0 queued\r\nQUIT\r\n"))
	got := out.String()
	assertNoSecrets(t, "debug log", got)
	want := strings.Join([]string{
		"220 mx.test ESMTP",
		">>> EHLO client.test",
		"250-mx.test",
		"250-AUTH PLAIN LOGIN",
		"250 SIZE",
		">>> AUTH PLAIN <redacted>",
		"535 5.7.8 Authentication failed",
		">>> AUTH LOGIN",
		"334 <redacted>",
		">>> <redacted>",
		"334 <redacted>",
		">>> <redacted>",
		"235 2.7.0 Authentication successful",
		">>> MAIL FROM:<a@client.test>",
		"250 2.1.0 Ok",
		">>> DATA",
		"354 go ahead",
		fmt.Sprintf(">>> [message content: %d bytes]", len("Subject: "+testPassword+"\r\n\r\n..dot\r\nbody\r\n")),
		">>> .",
		"250 2.0.0 queued",
		">>> QUIT",
		"",
	}, "\n")
	if got != want {
		t.Errorf("debug log:\n%s\nwant:\n%s", got, want)
	}
}
