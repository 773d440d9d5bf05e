package mailqcmd

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/postie-mail/postie/internal/config"
	"github.com/postie-mail/postie/internal/spool"
)

// refJSON is mailq --json as mailq printed it when it held the whole
// queue: the streaming printer must print the same bytes.
func refJSON(w io.Writer, entries []spool.Entry) error {
	out := make([]jsonEntry, len(entries))
	for i, e := range entries {
		out[i] = toJSON(e, false)
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

// refHuman is the human listing of entries, printed in one go; it shows
// that streaming (and filtering as entries stream) changes nothing. The
// layout itself is checked by checkHumanLayout.
func refHuman(w io.Writer, entries []spool.Entry) {
	p := newHumanPrinter(w)
	for _, e := range entries {
		p.add(e)
	}
	p.end()
}

// humanLines are the shapes of the lines of Postfix's mailq layout:
// the header, a message's line (ID, mark, size right-aligned in 8,
// arrival padded to 20, two spaces, sender), a note or recipient in column 48, a
// blank line between messages, and the summary.
var humanLines = []*regexp.Regexp{
	regexp.MustCompile(`^-Queue ID-------- --Size-- ----Arrival Time----  -Sender/Recipient-------$`),
	regexp.MustCompile(`^[0-9A-Z]{16}[ *!?] [ 0-9]{8} [A-Z][a-z]{2} [A-Z][a-z]{2} [ 1-3][0-9] [0-9]{2}:[0-9]{2}:[0-9]{2}   \S+$`),
	regexp.MustCompile(`^ {48}\S.*$`),
	regexp.MustCompile(`^$`),
	regexp.MustCompile(`^-- [0-9]+ Kbytes in [0-9]+ Requests?\.$`),
}

func checkHumanLayout(t *testing.T, out string, n int) {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if !humanLines[0].MatchString(lines[0]) {
		t.Errorf("header line %q", lines[0])
	}
	if last := lines[len(lines)-1]; !humanLines[4].MatchString(last) || !strings.Contains(last, fmt.Sprintf(" in %d Request", n)) {
		t.Errorf("summary line %q, want %d requests", last, n)
	}
	for _, l := range lines[1 : len(lines)-1] {
		if !humanLines[1].MatchString(l) && !humanLines[2].MatchString(l) && !humanLines[3].MatchString(l) {
			t.Errorf("line out of the layout: %q", l)
		}
	}
}

func tcheck(t *testing.T, err error, what string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// TestListingBytes lists a fixed queue with a message in every state and
// compares the bytes with the listing before it streamed.
func TestListingBytes(t *testing.T) {
	e := setup(t, nil, "")
	queued := e.enqueue("alice", 1000, "a@example.org")
	deferred := e.enqueue("bob", 1001, "b@example.org")
	held := e.enqueue("alice", 1000, "c@example.org")
	uncertain := e.enqueue("alice", 1000, "d@example.org")
	sending := e.enqueue("alice", 1000, "e@example.org")
	bounce := e.enqueue("alice", 1000, "f@example.org")
	e.sp.Pickup()
	incoming := e.enqueue("carol", 1002, "g@example.org")
	w, err := e.sp.Create(time.Now())
	tcheck(t, err, "create")
	w.Write([]byte("Subject: x\r\n\r\n"))
	tcheck(t, w.Commit(&spool.Envelope{Sender: "mallory@x", Recipients: []string{"r1@x", "r2@x"}, Arrival: time.Now(), UID: 1003, User: "mallory", HeldReason: "rate limit"}), "commit held")

	update := func(id string, fn func(st *spool.State)) {
		t.Helper()
		tcheck(t, e.sp.UpdateState(id, func(_ *spool.Envelope, st *spool.State) error { fn(st); return nil }), "update "+id)
	}
	update(deferred, func(st *spool.State) {
		st.Attempts = 2
		st.NextAttempt = time.Now().Add(time.Hour)
		st.LastError = "451 4.7.1 <b@example.org>: greylisted & \u2028 try\nlater " + strings.Repeat("x", 300)
		st.AddAttempt(spool.Attempt{Time: time.Now(), Relay: "smtp.example.com", Status: "deferred", Reply: "451 greylisted"})
	})
	update(held, func(st *spool.State) { st.Held = "by administrator" })
	update(bounce, func(st *spool.State) {
		st.Attempts = 1
		st.Remaining = []string{}
		st.Done = []string{"f@example.org"}
	})
	l, err := e.sp.Lock(uncertain)
	tcheck(t, err, "lock")
	tcheck(t, l.MarkSending(), "mark")
	l.Close()
	l, err = e.sp.Lock(sending)
	tcheck(t, err, "lock")
	defer l.Close()

	entries, err := e.sp.List()
	tcheck(t, err, "list")
	states := map[string]string{}
	for _, en := range entries {
		states[en.Env.ID] = en.Status
	}
	want := map[string]string{queued: "queued", deferred: "deferred", held: "held", uncertain: "uncertain", sending: "sending", bounce: "deferred", incoming: "queued", w.ID: "held"}
	if !reflect.DeepEqual(states, want) {
		t.Fatalf("states %v, want %v", states, want)
	}
	tests := []struct {
		name string
		args []string
		ref  func(w io.Writer, entries []spool.Entry)
	}{
		{"human", nil, refHuman},
		{"json", []string{"--json"}, func(w io.Writer, entries []spool.Entry) { refJSON(w, entries) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var ref bytes.Buffer
			tt.ref(&ref, entries)
			code, out, errs := e.mailq(tt.args...)
			if code != 0 || out != ref.String() {
				t.Errorf("mailq %v = %d %s\n%s\nwant\n%s", tt.args, code, errs, out, ref.String())
			}
			if tt.name == "human" {
				checkHumanLayout(t, out, len(entries))
				for _, want := range []string{held + "!", uncertain + "?", sending + "*", "(held: by administrator)", "(held: rate limit)", "(delivery uncertain, message-id "} {
					if !strings.Contains(out, want) {
						t.Errorf("listing lacks %q", want)
					}
				}
			}
			// And through a filter, which now applies as entries stream.
			var sel []spool.Entry
			for _, en := range entries {
				if en.Env.User == "alice" {
					sel = append(sel, en)
				}
			}
			ref.Reset()
			tt.ref(&ref, sel)
			code, out, errs = e.mailq(append(tt.args, "--user", "alice")...)
			if code != 0 || out != ref.String() {
				t.Errorf("mailq %v --user alice = %d %s\n%s\nwant\n%s", tt.args, code, errs, out, ref.String())
			}
		})
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestListWriteError(t *testing.T) {
	e := setup(t, nil, "")
	e.enqueue("alice", 1000, "a@example.org")
	cfg := &config.Config{SpoolDir: e.sp.Dir}
	for _, asJSON := range []bool{false, true} {
		var errb bytes.Buffer
		code := List(cfg, asJSON, IO{Out: failWriter{}, Err: &errb})
		if code != exTempFail || !strings.Contains(errb.String(), "write: disk full") {
			t.Errorf("json=%v: exit %d, %q", asJSON, code, errb.String())
		}
	}
}
