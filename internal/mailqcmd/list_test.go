package mailqcmd

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/postie-mail/postie/internal/config"
	"github.com/postie-mail/postie/internal/spool"
)

// refJSON and refHuman are the listing as mailq printed it when it held
// the whole queue: the streaming printers must print the same bytes.
func refJSON(w io.Writer, entries []spool.Entry) error {
	out := make([]jsonEntry, len(entries))
	for i, e := range entries {
		out[i] = toJSON(e, false)
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

func refHuman(w io.Writer, entries []spool.Entry) {
	if len(entries) == 0 {
		fmt.Fprintln(w, "Mail queue is empty")
		return
	}
	fmt.Fprintf(w, "%-17s %8s %-20s  %s\n", "-Queue ID--------", "--Size--", "----Arrival Time----", "-Sender/Recipient-------")
	var total int64
	for _, e := range entries {
		mark := " "
		switch e.Status {
		case "sending":
			mark = "*"
		case "held":
			mark = "!"
		case "uncertain":
			mark = "?"
		}
		sender := e.Env.Sender
		if sender == "" {
			sender = "MAILER-DAEMON"
		}
		fmt.Fprintf(w, "%s%s %8d %-20s  %s\n", e.Env.ID, mark, e.Env.Size, e.Env.Arrival.Local().Format("Mon Jan _2 15:04:05"), sender)
		switch {
		case e.Status == "held":
			fmt.Fprintf(w, "%48s(held: %s)\n", "", e.State.Held)
		case e.Status == "uncertain":
			fmt.Fprintf(w, "%48s(delivery uncertain, message-id %s: %s)\n", "", e.Env.MessageID, clip(e.State.LastError, 200))
		case e.State.LastError != "":
			fmt.Fprintf(w, "%48s(%s)\n", "", clip(e.State.LastError, 200))
		}
		for _, r := range e.State.Pending(e.Env) {
			fmt.Fprintf(w, "%48s%s\n", "", r)
		}
		fmt.Fprintln(w)
		total += e.Env.Size
	}
	n := len(entries)
	req := "Requests"
	if n == 1 {
		req = "Request"
	}
	fmt.Fprintf(w, "-- %d Kbytes in %d %s.\n", (total+1023)/1024, n, req)
}

// trickyStrings are what encoding/json escapes, or could be thought to.
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
