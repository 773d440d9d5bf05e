package spool

import "sync"

// groupSync batches the syncs of one file or directory: callers that ask
// while a sync is running wait for the next one, which covers all of
// them, so that concurrent delivery connections share syncs (of queue/
// after their state files, of the runner's marks journal after their
// marks) instead of queueing one each. Every caller still returns only
// after a sync that started after its call has completed.
type groupSync struct {
	sync func() error
	// sticky keeps the first failure for good. After a failed fsync the
	// kernel may report the next one clean without having written what
	// the failed one lost: for the marks journal, a later success must
	// not vouch for marks written before the failure.
	sticky bool

	mu      sync.Mutex
	cond    *sync.Cond
	started uint64 // generation of the last sync started
	done    uint64 // generation of the last sync completed
	running bool
	err     error // result of the last completed sync (the first failed one if sticky)
}

func newGroupSync(fn func() error, sticky bool) *groupSync {
	g := &groupSync{sync: fn, sticky: sticky}
	g.cond = sync.NewCond(&g.mu)
	return g
}

// Sync returns once a sync that began after the call has completed.
func (g *groupSync) Sync() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	// The running sync, if any, may have begun before the caller's
	// change: it needs the one after.
	need := g.started + 1
	for g.done < need {
		if g.sticky && g.err != nil {
			return g.err
		}
		if g.running {
			g.cond.Wait()
			continue
		}
		g.running = true
		g.started++
		gen := g.started
		g.mu.Unlock()
		err := g.sync()
		g.mu.Lock()
		g.running = false
		g.done = gen
		if err != nil || !g.sticky {
			g.err = err
		}
		g.cond.Broadcast()
	}
	return g.err
}
