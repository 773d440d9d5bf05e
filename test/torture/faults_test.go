package torture

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/postie-mail/postie/internal/address"
	"github.com/postie-mail/postie/internal/config"
	"github.com/postie-mail/postie/internal/enqueue"
	"github.com/postie-mail/postie/internal/maillog"
	"github.com/postie-mail/postie/internal/runner"
	"github.com/postie-mail/postie/internal/spool"
	"github.com/postie-mail/postie/internal/testsink"
)

// syncBuf is a goroutine-safe buffer for the runner's log.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// inProc is a sink, a spool and a config for tests that run the
// enqueue and the queue runner in-process.
type inProc struct {
	t    *testing.T
	cfg  *config.Config
	sp   *spool.Spool
	sink *testsink.Sink
	rec  *recorder
	env  *enqueue.Env
	log  syncBuf
}

// newInProc starts a sink (STARTTLS, no AUTH) and makes a config for it;
// extra is added to [smarthost] (data_timeout = "1s").
func newInProc(t *testing.T, extra string) *inProc {
	t.Helper()
	sink, err := testsink.Start(testsink.Options{})
	tcheck(t, err, "start sink")
	t.Cleanup(func() { sink.Close() })
	dir := t.TempDir()
	text := fmt.Sprintf(`hostname = "torture.example"
spool_dir = %q
[smarthost]
address = %q
tls = "starttls"
ca_file = %q
connect_timeout = "5s"
command_timeout = "5s"
%s
[queue]
deliver = "queue"
connections = 4
max_age = "1h"
retry_min = "1s"
retry_max = "2s"
`, filepath.Join(dir, "spool"), sink.Addr, sink.CAFile, extra)
	cfg, err := config.Parse("torture.toml", text)
	tcheck(t, err, "config")
	sp := spool.New(cfg.SpoolDir)
	tcheck(t, sp.Init(), "spool init")
	h := &inProc{t: t, cfg: cfg, sp: sp, sink: sink, rec: newRecorder()}
	h.env = &enqueue.Env{
		Hostname: "torture.example",
		Resolver: &address.Resolver{Aliases: address.Aliases{}, Hostname: "torture.example"},
		Spool:    sp,
		Caller:   enqueue.Caller{UID: 1000, User: "alice"},
		Now:      time.Now,
	}
	sink.SetFault(testsink.Fault{Data: func(m *testsink.Message) error { h.rec.add(m); return nil }})
	return h
}

func (h *inProc) runner() *runner.Runner {
	h.t.Helper()
	r, err := runner.New(h.cfg, maillog.NewWriter(&h.log), nil)
	tcheck(h.t, err, "runner")
	return r
}

func (h *inProc) enqueue(l *letter, sender string) {
	h.t.Helper()
	_, err := enqueue.Enqueue(h.env, &enqueue.Request{Sender: &sender, Recipients: l.To}, bytes.NewReader(l.Data))
	tcheck(h.t, err, "enqueue "+l.Token)
}

// faultCounts counts the faults the sink injected.
type faultCounts struct {
	rcpt421, rcpt451, rcpt452, rcpt550 atomic.Int64
	dropMidData, dropAfterDot, hang    atomic.Int64
}

// The fault sink's probabilities: per RCPT, and per DATA.
const (
	p421        = 0.015
	p451        = 0.04
	p452        = 0.04
	p550        = 0.04
	pDropMid    = 0.04
	pDropAtDot  = 0.03
	pHang       = 0.015
	dataTimeout = time.Second
	hangFor     = dataTimeout + 500*time.Millisecond
)

const faultSender = "alice@src.example"

// busySuffix marks recipients that fail with 451 in every fault round.
const busySuffix = "-busy@dest.example"

// TestFaults runs the queue runner (in-process) against a smarthost that
// answers RCPT at random with 421, 451, 452 or 550, drops the connection
// in the middle of DATA and after the final dot, and hangs past the data
// timeout, over many messages with several recipients each. After some
// rounds the faults stop and max_age is cut so that the older deferred
// messages expire. Each recipient must end delivered once, bounced once
// (one Final-Recipient in one bounce to the sender), or held as
// uncertain; none lost, nothing delivered or bounced twice.
func TestFaults(t *testing.T) {
	n := 200
	if long {
		n = 5000
	}
	const faultRounds = 6
	h := newInProc(t, fmt.Sprintf("data_timeout = %q\n", dataTimeout.String()))
	cfg, sp, sink, rec := h.cfg, h.sp, h.sink, h.rec
	var fc faultCounts
	var faultsOn atomic.Bool
	var inflight atomic.Int64
	var rngMu sync.Mutex
	frng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	roll := func() float64 {
		rngMu.Lock()
		defer rngMu.Unlock()
		return frng.Float64()
	}
	temp := func(code int, enh smtp.EnhancedCode, msg string) error {
		return &smtp.SMTPError{Code: code, EnhancedCode: enh, Message: msg}
	}
	sink.SetFault(testsink.Fault{
		Rcpt: func(to string) error {
			// Bounces to the sender are spared RCPT faults, so that
			// they arrive to be counted; they still meet the DATA
			// faults.
			if !faultsOn.Load() || to == faultSender {
				return nil
			}
			if strings.HasSuffix(to, busySuffix) {
				// A mailbox busy for as long as the faults
				// last: its message is deferred until it
				// expires or the faults stop.
				fc.rcpt451.Add(1)
				return temp(451, smtp.EnhancedCode{4, 2, 1}, "Mailbox busy")
			}
			switch r := roll(); {
			case r < p421:
				fc.rcpt421.Add(1)
				return temp(421, smtp.EnhancedCode{4, 3, 2}, "Service shutting down")
			case r < p421+p451:
				fc.rcpt451.Add(1)
				return temp(451, smtp.EnhancedCode{4, 3, 0}, "Local error in processing")
			case r < p421+p451+p452:
				fc.rcpt452.Add(1)
				return temp(452, smtp.EnhancedCode{4, 5, 3}, "Too many recipients")
			case r < p421+p451+p452+p550:
				fc.rcpt550.Add(1)
				return temp(550, smtp.EnhancedCode{5, 1, 1}, "No such user")
			}
			return nil
		},
		DataStart: func() error {
			if faultsOn.Load() && roll() < pDropMid {
				fc.dropMidData.Add(1)
				return testsink.ErrDrop
			}
			return nil
		},
		Data: func(m *testsink.Message) error {
			inflight.Add(1)
			defer inflight.Add(-1)
			if faultsOn.Load() {
				switch r := roll(); {
				case r < pDropAtDot:
					fc.dropAfterDot.Add(1)
					return testsink.ErrDrop
				case r < pDropAtDot+pHang:
					fc.hang.Add(1)
					time.Sleep(hangFor)
				}
			}
			rec.add(m)
			return nil
		},
	})

	newRunner, logw := h.runner, &h.log
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 11))
	letters := map[string]*letter{}
	var order []string
	enqueueBatch := func(from, to int) {
		for k := from; k < to; k++ {
			token := fmt.Sprintf("F%05d", k)
			nr := 2 + rng.IntN(3)
			var rcpts []string
			for j := range nr {
				rcpts = append(rcpts, fmt.Sprintf("m%05d-r%d@dest.example", k, j))
			}
			if k%10 == 0 {
				rcpts[0] = fmt.Sprintf("m%05d-r0%s", k, busySuffix)
			}
			size := randSize(rng, 1<<10, 8<<10)
			if rng.IntN(10) == 0 {
				// Large enough that a connection dropped at the
				// start of DATA fails the transfer before the dot.
				size = 300<<10 + rng.IntN(100<<10)
			}
			l := newLetter(rng, token, faultSender, rcpts, size)
			h.enqueue(l, faultSender)
			letters[token] = l
			order = append(order, token)
		}
	}

	start := time.Now()
	ctx := context.Background()
	var batchEnd [3]time.Time
	for round := 1; round <= faultRounds; round++ {
		if round <= 3 {
			enqueueBatch(n*(round-1)/3, n*round/3)
			batchEnd[round-1] = time.Now()
		}
		faultsOn.Store(true)
		sum, err := newRunner().Run(ctx, runner.Options{})
		tcheck(t, err, "run")
		t.Logf("fault round %d: %s", round, sum)
	}
	// The faults subside. Deferred messages of the first two batches
	// are now older than max_age and bounce as expired; the third
	// batch's are delivered.
	faultsOn.Store(false)
	cfg.Queue.MaxAge.Duration = time.Since(batchEnd[1])
	settled := false
	cleanup := 0
	for cleanup < 10 && !settled {
		cleanup++
		sum, err := newRunner().Run(ctx, runner.Options{})
		tcheck(t, err, "run")
		t.Logf("cleanup round %d: %s", cleanup, sum)
		entries, err := sp.List()
		tcheck(t, err, "list")
		settled = true
		for _, e := range entries {
			if e.Status != "uncertain" && e.Status != "held" {
				settled = false
			}
		}
	}
	if !settled {
		t.Errorf("queue not settled after %d clean rounds", cleanup)
	}
	for inflight.Load() > 0 {
		time.Sleep(50 * time.Millisecond)
	}
	elapsed := time.Since(start)
	ok := checkFaultOutcome(t, sp, rec, letters, order)
	t.Logf("faults injected: rcpt 421 %d, 451 %d, 452 %d, 550 %d; dropped mid-DATA %d, after the dot %d; hung past the timeout %d",
		fc.rcpt421.Load(), fc.rcpt451.Load(), fc.rcpt452.Load(), fc.rcpt550.Load(), fc.dropMidData.Load(), fc.dropAfterDot.Load(), fc.hang.Load())
	t.Logf("faults: %d messages in %s (%d fault rounds, %d clean rounds)", n, elapsed.Round(time.Millisecond), faultRounds, cleanup)
	if !ok {
		lg := logw.String()
		if len(lg) > 20000 {
			lg = lg[len(lg)-20000:]
		}
		t.Logf("runner log (tail):\n%s", lg)
	}
}

// checkFaultOutcome accounts for every recipient of every letter.
func checkFaultOutcome(t *testing.T, sp *spool.Spool, rec *recorder, letters map[string]*letter, order []string) bool {
	t.Helper()
	// Bounces: delivered, held in the queue, or kept in failed/ (a
	// bounce that could not be delivered is never bounced itself).
	type dsnSeen struct {
		info    dsnInfo
		atSink  int
		inQueue bool
		failed  bool
	}
	dsns := map[string]*dsnSeen{}
	// A bounce is known by its Message-ID and what it reports, so that
	// one bounce seen twice (held uncertain and also delivered) counts
	// once, and two bounces sharing a Message-ID count twice.
	idKeys := map[string]map[string]bool{}
	seen := func(d dsnInfo) *dsnSeen {
		key := d.MessageID + "|" + d.Token + "|" + strings.Join(d.Recipients, ",")
		s := dsns[key]
		if s == nil {
			s = &dsnSeen{info: d}
			dsns[key] = s
			if idKeys[d.MessageID] == nil {
				idKeys[d.MessageID] = map[string]bool{}
			}
			idKeys[d.MessageID][key] = true
		}
		return s
	}
	rec.mu.Lock()
	for _, d := range rec.dsns {
		if !slices.Equal(d.To, []string{faultSender}) {
			t.Errorf("bounce %s went to %v", d.MessageID, d.To)
		}
		seen(d).atSink++
	}
	rec.mu.Unlock()
	held := map[string]map[string]string{} // token -> pending recipient -> state
	heldDSNs, failedDSNs := 0, 0
	entries, err := sp.List()
	tcheck(t, err, "list")
	for _, e := range entries {
		if e.Status != "uncertain" {
			t.Errorf("%s left in the queue as %s (%s)", e.Env.ID, e.Status, e.State.LastError)
		}
		data := readSpooled(t, sp.QueuePath(e.Env.ID))
		if e.Env.Bounce {
			seen(parseDSN(data)).inQueue = true
			heldDSNs++
			continue
		}
		tok, _, ok, why := inspect(data)
		if !ok {
			t.Errorf("queued %s is not whole: %s", e.Env.ID, why)
		}
		m := map[string]string{}
		for _, r := range e.State.Pending(e.Env) {
			m[r] = e.Status
		}
		held[tok] = m
	}
	failedDir := filepath.Join(sp.Dir, spool.FailedDir)
	for _, name := range listDir(failedDir) {
		if !spool.ValidID(name) {
			continue
		}
		q, err := spool.OpenFile(filepath.Join(failedDir, name))
		if err != nil {
			t.Errorf("failed/%s: %v", name, err)
			continue
		}
		bounce := q.Env.Bounce
		q.Close()
		if !bounce {
			t.Errorf("failed/%s is not a bounce", name)
			continue
		}
		seen(parseDSN(readSpooled(t, filepath.Join(failedDir, name)))).failed = true
		failedDSNs++
	}
	collisions := 0
	for id, keys := range idKeys {
		if len(keys) > 1 {
			collisions++
			var what []string
			for k := range keys {
				what = append(what, k)
			}
			sort.Strings(what)
			t.Errorf("%d different bounces share the Message-ID %s: %v (dsn.Report.messageID is unique only per queue ID and second)", len(keys), id, what)
		}
	}
	// bounced[token][rcpt] lists the bounces naming the recipient.
	bounced := map[string]map[string][]string{}
	var dsnDup, dsnAtSink, status5, status447 int
	statuses := map[string]int{}
	for _, s := range dsns {
		id := s.info.MessageID
		if s.atSink > 1 {
			dsnDup++
			t.Errorf("bounce %s delivered %d times", id, s.atSink)
		}
		if s.atSink > 0 {
			dsnAtSink++
		}
		if s.info.Token == "" || len(s.info.Recipients) == 0 {
			t.Errorf("bounce %s names no message or recipient: %+v", id, s.info)
			continue
		}
		if bounced[s.info.Token] == nil {
			bounced[s.info.Token] = map[string][]string{}
		}
		for i, r := range s.info.Recipients {
			bounced[s.info.Token][r] = append(bounced[s.info.Token][r], id)
			if i < len(s.info.Statuses) {
				statuses[s.info.Statuses[i]]++
				if s.info.Statuses[i] == "4.4.7" {
					status447++
				} else if strings.HasPrefix(s.info.Statuses[i], "5.") {
					status5++
				}
			}
		}
	}
	var c struct {
		rcpts, delivered, bounced, heldU, heldUDelivered, lost, dup, dsnTwice, corrupt int
	}
	rec.mu.Lock()
	for _, ds := range rec.byToken {
		for _, d := range ds {
			if !d.OK {
				c.corrupt++
				t.Errorf("%s delivered corrupt: %s", d.Token, d.Why)
			}
		}
	}
	if len(rec.other) > 0 {
		c.corrupt += len(rec.other)
		t.Errorf("%d deliveries without a token", len(rec.other))
	}
	rec.mu.Unlock()
	for _, tok := range order {
		l := letters[tok]
		ds := rec.deliveries(tok)
		for _, r := range l.To {
			c.rcpts++
			nd := 0
			for _, d := range ds {
				if slices.Contains(d.To, r) {
					nd++
				}
			}
			nb := len(bounced[tok][r])
			_, isHeld := held[tok][r]
			switch {
			case nd > 1:
				c.dup++
				t.Errorf("%s to %s delivered %d times", tok, r, nd)
			case nb > 1:
				c.dsnTwice++
				t.Errorf("%s to %s bounced %d times: %v", tok, r, nb, bounced[tok][r])
			case isHeld && nb == 0:
				c.heldU++
				c.heldUDelivered += nd
			case nd == 1 && nb == 0:
				c.delivered++
			case nb == 1 && nd == 0:
				c.bounced++
			case nd == 0 && nb == 0:
				c.lost++
				t.Errorf("%s to %s lost: not delivered, not bounced, not queued", tok, r)
			default:
				t.Errorf("%s to %s: delivered %d, bounced %d, held %v", tok, r, nd, nb, isHeld)
			}
		}
	}
	var heldMsgs int
	for range held {
		heldMsgs++
	}
	t.Logf("faults outcome: %d messages, %d recipients: delivered once %d, bounced once %d, held uncertain %d (in %d messages; the sink got %d of them), lost %d, delivered twice %d, bounced twice %d, corrupt %d",
		len(order), c.rcpts, c.delivered, c.bounced, c.heldU, heldMsgs, c.heldUDelivered, c.lost, c.dup, c.dsnTwice, c.corrupt)
	t.Logf("faults bounces: %d distinct (%d delivered to the sender, %d held uncertain, %d in failed/ after failing themselves), Final-Recipient status 5.x.x %d, 4.4.7 expired %d (%v); bounces delivered twice %d; Message-IDs shared by different bounces %d",
		len(dsns), dsnAtSink, heldDSNs, failedDSNs, status5, status447, statuses, dsnDup, collisions)
	return !t.Failed()
}

func readSpooled(t *testing.T, path string) []byte {
	t.Helper()
	q, err := spool.OpenFile(path)
	if err != nil {
		t.Errorf("open %s: %v", path, err)
		return nil
	}
	defer q.Close()
	var b bytes.Buffer
	if _, err := b.ReadFrom(q.Message()); err != nil {
		t.Errorf("read %s: %v", path, err)
	}
	return b.Bytes()
}
