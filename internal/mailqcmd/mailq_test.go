package mailqcmd

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/postie-mail/postie/internal/address"
	"github.com/postie-mail/postie/internal/enqueue"
	"github.com/postie-mail/postie/internal/spool"
	"github.com/postie-mail/postie/internal/testsink"
)

type env struct {
	t       *testing.T
	dir     string
	cfgPath string
	sink    *testsink.Sink
	sp      *spool.Spool
}

func setup(t *testing.T, sinkOpts *testsink.Options, extra string) *env {
	t.Helper()
	dir := t.TempDir()
	e := &env{t: t, dir: dir}
	cfg := fmt.Sprintf("hostname = \"web1.example.com\"\nspool_dir = %q\n[log]\ntarget = \"stderr\"\n", filepath.Join(dir, "spool"))
	if sinkOpts != nil {
		s, err := testsink.Start(*sinkOpts)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		e.sink = s
		pw := filepath.Join(dir, "pw")
		os.WriteFile(pw, []byte("secret\n"), 0o600)
		tlsMode := sinkOpts.TLS
		if tlsMode == "" {
			tlsMode = "starttls"
		}
		cfg += fmt.Sprintf("[smarthost]\naddress = %q\ntls = %q\nusername = \"u\"\npassword_file = %q\nca_file = %q\nconnect_timeout = \"3s\"\ncommand_timeout = \"3s\"\n",
			s.Addr, tlsMode, pw, s.CAFile)
	}
	cfg += extra
	e.cfgPath = filepath.Join(dir, "postie.toml")
	os.WriteFile(e.cfgPath, []byte(cfg), 0o644)
	e.sp = spool.New(filepath.Join(dir, "spool"))
	if err := e.sp.Init(); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *env) enqueue(user string, uid int, to string) string {
	e.t.Helper()
	from := "alice@example.com"
	res, err := enqueue.Enqueue(&enqueue.Env{
		Hostname: "web1.example.com",
		Resolver: &address.Resolver{Aliases: address.Aliases{}, Hostname: "web1.example.com"},
		Spool:    e.sp, Caller: enqueue.Caller{UID: uid, User: user}, Now: time.Now,
	}, &enqueue.Request{Sender: &from, Recipients: []string{to}}, strings.NewReader("Subject: hi\n\nbody\n"))
	if err != nil {
		e.t.Fatal(err)
	}
	return res.ID
}

func (e *env) mailq(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := Main(append([]string{"mailq", "-C", e.cfgPath}, args...), IO{In: strings.NewReader(""), Out: &out, Err: &errb})
	return code, out.String(), errb.String()
}

func (e *env) json() []map[string]any {
	e.t.Helper()
	code, out, errs := e.mailq("--json")
	if code != 0 {
		e.t.Fatalf("mailq --json: %d %s", code, errs)
	}
	var v []map[string]any
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		e.t.Fatalf("json: %v\n%s", err, out)
	}
	return v
}

func TestEmptyQueue(t *testing.T) {
	e := setup(t, nil, "")
	if code, out, _ := e.mailq(); code != 0 || out != "Mail queue is empty\n" {
		t.Errorf("mailq = %d %q", code, out)
	}
	if code, out, _ := e.mailq("--json"); code != 0 || strings.TrimSpace(out) != "[]" {
		t.Errorf("mailq --json = %d %q", code, out)
	}
}

// The --json fields are a contract with other tools.
func TestJSONContract(t *testing.T) {
	e := setup(t, nil, "")
	id := e.enqueue("alice", 1000, "bob@example.org")
	v := e.json()
	if len(v) != 1 {
		t.Fatalf("entries = %d", len(v))
	}
	m := v[0]
	for _, k := range []string{"id", "size", "arrival", "sender", "recipients", "attempts", "next_attempt", "last_error", "state"} {
		if _, ok := m[k]; !ok {
			t.Errorf("field %q missing", k)
		}
	}
	if m["id"] != id || m["sender"] != "alice@example.com" || m["state"] != "queued" || m["next_attempt"] != nil || m["last_error"] != nil {
		t.Errorf("entry %v", m)
	}
	if _, err := time.Parse(time.RFC3339, m["arrival"].(string)); err != nil {
		t.Errorf("arrival: %v", err)
	}
	if r := m["recipients"].([]any); len(r) != 1 || r[0] != "bob@example.org" {
		t.Errorf("recipients %v", r)
	}
	if m["user"] != "alice" || m["uid"].(float64) != 1000 {
		t.Errorf("user/uid %v %v", m["user"], m["uid"])
	}
}

func TestFlushNoSmarthost(t *testing.T) {
	e := setup(t, nil, "")
	e.enqueue("alice", 1000, "bob@example.org")
	code, _, errs := e.mailq("-q")
	if code != 75 || !strings.Contains(errs, "no smarthost configured") {
		t.Errorf("mailq -q = %d %q", code, errs)
	}
	v := e.json()
	if v[0]["state"] != "deferred" || !strings.Contains(v[0]["last_error"].(string), "no smarthost") {
		t.Errorf("entry %v", v[0])
	}
}

func TestAdminSession(t *testing.T) {
	e := setup(t, &testsink.Options{Users: map[string]string{"u": "secret"}, RequireAuth: true}, "")
	a := e.enqueue("alice", 1000, "a@example.org")
	b := e.enqueue("alice", 1000, "b@example.org")
	c := e.enqueue("alice", 1000, "c@example.org")
	e.sp.Pickup()
	if code, out, errs := e.mailq("--hold", a); code != 0 || !strings.Contains(out, "held") {
		t.Fatalf("hold: %d %q %q", code, out, errs)
	}
	if code, _, _ := e.mailq("-d", c); code != 0 {
		t.Fatalf("delete failed")
	}
	if code, out, _ := e.mailq("-s", b); code != 0 || !strings.Contains(out, "Subject: hi") || !strings.Contains(out, `"recipients"`) {
		t.Errorf("show: %d %q", code, out)
	}
	if code, _, errs := e.mailq("-q"); code != 0 {
		t.Fatalf("flush: %d %s", code, errs)
	}
	if n := e.sink.Count(); n != 1 {
		t.Fatalf("delivered %d, want 1 (b only)", n)
	}
	v := e.json()
	if len(v) != 1 || v[0]["id"] != a || v[0]["state"] != "held" {
		t.Fatalf("queue %v", v)
	}
	if code, out, _ := e.mailq(); code != 0 || !strings.Contains(out, a+"!") || !strings.Contains(out, "(held: by administrator)") {
		t.Errorf("human listing:\n%s", out)
	}
	e.mailq("--release", a)
	if code, _, _ := e.mailq("-q", a); code != 0 || e.sink.Count() != 2 {
		t.Errorf("after release: delivered %d", e.sink.Count())
	}
	if code, _, errs := e.mailq("-d", "NOTANID"); code != 64 || !strings.Contains(errs, "not a queue ID") {
		t.Errorf("bad id: %d %q", code, errs)
	}
}

func TestFilters(t *testing.T) {
	e := setup(t, nil, "")
	e.enqueue("alice", 1000, "a@example.org")
	e.enqueue("bob", 1001, "b@example.net")
	code, out, _ := e.mailq("--json", "--user", "bob")
	if code != 0 || !strings.Contains(out, "b@example.net") || strings.Contains(out, "a@example.org") {
		t.Errorf("--user bob: %s", out)
	}
	_, out, _ = e.mailq("--json", "--recipient", "example.org")
	if !strings.Contains(out, "a@example.org") || strings.Contains(out, "b@example.net") {
		t.Errorf("--recipient: %s", out)
	}
	_, out, _ = e.mailq("--json", "--state", "held")
	if strings.TrimSpace(out) != "[]" {
		t.Errorf("--state held: %s", out)
	}
}

func TestCheck(t *testing.T) {
	good := &testsink.Options{Users: map[string]string{"u": "secret"}, RequireAuth: true}
	old, oldPEM, err := testsink.SelfSignedValid(time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour), "localhost", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	expired := &testsink.Options{Users: map[string]string{"u": "secret"}, RequireAuth: true, Cert: old, CertPEM: oldPEM}
	tests := []struct {
		name  string
		sink  *testsink.Options
		extra string
		patch func(e *env)
		code  int
		want  []string
	}{
		{"good", good, "", nil, 0, []string{"ok    connect", "ok    tls", "verified", "ok    auth", "PLAIN as u"}},
		{"no smarthost", nil, "", nil, 78, []string{"FAIL  smarthost", "no smarthost configured"}},
		{"wrong password", &testsink.Options{Users: map[string]string{"u": "other"}, RequireAuth: true}, "", nil, 78, []string{"FAIL  auth", "535", "check [smarthost] username and the password"}},
		{"no STARTTLS", &testsink.Options{TLS: "none", Users: map[string]string{"u": "secret"}}, "", func(e *env) {
			b, _ := os.ReadFile(e.cfgPath)
			os.WriteFile(e.cfgPath, bytes.Replace(b, []byte(`tls = "none"`), []byte(`tls = "starttls"`), 1), 0o644)
		}, 78, []string{"FAIL  tls", "STARTTLS"}},
		{"untrusted certificate", good, "", func(e *env) {
			b, _ := os.ReadFile(e.cfgPath)
			os.WriteFile(e.cfgPath, bytes.Replace(b, []byte("ca_file"), []byte("#ca_file"), 1), 0o644)
		}, 78, []string{"FAIL  tls", "ca_file"}},
		{"expired certificate", expired, "", nil, 78, []string{"FAIL  tls", "expired"}},
		{"world-readable password file", good, "", func(e *env) { os.Chmod(filepath.Join(e.dir, "pw"), 0o644) }, 78, []string{"FAIL  password", "mode 0644"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := setup(t, tt.sink, tt.extra)
			if tt.patch != nil {
				tt.patch(e)
			}
			code, out, errs := e.mailq("--check")
			if code != tt.code {
				t.Errorf("exit %d, want %d\n%s%s", code, tt.code, out, errs)
			}
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			if strings.Contains(out+errs, "secret") {
				t.Errorf("password in output")
			}
			if e.sink != nil && e.sink.Count() != 0 {
				t.Errorf("--check sent a message")
			}
		})
	}
}

func TestCheckProbe(t *testing.T) {
	e := setup(t, &testsink.Options{Users: map[string]string{"u": "secret"}, RequireAuth: true}, "")
	e.sink.SetFault(testsink.Fault{Rcpt: func(to string) error {
		if to == "nobody@example.org" {
			return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "No such user"}
		}
		return nil
	}})
	if code, out, _ := e.mailq("--check", "bob@example.org"); code != 0 || !strings.Contains(out, "ok    rcpt") && !strings.Contains(out, "ok    probe") {
		t.Errorf("probe ok: %d\n%s", code, out)
	}
	if code, out, _ := e.mailq("--check", "nobody@example.org"); code != 78 || !strings.Contains(out, "FAIL  rcpt") || !strings.Contains(out, "No such user") {
		t.Errorf("probe fail: %d\n%s", code, out)
	}
	if e.sink.Count() != 0 {
		t.Error("probe sent mail")
	}
}

func TestPerUserRelease(t *testing.T) {
	e := setup(t, nil, "")
	for _, u := range []string{"mallory", "mallory", "alice"} {
		w, _ := e.sp.Create(time.Now())
		w.Write([]byte("Subject: x\r\n\r\n"))
		uid := 1000
		if u == "mallory" {
			uid = 1002
		}
		w.Commit(&spool.Envelope{Sender: u + "@x", Recipients: []string{"r@x"}, Arrival: time.Now(), UID: uid, User: u, HeldReason: "rate limit"})
	}
	code, out, _ := e.mailq("--release-user", "mallory")
	if code != 0 || !strings.Contains(out, "2 held message(s) from mallory released") {
		t.Fatalf("release-user: %d %q", code, out)
	}
	code, out, _ = e.mailq("--delete-user", "1000")
	if code != 0 || !strings.Contains(out, "1 held message(s) from 1000 deleted") {
		t.Fatalf("delete-user: %d %q", code, out)
	}
	v := e.json()
	if len(v) != 2 || v[0]["state"] != "queued" {
		t.Fatalf("queue %v", v)
	}
}

func TestExpireNow(t *testing.T) {
	e := setup(t, &testsink.Options{Users: map[string]string{"u": "secret"}, RequireAuth: true}, "")
	id := e.enqueue("alice", 1000, "bob@example.org")
	e.sp.Pickup()
	e.mailq("--hold", id)
	code, out, errs := e.mailq("--expire", id)
	if code != 0 || !strings.Contains(out, "1 message(s) returned") {
		t.Fatalf("expire: %d %q %q", code, out, errs)
	}
	// The bounce went out in the same run, to the sender, from <>.
	msgs := e.sink.Messages()
	if len(msgs) != 1 || msgs[0].From != "" || msgs[0].To[0] != "alice@example.com" || !bytes.Contains(msgs[0].Data, []byte("returned to sender by the mail administrator")) {
		t.Fatalf("bounce: %+v", msgs)
	}
	if v := e.json(); len(v) != 0 {
		t.Errorf("queue %v", v)
	}
}

// TestSubmissionHoldInQueue: a message held at submission keeps its hold
// once picked up, though pickup writes no state file for it (so a pickup
// stopped at any instant cannot drop the hold): a flush leaves it, a
// release lets it go.
func TestSubmissionHoldInQueue(t *testing.T) {
	e := setup(t, &testsink.Options{Users: map[string]string{"u": "secret"}, RequireAuth: true}, "")
	w, err := e.sp.Create(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("Subject: x\r\n\r\n"))
	if err := w.Commit(&spool.Envelope{Sender: "mallory@x", Recipients: []string{"r@x"}, Arrival: time.Now(), UID: 1002, User: "mallory", HeldReason: "rate limit"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.sp.Pickup(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(e.sp.Dir, spool.QueueDir, w.ID+".state")); !os.IsNotExist(err) {
		t.Fatalf("state file after pickup: %v", err)
	}
	if code, _, errs := e.mailq("-q"); code != 0 {
		t.Fatalf("flush: %d %s", code, errs)
	}
	if n := e.sink.Count(); n != 0 {
		t.Fatalf("held message delivered (%d)", n)
	}
	if v := e.json(); len(v) != 1 || v[0]["state"] != "held" || v[0]["held_reason"] != "rate limit" {
		t.Fatalf("queue after flush: %v", v)
	}
	if code, out, errs := e.mailq("--release", w.ID); code != 0 {
		t.Fatalf("release: %d %q %q", code, out, errs)
	}
	if code, _, errs := e.mailq("-q"); code != 0 {
		t.Fatalf("flush after release: %d %s", code, errs)
	}
	if n := e.sink.Count(); n != 1 {
		t.Fatalf("delivered %d after release, want 1", n)
	}
}
