// Command fill puts N copies of a message into a Postie spool through
// internal/spool, as sendmail would leave them (durable, in incoming/), but
// without a process per message: the scale runs of bench/peers/run.sh need
// 100,000 queued messages in seconds, not minutes.
//
//	fill -spool /var/tmp/postie-bench/spool -n 100000 -msg msg4k.eml [-c 16] [-pickup]
//
// With -pickup the messages are then moved into queue/, where a queue
// runner keeps them (the layout after a failed flush); -n 0 -pickup only
// moves what is there.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/postie-mail/postie/internal/spool"
)

func main() {
	var (
		dir    = flag.String("spool", "", "spool directory (created if missing)")
		n      = flag.Int("n", 1000, "messages")
		msg    = flag.String("msg", "", "message file (LF or CRLF)")
		conc   = flag.Int("c", 16, "writers at once")
		pickup = flag.Bool("pickup", false, "move the messages into queue/ afterwards")
	)
	flag.Parse()
	if *dir == "" || *msg == "" && *n > 0 {
		fmt.Fprintln(os.Stderr, "usage: fill -spool DIR -n N -msg FILE [-c 16] [-pickup]")
		os.Exit(2)
	}
	var raw []byte
	if *n > 0 {
		var err error
		if raw, err = os.ReadFile(*msg); err != nil {
			fail(err)
		}
	}
	// The spool holds the message as it will be sent: CRLF line endings.
	body := bytes.ReplaceAll(bytes.ReplaceAll(raw, []byte("\r\n"), []byte("\n")), []byte("\n"), []byte("\r\n"))
	sp := spool.New(*dir)
	if err := sp.Init(); err != nil {
		fail(err)
	}
	start := time.Now()
	var (
		next    atomic.Int64
		wg      sync.WaitGroup
		errOnce sync.Once
		first   error
	)
	for range *conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := next.Add(1); i <= int64(*n); i = next.Add(1) {
				if err := put(sp, body, i); err != nil {
					errOnce.Do(func() { first = err })
					return
				}
			}
		}()
	}
	wg.Wait()
	if first != nil {
		fail(first)
	}
	if *pickup {
		if _, err := sp.Pickup(); err != nil {
			fail(err)
		}
	}
	fmt.Fprintf(os.Stderr, "fill: %d messages in %.1fs\n", *n, time.Since(start).Seconds())
}

func put(sp *spool.Spool, body []byte, i int64) error {
	now := time.Now()
	w, err := sp.Create(now)
	if err != nil {
		return err
	}
	defer w.Abort()
	if _, err := w.Write(body); err != nil {
		return err
	}
	return w.Commit(&spool.Envelope{
		Sender:     "bench@example.com",
		Recipients: []string{fmt.Sprintf("r%d@example.org", i)},
		Arrival:    now,
		MessageID:  fmt.Sprintf("<%s@bench.example>", w.ID),
		UID:        os.Getuid(),
		User:       "root",
	})
}

func fail(err error) {
	fmt.Fprintf(os.Stderr, "fill: %v\n", err)
	os.Exit(1)
}
