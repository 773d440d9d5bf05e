package clients_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestSendmailModes drives what sendmail leaves to the mailq program
// beside it: listing (-bp, and sendmail invoked as mailq), flushing (-q),
// and delivery right after the enqueue (deliver = "foreground", which
// sendmail waits for, and "background", which it does not).
func TestSendmailModes(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	msg := func(to string) []byte { return []byte("To: " + to + "\nSubject: modes\n\nbody\n") }
	r.mustRun(true, msg("a@example.com"), nil, bins.sendmail, "-t", "-i")

	if res := r.sendmail(nil, "-bp"); res.code != 0 || !strings.Contains(res.stdout, "a@example.com") {
		t.Errorf("sendmail -bp: %v", res)
	}
	// A link named mailq to sendmail, away from the real mailq: sendmail
	// finds mailq beside its own executable.
	link := filepath.Join(r.dir, "mailq")
	if err := os.Symlink(bins.sendmail, link); err != nil {
		t.Fatal(err)
	}
	res := r.run(nil, nil, link, "--json")
	var q []queued
	if err := json.Unmarshal([]byte(res.stdout), &q); res.code != 0 || err != nil || len(q) != 1 || q[0].Recipients[0] != "a@example.com" {
		t.Errorf("sendmail as mailq --json: %v (%v)", res, err)
	}
	if res := r.sendmail(nil, "-q"); res.code != 0 || r.sink.Count() != 1 {
		t.Errorf("sendmail -q: %v; %d delivered", res, r.sink.Count())
	}
	if res := r.sendmail(nil, "-q", "not-an-id"); res.code != 64 {
		t.Errorf("sendmail -q not-an-id: %v, want exit 64", res)
	}

	setDeliver := func(from, to string) {
		b, err := os.ReadFile(r.config)
		if err != nil {
			t.Fatal(err)
		}
		text := strings.Replace(string(b), `deliver = "`+from+`"`, `deliver = "`+to+`"`, 1)
		if err := os.WriteFile(r.config, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	setDeliver("queue", "foreground")
	if res := r.sendmail(msg("b@example.com"), "-t", "-i"); res.code != 0 || r.sink.Count() != 2 {
		t.Errorf("foreground: %v; %d delivered", res, r.sink.Count())
	}
	setDeliver("foreground", "background")
	if res := r.sendmail(msg("c@example.com"), "-t", "-i"); res.code != 0 || res.stderr != "" {
		t.Errorf("background: %v", res)
	}
	if !r.sink.Wait(3, 30*time.Second) {
		t.Errorf("background: %d delivered, want 3", r.sink.Count())
	}
}
