package dkimsign

import (
	"bufio"
	"errors"
	"io"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-message"
	"github.com/emersion/go-message/mail"
	"github.com/emersion/go-message/textproto"
	"github.com/emersion/go-msgauth/dkim"
)

func TestReadHeaderSection(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		wantRaw string // "" means in up to and including the blank line
		counts  map[string]int
	}{
		{name: "simple", in: "From: a@x\r\nTo: b@y\r\n\r\nbody\r\n", counts: map[string]int{"from": 1, "to": 1}},
		{name: "repeated, any case", in: "To: a\r\nto: b\r\nTO : c\r\nsubject: s\r\nReceived: r\r\n\r\n", counts: map[string]int{"to": 3, "subject": 1}},
		{name: "folded", in: "Subject: a\r\n b\r\n\tc\r\nTo: x\r\n   \r\n y\r\n\r\nbody", counts: map[string]int{"subject": 1, "to": 1}},
		{name: "continuation looks like a field", in: "Subject: a\r\n To: not a field\r\n\r\n", counts: map[string]int{"subject": 1}},
		{name: "colon on a continuation line", in: "Subject\r\n : x\r\n\r\n", counts: map[string]int{"subject": 1}},
		{name: "LF line endings", in: "From: a\nCc: b\n\nbody\n", counts: map[string]int{"from": 1, "cc": 1}},
		{name: "no blank line", in: "From: a\r\nSubject: s\r\n", wantRaw: "From: a\r\nSubject: s\r\n\r\n", counts: map[string]int{"from": 1, "subject": 1}},
		{name: "no final CRLF", in: "From: a\r\nSubject: s", wantRaw: "From: a\r\nSubject: s\r\n\r\n", counts: map[string]int{"from": 1, "subject": 1}},
		{name: "ends in CR", in: "From: a\r\nSubject: s\r", wantRaw: "From: a\r\nSubject: s\r\n\r\n", counts: map[string]int{"from": 1, "subject": 1}},
		{name: "empty", in: "", wantRaw: "\r\n", counts: map[string]int{}},
		{name: "body only", in: "\r\nbody\r\n", wantRaw: "\r\n", counts: map[string]int{}},
		{name: "line longer than the buffer", in: "Subject: " + strings.Repeat("s", 200<<10) + "\r\nFrom: a\r\n\r\nbody", counts: map[string]int{"subject": 1, "from": 1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			br := bufio.NewReaderSize(strings.NewReader(tc.in), 16)
			raw, counts, err := readHeaderSection(br)
			tcheck(t, err, "readHeaderSection")
			want := tc.wantRaw
			if want == "" {
				i := strings.Index(tc.in, "\r\n\r\n")
				if i < 0 {
					i = strings.Index(tc.in, "\n\n") - 2
					want = tc.in[:i+4]
				} else {
					want = tc.in[:i+4]
				}
			}
			if string(raw) != want {
				t.Errorf("raw = %q, want %q", raw, want)
			}
			rest, _ := io.ReadAll(br)
			if string(raw)+string(rest) != tc.in && tc.wantRaw == "" {
				t.Errorf("header %q and rest %q do not make the input", raw, rest)
			}
			for _, f := range signedFields {
				lf := strings.ToLower(f)
				if counts[lf] != tc.counts[lf] {
					t.Errorf("count[%s] = %d, want %d", lf, counts[lf], tc.counts[lf])
				}
			}
		})
	}
}

func TestReadHeaderSectionTooLarge(t *testing.T) {
	in := strings.Repeat("X-Filler: "+strings.Repeat("x", 100)+"\r\n", MaxHeaderBytes/100) + "\r\nbody"
	_, _, err := readHeaderSection(bufio.NewReader(strings.NewReader(in)))
	if !errors.Is(err, errHeaderTooLarge) {
		t.Fatalf("err = %v, want %v", err, errHeaderTooLarge)
	}
}

// TestOverSigning checks h= of each signature: every one of signedFields
// once more than the message has it, From first.
func TestOverSigning(t *testing.T) {
	keys := testKeys(t)
	s := NewSigner(keys)
	for _, m := range testMessages {
		if m.gen != nil {
			continue
		}
		t.Run(m.name, func(t *testing.T) {
			_, counts, err := readHeaderSection(bufio.NewReader(strings.NewReader(m.msg)))
			tcheck(t, err, "reading header")
			sig, err := s.Sign("example.com", strings.NewReader(m.msg))
			tcheck(t, err, "Sign")
			for _, tags := range sigTags(t, sig) {
				h := strings.Split(tags["h"], ":")
				if !strings.EqualFold(h[0], "From") {
					t.Errorf("h=%s does not start with From", tags["h"])
				}
				got := make(map[string]int)
				for _, f := range h {
					got[strings.ToLower(f)]++
				}
				for _, f := range signedFields {
					lf := strings.ToLower(f)
					if got[lf] != counts[lf]+1 {
						t.Errorf("h= has %s %d times, message %d times; want %d", f, got[lf], counts[lf], counts[lf]+1)
					}
				}
				if len(got) != len(signedFields) {
					t.Errorf("h=%s has fields not in signedFields", tags["h"])
				}
				if tags["c"] != "relaxed/relaxed" {
					t.Errorf("c=%s, want relaxed/relaxed", tags["c"])
				}
			}
		})
	}
	// A message with all fields twice: every field three times in h=.
	var hdr strings.Builder
	for range 2 {
		for _, f := range signedFields {
			hdr.WriteString(f + ": x\r\n")
		}
	}
	sig, err := s.Sign("example.com", strings.NewReader(hdr.String()+"\r\nbody\r\n"))
	tcheck(t, err, "Sign")
	if h := sigTags(t, sig)[0]["h"]; strings.Count(h, ":")+1 != 3*len(signedFields) {
		t.Errorf("h=%s: want each of %d fields 3 times", h, len(signedFields))
	}
}

func TestSignTags(t *testing.T) {
	keys := testKeys(t)
	s := NewSigner(keys)
	now := time.Unix(1700000000, 0)
	s.now = func() time.Time { return now }
	msg := testMessages[0].msg
	for _, tc := range []struct {
		domain string
		want   []map[string]string // tags that must have these values
		x      bool
	}{
		{"example.com", []map[string]string{
			{"a": "rsa-sha256", "d": "example.com", "s": "rsa2048", "c": "relaxed/relaxed", "v": "1"},
			{"a": "ed25519-sha256", "d": "example.com", "s": "ed", "c": "relaxed/relaxed", "v": "1"},
		}, false},
		{"SIMPLE.example.", []map[string]string{
			{"a": "rsa-sha256", "d": "simple.example", "s": "rsa", "c": "simple/simple"},
			{"a": "ed25519-sha256", "d": "simple.example", "s": "ed", "c": "simple/simple"},
		}, false},
		{"openssl.example", []map[string]string{
			{"a": "rsa-sha256", "d": "openssl.example", "s": "rsa1024", "c": "relaxed/simple", "x": strconv.FormatInt(now.Add(24*time.Hour).Unix(), 10)},
			{"a": "ed25519-sha256", "d": "openssl.example", "s": "ed", "c": "relaxed/simple", "x": strconv.FormatInt(now.Add(24*time.Hour).Unix(), 10)},
		}, true},
	} {
		sig, err := s.Sign(tc.domain, strings.NewReader(msg))
		tcheck(t, err, "Sign")
		checkSignatureFields(t, sig, len(tc.want))
		all := sigTags(t, sig)
		if len(all) != len(tc.want) {
			t.Fatalf("%s: %d signatures, want %d", tc.domain, len(all), len(tc.want))
		}
		for i, want := range tc.want {
			for k, v := range want {
				if all[i][k] != v {
					t.Errorf("%s signature %d: %s=%q, want %q", tc.domain, i, k, all[i][k], v)
				}
			}
			if _, ok := all[i]["x"]; ok != tc.x {
				t.Errorf("%s signature %d: x= present %v, want %v", tc.domain, i, ok, tc.x)
			}
			if all[i]["b"] == "" || all[i]["bh"] == "" || all[i]["t"] == "" {
				t.Errorf("%s signature %d: missing b=, bh= or t=: %v", tc.domain, i, all[i])
			}
		}
	}
}

type failingReader struct{ n int }

func (r *failingReader) Read(p []byte) (int, error) {
	if r.n <= 0 {
		return 0, errors.New("disk on fire")
	}
	n := min(len(p), r.n)
	for i := range n {
		p[i] = 'x'
	}
	copy(p, "From: a@example.com\r\n\r\n")
	r.n -= n
	return n, nil
}

func TestSignErrors(t *testing.T) {
	s := NewSigner(testKeys(t))
	goroutinesBefore := runtime.NumGoroutine()
	if _, err := s.Sign("example.com", &failingReader{n: 100 << 10}); err == nil || !strings.Contains(err.Error(), "disk on fire") {
		t.Errorf("Sign of a failing reader: err = %v", err)
	}
	if _, err := s.Sign("example.com", &failingReader{n: 10}); err == nil || !strings.Contains(err.Error(), "disk on fire") {
		t.Errorf("Sign of a reader failing in the header: err = %v", err)
	}
	big := strings.NewReader("X-A: " + strings.Repeat("a", MaxHeaderBytes) + "\r\n\r\n")
	if _, err := s.Sign("example.com", big); !errors.Is(err, errHeaderTooLarge) {
		t.Errorf("Sign of a huge header: err = %v", err)
	}
	manyCc := "From: a@example.com\r\n" + strings.Repeat("Cc: b@example.com\r\n", 300) + "\r\nbody\r\n"
	if _, err := s.Sign("example.com", strings.NewReader(manyCc)); err == nil || !strings.Contains(err.Error(), "too many header fields") {
		t.Errorf("Sign with 300 Cc fields: err = %v", err)
	}
	// 100 Cc fields still fit in h= (and verify).
	manyCc = "From: a@example.com\r\n" + strings.Repeat("Cc: b@example.com\r\n", 100) + "\r\nbody\r\n"
	sig, err := s.Sign("example.com", strings.NewReader(manyCc))
	tcheck(t, err, "Sign with 100 Cc fields")
	checkSignatureFields(t, sig, 2)
	vs, err := dkim.VerifyWithOptions(strings.NewReader(sig+manyCc), &dkim.VerifyOptions{LookupTXT: txtLookup(s.keys)})
	tcheck(t, err, "verify")
	for _, v := range vs {
		tcheck(t, v.Err, "verifying the signature of 100 Cc fields")
	}
	// No goroutine of go-msgauth's signers outlives Sign, failed or not.
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > goroutinesBefore && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > goroutinesBefore {
		t.Errorf("%d goroutines after failed signings, %d before", n, goroutinesBefore)
	}
}

// TestSignNoKey: no key for the domain, no signature, and the message is
// not read at all.
func TestSignNoKey(t *testing.T) {
	s := NewSigner(testKeys(t))
	for _, d := range []string{"example.net", "sub.example.com", "", "xample.com"} {
		r := &failingReader{}
		sig, err := s.Sign(d, r)
		if sig != "" || err != nil {
			t.Errorf("Sign(%q) = %q, %v; want no signature and no error", d, sig, err)
		}
	}
	if sig, err := NewSigner(nil).Sign("example.com", strings.NewReader("From: a@example.com\r\n\r\n")); sig != "" || err != nil {
		t.Errorf("Sign with no keys = %q, %v", sig, err)
	}
}

func TestKeysFor(t *testing.T) {
	keys := testKeys(t)
	_, ek := keyMaterial(t)
	idn := loadKey(t, KeyConfig{Domain: "Bücher.Example", Selector: "s", PrivateKeyFile: writePEM(t, t.TempDir(), "k.pem", "PRIVATE KEY", pkcs8(t, ek), 0o600)})
	s := NewSigner(append(keys, idn))
	for _, tc := range []struct {
		domain string
		want   []string
	}{
		{"example.com", []string{"rsa2048", "ed"}},
		{"EXAMPLE.Com", []string{"rsa2048", "ed"}},
		{"example.com.", []string{"rsa2048", "ed"}},
		{"openssl.example", []string{"rsa1024", "ed"}},
		{"sub.example.com", nil},
		{"example.org", nil},
		{"", nil},
		{"bücher.example", []string{"s"}},
		{"BÜCHER.example", []string{"s"}},
		{"xn--bcher-kva.example", []string{"s"}},
	} {
		var got []string
		for _, k := range s.KeysFor(tc.domain) {
			got = append(got, k.selector)
		}
		if strings.Join(got, ",") != strings.Join(tc.want, ",") {
			t.Errorf("KeysFor(%q) = %v, want %v", tc.domain, got, tc.want)
		}
	}
}

func TestFromDomain(t *testing.T) {
	for _, tc := range []struct {
		header  string
		want    string
		wantErr string
	}{
		{"From: Alice <alice@Example.COM>\r\n", "example.com", ""},
		{"From: alice@example.com, bob@example.org\r\nSender: alice@example.com\r\n", "example.com", ""},
		{"Subject: x\r\nFrom: \"Doe, Jane\" <jane@sub.example.net>\r\nFrom: other@example.org\r\n", "sub.example.net", ""},
		{"From: =?koi8-r?B?8NLJ18XU?= <ivan@example.ru>\r\n", "example.ru", ""},
		{"From: =?utf-8?Q?J=C3=BCrgen?= <j@bücher.example>\r\n", "bücher.example", ""},
		{"From: user@example.com (a comment)\r\n", "example.com", ""},
		{"From: undisclosed-recipients:;\r\n", "", "no From address"},
		{"To: bob@example.com\r\n", "", "no From address"},
		{"From: <<<>\r\n", "", "From field"},
	} {
		h, err := textproto.ReadHeader(bufio.NewReader(strings.NewReader(tc.header + "\r\n")))
		tcheck(t, err, "reading header")
		got, err := FromDomain(mail.Header{Header: message.Header{Header: h}})
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("FromDomain(%q) = %q, %v; want error %q", tc.header, got, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("FromDomain(%q) = %q, %v; want %q", tc.header, got, err, tc.want)
		}
		// ReadFromDomain reads the header section of a whole message.
		r := io.MultiReader(strings.NewReader(tc.header+"\r\n"), &failingReader{})
		if got, err := ReadFromDomain(r); err != nil || got != tc.want {
			t.Errorf("ReadFromDomain(%q) = %q, %v; want %q", tc.header, got, err, tc.want)
		}
	}
	// A malformed line after From does not matter; before it, it does.
	if d, err := ReadFromDomain(strings.NewReader("From: a@example.com\r\nbroken line\r\n\r\n")); d != "example.com" || err != nil {
		t.Errorf("ReadFromDomain, broken line after From = %q, %v", d, err)
	}
	if _, err := ReadFromDomain(strings.NewReader("broken line\r\nFrom: a@example.com\r\n\r\n")); err == nil {
		t.Errorf("ReadFromDomain, broken line before From: no error")
	}
}
