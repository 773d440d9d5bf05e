package torture

import (
	"bytes"
	"context"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/postie-mail/postie/internal/runner"
	"github.com/postie-mail/postie/internal/testsink"
)

// Bounce accounting found by TestFaults, pinned on its own.

// TestAllRejectedBounceStatus: when the only recipient is refused with
// "550 5.1.1", the bounce must report that status and reply, not a
// temporary-looking 4.0.0 and Postie's own words.
func TestAllRejectedBounceStatus(t *testing.T) {
	e := newBinEnv(t, "", 1)
	var bounce []byte
	e.sink.SetFault(testsink.Fault{
		Rcpt: func(to string) error {
			if strings.HasPrefix(to, "gone@") {
				return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "No such user"}
			}
			return nil
		},
		Data: func(m *testsink.Message) error {
			if m.From == "" {
				bounce = m.Data
			}
			return nil
		},
	})
	rng := rand.New(rand.NewPCG(11, 12))
	e.submit(t, newLetter(rng, "B1", "sender@torture.example", []string{"gone@dest.example"}, 1<<10))
	e.run(t, mailqBin, nil, "-q")
	if bounce == nil {
		t.Fatal("no bounce arrived")
	}
	for _, want := range []string{"Status: 5.1.1", "Diagnostic-Code: smtp; 550 5.1.1 No such user"} {
		if !bytes.Contains(bounce, []byte(want)) {
			i := bytes.Index(bounce, []byte("Final-Recipient"))
			t.Errorf("bounce lacks %q; its delivery-status part:\n%s", want, bounce[i:min(len(bounce), i+400)])
		}
	}
}

// TestTwoBouncesOneSecond: a message whose recipients fail in two
// attempts within the same second (one refused at once, one deferred and
// then refused) gets two bounces. They are different
// messages and must have different Message-IDs; receivers that drop
// duplicates by Message-ID would otherwise discard the second, and the
// sender would never learn that the second recipient failed.
func TestTwoBouncesOneSecond(t *testing.T) {
	h := newInProc(t, "")
	var second atomic.Bool
	h.sink.SetFault(testsink.Fault{
		Rcpt: func(to string) error {
			if strings.HasPrefix(to, "first@") || strings.HasPrefix(to, "second@") && second.Load() {
				return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "No such user"}
			}
			if strings.HasPrefix(to, "second@") {
				return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 2, 1}, Message: "Mailbox busy"}
			}
			return nil
		},
		Data: func(m *testsink.Message) error { h.rec.add(m); return nil },
	})
	rng := rand.New(rand.NewPCG(13, 14))
	h.enqueue(newLetter(rng, "B2", faultSender, []string{"ok@dest.example", "first@dest.example", "second@dest.example"}, 1<<10), faultSender)
	// Both attempts happen within one second of the clock.
	now := time.Now().Truncate(time.Second).Add(100 * time.Millisecond)
	for _, last := range []bool{false, true} {
		second.Store(last)
		r := h.runner()
		r.Now = func() time.Time { return now }
		_, err := r.Run(context.Background(), runner.Options{})
		tcheck(t, err, "run")
	}
	h.rec.mu.Lock()
	defer h.rec.mu.Unlock()
	if len(h.rec.dsns) != 2 {
		t.Fatalf("%d bounces, want 2 (one per failed recipient, in two attempts)", len(h.rec.dsns))
	}
	a, b := h.rec.dsns[0], h.rec.dsns[1]
	if a.MessageID == b.MessageID {
		t.Errorf("two different bounces (for %v and %v) share the Message-ID %s: dsn.Report.messageID is built from the time to the second and the queue ID only",
			a.Recipients, b.Recipients, a.MessageID)
	}
}

// TestDeliveredKeepsOtherRecipients: the connection drops after the final
// dot of a transaction in which one recipient was accepted, one refused
// with 550 and one deferred with 451. Only the accepted one may have got
// the message. When the administrator settles the uncertain message with
// mailq --delivered, the refused recipient must still be bounced and the
// deferred one still be owed; neither may vanish.
func TestDeliveredKeepsOtherRecipients(t *testing.T) {
	e := newBinEnv(t, "", 1)
	var faults atomic.Bool
	faults.Store(true)
	e.sink.SetFault(testsink.Fault{
		Rcpt: func(to string) error {
			switch {
			case strings.HasPrefix(to, "gone@"):
				return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "No such user"}
			case strings.HasPrefix(to, "later@") && faults.Load():
				return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 2, 1}, Message: "Mailbox busy"}
			}
			return nil
		},
		Data: func(m *testsink.Message) error {
			// The refused recipient is bounced in the same run; the
			// bounce (null sender) is not dropped.
			if faults.Load() && m.From != "" {
				return testsink.ErrDrop
			}
			e.rec.add(m)
			return nil
		},
	})
	rng := rand.New(rand.NewPCG(15, 16))
	l := newLetter(rng, "B3", "sender@torture.example", []string{"ok@dest.example", "gone@dest.example", "later@dest.example"}, 1<<10)
	id := e.submit(t, l)
	e.run(t, mailqBin, nil, "-q")
	q := e.queue(t)
	if len(q) != 1 || q[0].State != "uncertain" {
		t.Fatalf("after a drop after the dot: queue %+v, want the message uncertain", q)
	}
	faults.Store(false)
	if code, out, errs := e.run(t, mailqBin, nil, "--delivered", id); code != 0 {
		t.Fatalf("mailq --delivered: exit %d: %s%s", code, out, errs)
	}
	e.run(t, mailqBin, nil, "-q")
	e.rec.mu.Lock()
	var bounced []string
	for _, d := range e.rec.dsns {
		bounced = append(bounced, d.Recipients...)
	}
	e.rec.mu.Unlock()
	var laterGot int
	for _, d := range e.rec.deliveries(l.Token) {
		for _, to := range d.To {
			if to == "later@dest.example" {
				laterGot++
			}
		}
	}
	left := e.queue(t)
	if strings.Join(bounced, ",") != "gone@dest.example" {
		t.Errorf("bounced %v, want gone@dest.example (refused with 550 in the uncertain transaction): runner.deliver's "+
			"Uncertain branch keeps refused recipients pending, and mailq --delivered (adminMessages) removes the message with them", bounced)
	}
	if laterGot != 1 && len(left) == 0 {
		t.Errorf("later@dest.example (deferred with 451 in the uncertain transaction) was neither delivered nor kept queued after mailq --delivered")
	}
}
