package ratelimit

import (
	"sync"
	"testing"
	"time"
)

func TestLimits(t *testing.T) {
	dir := t.TempDir()
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	lim := Limits{MessagesPerHour: 3, RecipientsPerMessage: 10, RecipientsPerHour: 20}
	var held int
	for i := range 5 {
		d, err := Check(dir, 33, 2, lim, now.Add(time.Duration(i)*time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		if (d.Over != "") != (i >= 3) {
			t.Errorf("message %d: over=%q", i, d.Over)
		}
		if d.Over != "" {
			held++
			if d.LogHold != (held == 1) {
				t.Errorf("message %d: LogHold=%v, want it only on the first hold of the burst", i, d.LogHold)
			}
		}
	}
	if d, _ := Check(dir, 33, 11, lim, now.Add(6*time.Minute)); d.Over == "" {
		t.Error("11 recipients in one message accepted")
	}
	// Another user is not affected.
	if d, _ := Check(dir, 34, 2, lim, now); d.Over != "" {
		t.Errorf("other user held: %q", d.Over)
	}
	// An hour later the window has moved.
	if d, _ := Check(dir, 33, 2, lim, now.Add(70*time.Minute)); d.Over != "" {
		t.Errorf("after an hour: %q", d.Over)
	}
	rep, err := Report(dir, now.Add(10*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if len(rep) != 2 || rep[0].UID != 33 || rep[0].Hour.Messages != 6 || rep[0].Hour.Held != 3 {
		t.Errorf("report %+v", rep)
	}
}

// Concurrent submissions are all counted.
func TestConcurrent(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	var wg sync.WaitGroup
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := Check(dir, 7, 1, Limits{}, now); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	rep, _ := Report(dir, now)
	if len(rep) != 1 || rep[0].Hour.Messages != 50 {
		t.Errorf("report %+v", rep)
	}
}
