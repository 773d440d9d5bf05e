package spool

import "sync"

// groupSync batches fsyncs of one directory: callers that ask while a sync
// is running wait for the next one, which covers all of them. Several
// delivery connections marking messages "sending" at once then share one
// fsync instead of queueing one each; every caller still returns only
// after a sync that started after its request has completed.
type groupSync struct {
	dir string

	mu      sync.Mutex
	cond    *sync.Cond
	started uint64 // generation of the last sync started
	done    uint64 // generation of the last sync completed
	running bool
	err     error // result of the last completed sync
}

func newGroupSync(dir string) *groupSync {
	g := &groupSync{dir: dir}
	g.cond = sync.NewCond(&g.mu)
	return g
}

// Sync returns once a sync of the directory that began after the call has
// completed.
func (g *groupSync) Sync() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	need := g.started + 1
	if g.running {
		// The running sync may have begun before our change: we need
		// the one after it.
		need = g.started + 1
	}
	for g.done < need {
		if g.running {
			g.cond.Wait()
			continue
		}
		g.running = true
		g.started++
		gen := g.started
		g.mu.Unlock()
		err := syncDir(g.dir)
		g.mu.Lock()
		g.running = false
		g.done = gen
		g.err = err
		g.cond.Broadcast()
	}
	return g.err
}
