package torture

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/postie-mail/postie/internal/testsink"
)

// proc is one ledger line: a sendmail or mailq -q process and how it
// ended.
type proc struct {
	kind   string // "sendmail" or "mailq"
	letter *letter
	start  time.Time
	end    time.Time
	killAt time.Time // when SIGKILL was sent; zero if never
	code   int       // exit status; -1 killed by a signal
	stderr string
}

// lifetimes keeps a running average of how long each kind of process
// lives when it is not killed, so that kill delays fall anywhere in a
// process's life, including its last instants (fsync, rename, the final
// dot and the reply).
type lifetimes struct {
	mu  sync.Mutex
	avg map[string]time.Duration
}

func (l *lifetimes) get(kind string) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.avg[kind]
}

func (l *lifetimes) observe(kind string, d time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.avg[kind] = (l.avg[kind]*7 + d) / 8
}

// TestCrash starts sendmail -t -i and mailq -q processes concurrently and
// kills them with SIGKILL at random instants. Afterwards the queue is
// flushed until it is stable, and every message is accounted for: a
// message whose sendmail exited 0 was delivered exactly once, or is still
// queued, or is held as uncertain because a mailq was killed between its
// final dot and the reply; nothing is delivered twice; every body that
// arrives (or stays queued) is whole; a killed sendmail's message is
// absent or whole.
func TestCrash(t *testing.T) {
	target := 50
	if long {
		target = 1000
	}
	const connections = 2
	e := newBinEnv(t, "", connections)
	// A short random pause before the reply to the final dot widens the
	// window in which a killed runner leaves an uncertain message.
	var pauseMu sync.Mutex
	pauseRng := rand.New(rand.NewPCG(1, 2))
	e.sink.SetFault(testsink.Fault{Data: func(m *testsink.Message) error {
		e.rec.add(m)
		pauseMu.Lock()
		d := time.Duration(pauseRng.IntN(15)) * time.Millisecond
		pauseMu.Unlock()
		time.Sleep(d)
		return nil
	}})

	var (
		mu     sync.Mutex
		ledger []*proc
		kills  atomic.Int64
		seq    atomic.Int64
		life   = &lifetimes{avg: map[string]time.Duration{"sendmail": 150 * time.Millisecond, "mailq": 400 * time.Millisecond}}
	)
	maxProcs := int64(target * 40)
	started := time.Now()
	runOne := func(kind string, rng *rand.Rand) {
		p := &proc{kind: kind}
		var cmd *exec.Cmd
		if kind == "sendmail" {
			n := seq.Add(1)
			token := fmt.Sprintf("T%06d", n)
			p.letter = newLetter(rng, token, "sender@torture.example", []string{"rcpt-" + token + "@dest.example"}, randSize(rng, 1<<10, 256<<10))
			cmd = exec.Command(sendmailBin, "-C", e.cfgPath, "-t", "-i")
			cmd.Stdin = bytes.NewReader(p.letter.Data)
		} else {
			cmd = exec.Command(mailqBin, "-C", e.cfgPath, "-q")
		}
		cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + e.dir}
		cmd.Dir = e.dir
		var errb bytes.Buffer
		cmd.Stderr = &errb
		p.start = time.Now()
		if err := cmd.Start(); err != nil {
			t.Errorf("start %s: %v", kind, err)
			return
		}
		var kmu sync.Mutex
		exited := false
		var timer *time.Timer
		// Runners are fewer and live longer: kill more of them.
		pKill := 0.5
		if kind == "mailq" {
			pKill = 0.8
		}
		if rng.Float64() < pKill {
			delay := time.Duration(rng.Float64() * 1.3 * float64(life.get(kind)))
			timer = time.AfterFunc(delay, func() {
				kmu.Lock()
				defer kmu.Unlock()
				if !exited {
					p.killAt = time.Now()
					cmd.Process.Signal(syscall.SIGKILL)
				}
			})
		}
		cmd.Wait()
		kmu.Lock()
		exited = true
		kmu.Unlock()
		if timer != nil {
			timer.Stop()
		}
		p.end = time.Now()
		p.code = exitCode(cmd.ProcessState)
		p.stderr = errb.String()
		if p.code == -1 {
			kills.Add(1)
		} else {
			life.observe(kind, p.end.Sub(p.start))
		}
		mu.Lock()
		ledger = append(ledger, p)
		mu.Unlock()
	}
	done := func() bool {
		mu.Lock()
		n := int64(len(ledger))
		mu.Unlock()
		return kills.Load() >= int64(target) || n >= maxProcs
	}
	var wg sync.WaitGroup
	slots := []string{"sendmail", "sendmail", "sendmail", "sendmail", "mailq", "mailq", "mailq"}
	for i, kind := range slots {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(i)))
			for !done() {
				runOne(kind, rng)
				if kind == "mailq" {
					time.Sleep(time.Duration(rng.IntN(50)) * time.Millisecond)
				}
			}
		}()
	}
	wg.Wait()
	loopTime := time.Since(started)

	// No more kills: flush until nothing is left but held messages.
	var flushes, stable int
	for flushes < 12 && stable < 2 {
		flushes++
		code, _, errs := e.run(t, mailqBin, nil, "-q")
		pending := 0
		for _, q := range e.queue(t) {
			if q.State != "uncertain" && q.State != "held" {
				pending++
			}
		}
		if code == 0 && pending == 0 && len(listDir(filepath.Join(e.spoolDir, "incoming"))) == 0 {
			stable++
		} else {
			stable = 0
			if flushes > 3 {
				t.Logf("flush %d: exit %d, %d pending: %s", flushes, code, pending, strings.TrimSpace(errs))
			}
		}
	}
	if stable < 2 {
		t.Errorf("the queue did not settle after %d flushes", flushes)
	}
	queue := e.queue(t)
	checkCrashLedger(t, e, ledger, queue, connections)
	t.Logf("crash: %d kills in %s (%d processes), %d flushes to settle", kills.Load(), loopTime.Round(time.Millisecond), len(ledger), flushes)
}

// checkCrashLedger accounts for every message of the ledger.
func checkCrashLedger(t *testing.T, e *binEnv, ledger []*proc, queue []qentry, connections int) {
	t.Helper()
	inQueue := map[string]qentry{}
	for _, q := range queue {
		tok := tokenOfMessageID(q.MessageID)
		inQueue[tok] = q
		// What stays queued must be whole too.
		qtok, sum, ok, why, err := spooled(e.spoolDir, "queue", q.ID)
		if err != nil || !ok || qtok != tok {
			t.Errorf("queued %s (%s): token %q ok=%v %s %v", q.ID, tok, qtok, ok, why, err)
		}
		_ = sum
		if q.State == "held" && q.HeldReason != "uncertain" {
			t.Errorf("queued %s held for %q", q.ID, q.HeldReason)
		}
	}
	var killedMailq []*proc
	var c struct {
		sendmail, exit0, killed, other                               int
		mailq, mailqKilled, mailqOther                               int
		once, queued, uncertain, uncertainDelivered                  int
		killedDelivered, killedQueued, killedUncertain, killedAbsent int
		duplicates, corrupt, lost                                    int
		uncertainUnexplained                                         int
	}
	for _, p := range ledger {
		if p.kind == "mailq" {
			c.mailq++
			switch p.code {
			case -1:
				c.mailqKilled++
				killedMailq = append(killedMailq, p)
			case 0, 75:
			default:
				c.mailqOther++
				t.Errorf("mailq -q exited %d: %s", p.code, p.stderr)
			}
		}
	}
	sort.Slice(killedMailq, func(i, j int) bool { return killedMailq[i].start.Before(killedMailq[j].start) })
	// plausible reports whether a runner killed around at could have left
	// a message uncertain: it ran then and was killed no earlier than
	// shortly before the sink saw the final dot.
	plausible := func(at time.Time) bool {
		for _, k := range killedMailq {
			if !k.start.After(at) && !k.killAt.Before(at.Add(-2*time.Second)) {
				return true
			}
		}
		return false
	}
	for _, p := range ledger {
		if p.kind != "sendmail" {
			continue
		}
		c.sendmail++
		tok := p.letter.Token
		ds := e.rec.deliveries(tok)
		for _, d := range ds {
			if !d.OK || d.Sum != p.letter.Sum {
				c.corrupt++
				t.Errorf("%s delivered corrupt: %s (sum %q, wrote %q)", tok, d.Why, d.Sum, p.letter.Sum)
			}
		}
		if len(ds) > 1 {
			c.duplicates++
			t.Errorf("%s delivered %d times (sendmail exit %d)", tok, len(ds), p.code)
		}
		q, queued := inQueue[tok]
		uncertain := queued && q.State == "uncertain"
		if uncertain {
			if len(ds) == 1 && !plausible(ds[0].At) {
				c.uncertainUnexplained++
				t.Errorf("%s is uncertain but no mailq was killed around its delivery at %s", tok, ds[0].At.Format(time.StampMicro))
			}
		}
		switch p.code {
		case 0:
			c.exit0++
			switch {
			case uncertain:
				c.uncertain++
				if len(ds) == 1 {
					c.uncertainDelivered++
				}
			case queued && len(ds) == 0:
				c.queued++
			case !queued && len(ds) == 1:
				c.once++
			case !queued && len(ds) == 0:
				c.lost++
				t.Errorf("%s: sendmail exited 0 but the message was neither delivered nor queued", tok)
			default:
				t.Errorf("%s: delivered %d times and still queued (%s)", tok, len(ds), q.State)
			}
		case -1:
			c.killed++
			switch {
			case uncertain:
				c.killedUncertain++
			case queued:
				c.killedQueued++
			case len(ds) > 0:
				c.killedDelivered++
			default:
				c.killedAbsent++
			}
		default:
			c.other++
			t.Errorf("%s: sendmail exited %d: %s", tok, p.code, strings.TrimSpace(p.stderr))
		}
	}
	e.rec.mu.Lock()
	if n := len(e.rec.other); n > 0 {
		c.corrupt += n
		t.Errorf("%d delivered messages carry no token: %+v", n, e.rec.other[0])
	}
	known := map[string]bool{}
	for _, p := range ledger {
		if p.letter != nil {
			known[p.letter.Token] = true
		}
	}
	for tok := range e.rec.byToken {
		if !known[tok] {
			t.Errorf("delivered token %q was never submitted", tok)
		}
	}
	e.rec.mu.Unlock()
	allUncertain := c.uncertain + c.killedUncertain
	if allUncertain > 0 && allUncertain > len(killedMailq)*connections {
		t.Errorf("%d uncertain messages, but only %d mailq processes were killed (%d connections each)", allUncertain, len(killedMailq), connections)
	}
	tmpLeft := len(listDir(filepath.Join(e.spoolDir, "tmp")))
	if failed := listDir(filepath.Join(e.spoolDir, "failed")); len(failed) > 0 {
		t.Errorf("failed/ holds %v", failed)
	}
	if in := listDir(filepath.Join(e.spoolDir, "incoming")); len(in) > 0 {
		t.Errorf("incoming/ still holds %v", in)
	}
	t.Logf("crash ledger: sendmail %d (exit 0: %d, killed: %d, other: %d); mailq -q %d (killed: %d, other exit: %d)",
		c.sendmail, c.exit0, c.killed, c.other, c.mailq, c.mailqKilled, c.mailqOther)
	t.Logf("crash exit-0 messages %d: delivered once %d, still queued %d, uncertain %d (of which the sink got %d), lost %d",
		c.exit0, c.once, c.queued, c.uncertain, c.uncertainDelivered, c.lost)
	t.Logf("crash killed-sendmail messages %d: delivered %d, queued %d, uncertain %d, absent %d (tmp/ leftovers: %d)",
		c.killed, c.killedDelivered, c.killedQueued, c.killedUncertain, c.killedAbsent, tmpLeft)
	t.Logf("crash duplicates %d, corrupt %d, unexplained uncertain %d", c.duplicates, c.corrupt, c.uncertainUnexplained)
}
