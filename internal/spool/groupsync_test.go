package spool

import (
	"errors"
	"sync"
	"testing"
)

func TestGroupSync(t *testing.T) {
	failAt := 2 // the second sync fails, the others succeed
	tests := []struct {
		name     string
		sticky   bool
		wantLast bool // the third Sync fails too
	}{
		{"directory: a failure is reported once", false, false},
		{"journal: a failure is for good", true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			calls := 0
			g := newGroupSync(func() error {
				calls++
				if calls == failAt {
					return errors.New("EIO")
				}
				return nil
			}, tt.sticky)
			if err := g.Sync(); err != nil {
				t.Fatalf("first sync: %v", err)
			}
			if err := g.Sync(); err == nil {
				t.Fatal("the failed sync reported no error")
			}
			if err := g.Sync(); (err != nil) != tt.wantLast {
				t.Errorf("after the failure: %v", err)
			}
		})
	}
}

// TestGroupSyncShared: of callers at once, each returns only after a
// sync that began after its own change.
func TestGroupSyncShared(t *testing.T) {
	var mu sync.Mutex
	changes, covered := 0, 0 // covered: the changes the last sync began after
	g := newGroupSync(func() error {
		mu.Lock()
		covered = changes
		mu.Unlock()
		return nil
	}, true)
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			mu.Lock()
			changes++
			mine := changes
			mu.Unlock()
			if err := g.Sync(); err != nil {
				t.Error(err)
			}
			mu.Lock()
			if covered < mine {
				t.Errorf("returned after a sync that began after change %d, not after its own %d", covered, mine)
			}
			mu.Unlock()
		})
	}
	wg.Wait()
}
