package runner_test

import (
	"context"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/postie-mail/postie/internal/runner"
	"github.com/postie-mail/postie/internal/testsink"
)

// TestLockedMessageTriedAgain: a message whose lock is held when the
// runner reaches it is tried once more after the pass. mailq's listing
// takes a shared lock for an instant to see whether a message is being
// sent; a message it probed is delivered in the same run. One that stays
// locked (another runner delivering it) is skipped, without waiting.
func TestLockedMessageTriedAgain(t *testing.T) {
	tests := []struct {
		name      string
		hold      time.Duration // how long the lock is held; 0: all run
		delivered int
	}{
		{"probed by a listing", 50 * time.Millisecond, 1},
		{"held by another runner", 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, testsink.Options{}, "")
			id := h.enqueue("alice@example.com", []string{"bob@example.org"}, "hello\n")
			_, err := h.sp.Pickup()
			tcheck(t, err, "pickup")
			f, err := os.Open(h.sp.QueuePath(id))
			tcheck(t, err, "open")
			defer f.Close()
			tcheck(t, unix.Flock(int(f.Fd()), unix.LOCK_SH), "flock")
			if tt.hold > 0 {
				time.AfterFunc(tt.hold, func() { unix.Flock(int(f.Fd()), unix.LOCK_UN) })
			}
			r := h.runner()
			r.LockedRetry = 500 * time.Millisecond
			sum, err := r.Run(context.Background(), runner.Options{})
			tcheck(t, err, "run")
			if n := len(h.sink.Messages()); n != tt.delivered {
				t.Errorf("delivered %d, want %d; summary %+v", n, tt.delivered, sum)
			}
			if sum.Sent != tt.delivered || sum.Skipped != 1-tt.delivered {
				t.Errorf("summary %+v: want %d sent, %d skipped", sum, tt.delivered, 1-tt.delivered)
			}
		})
	}
}
