// Command timeit runs a command many times and reports wall times as one
// JSON object on stdout. It is the stopwatch of bench/peers/run.sh: each
// run is a fork and exec from here, timed from just before the start to
// just after the wait, so every contender pays the same harness cost.
//
//	timeit -n 300 -in msg.eml -- /usr/sbin/sendmail -t -i
//	    300 runs one after another: median, p90, ... in milliseconds
//	timeit -n 2000 -c 32 -in msg.eml -- /usr/sbin/sendmail -t -i
//	    32 callers at once, 2000 runs in all: messages per second
//	timeit -n 1 -done /tmp/done -timeout 30m -- mailq -q
//	    one run, then wait for the file -done (postie-sink -done): the
//	    seconds from the start of the command to the file's appearance
//
// With -kill the command is killed once -done appears (a daemon that
// never exits, such as nullmailer-send). With -reap timeit makes itself
// the subreaper of what the command leaves running (dma -q forks one
// process per message and exits), waits for all of it, and reports the
// largest peak RSS among every process it reaped. Any run that exits
// non-zero is a failure: the first one's output goes to stderr and timeit
// exits 1 after printing the figures.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"os/exec"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Result is what timeit prints.
type Result struct {
	Runs        int     `json:"runs"`
	Concurrency int     `json:"concurrency"`
	Failures    int     `json:"failures"`
	WallS       float64 `json:"wall_s"`
	// PerSecond is runs divided by wall time.
	PerSecond float64 `json:"per_second"`
	MedianMS  float64 `json:"median_ms"`
	P90MS     float64 `json:"p90_ms"`
	MeanMS    float64 `json:"mean_ms"`
	MinMS     float64 `json:"min_ms"`
	MaxMS     float64 `json:"max_ms"`
	// DoneS is the time from the first start to the -done file.
	DoneS float64 `json:"done_s,omitempty"`
	// TimedOut is set when -done did not appear in time.
	TimedOut bool `json:"timed_out,omitempty"`
	// MaxRSSKB is the largest peak resident set of any run (wait4's
	// ru_maxrss, the same figure as /usr/bin/time's %M).
	MaxRSSKB int64 `json:"max_rss_kb"`
}

func main() {
	var (
		n       = flag.Int("n", 1, "number of runs")
		conc    = flag.Int("c", 1, "runs at the same time")
		in      = flag.String("in", "", "file given to each run as stdin (default /dev/null)")
		warmup  = flag.Int("warmup", 0, "untimed runs first")
		done    = flag.String("done", "", "after the runs, wait for this file to exist")
		timeout = flag.Duration("timeout", 30*time.Minute, "give up waiting for -done after this")
		kill    = flag.Bool("kill", false, "with -done: do not wait for the command; kill it when -done appears")
		reap    = flag.Bool("reap", false, "with -n 1: also wait for the processes the command leaves behind")
	)
	flag.Parse()
	argv := flag.Args()
	if len(argv) == 0 || *n < 1 || *conc < 1 {
		fmt.Fprintln(os.Stderr, "usage: timeit [-n N] [-c C] [-in FILE] [-done FILE [-kill]] -- command [args]")
		os.Exit(2)
	}
	for range *warmup {
		if _, _, err := runOnce(argv, *in); err != nil {
			fmt.Fprintf(os.Stderr, "timeit: warm-up: %v\n", err)
			os.Exit(1)
		}
	}

	var (
		next      atomic.Int64
		mu        sync.Mutex
		times     []time.Duration
		failures  int
		firstFail error
		maxRSS    int64
		wg        sync.WaitGroup
	)
	if *reap {
		if *n != 1 || *kill {
			fmt.Fprintln(os.Stderr, "timeit: -reap needs -n 1 and no -kill")
			os.Exit(2)
		}
		if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
			fmt.Fprintf(os.Stderr, "timeit: subreaper: %v\n", err)
			os.Exit(1)
		}
	}
	start := time.Now()
	if *kill {
		if *done == "" || *n != 1 {
			fmt.Fprintln(os.Stderr, "timeit: -kill needs -done and -n 1")
			os.Exit(2)
		}
		cmd, err := startCmd(argv, *in, nil)
		if err != nil {
			fmt.Fprintf(os.Stderr, "timeit: %v\n", err)
			os.Exit(1)
		}
		d, werr := waitFile(*done, start, *timeout)
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
		r := Result{Runs: 1, Concurrency: 1, WallS: d.Seconds(), DoneS: d.Seconds(), TimedOut: werr != nil}
		if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
			r.MaxRSSKB = ru.Maxrss
		}
		emit(r)
		if werr != nil {
			fmt.Fprintf(os.Stderr, "timeit: %v\n", werr)
			os.Exit(1)
		}
		return
	}
	for range *conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(*n) {
				d, rss, err := runOnce(argv, *in)
				mu.Lock()
				times = append(times, d)
				maxRSS = max(maxRSS, rss)
				if err != nil {
					failures++
					if firstFail == nil {
						firstFail = err
					}
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if *reap {
		// Orphans of the command are ours now: wait for every one.
		for {
			var ws unix.WaitStatus
			if _, err := unix.Wait4(-1, &ws, 0, nil); err != nil {
				break
			}
		}
		var ru unix.Rusage
		if unix.Getrusage(unix.RUSAGE_CHILDREN, &ru) == nil {
			maxRSS = max(maxRSS, ru.Maxrss)
		}
	}
	wall := time.Since(start)
	r := summarize(times)
	r.Concurrency = *conc
	r.Failures = failures
	r.WallS = wall.Seconds()
	r.PerSecond = float64(*n) / wall.Seconds()
	r.MaxRSSKB = maxRSS
	var werr error
	if *done != "" {
		var d time.Duration
		d, werr = waitFile(*done, start, *timeout)
		r.DoneS = d.Seconds()
		r.TimedOut = werr != nil
	}
	emit(r)
	if firstFail != nil {
		fmt.Fprintf(os.Stderr, "timeit: %d of %d runs failed; first: %v\n", failures, *n, firstFail)
	}
	if werr != nil {
		fmt.Fprintf(os.Stderr, "timeit: %v\n", werr)
	}
	if firstFail != nil || werr != nil {
		os.Exit(1)
	}
}

func startCmd(argv []string, in string, out *bytes.Buffer) (*exec.Cmd, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	if in != "" {
		f, err := os.Open(in)
		if err != nil {
			return nil, err
		}
		// exec copies the descriptor into the child; ours can go once
		// the child has started.
		defer f.Close()
		cmd.Stdin = f
	}
	if out != nil {
		cmd.Stdout, cmd.Stderr = out, out
	}
	return cmd, cmd.Start()
}

// runOnce runs the command and returns its wall time and peak RSS in KB.
func runOnce(argv []string, in string) (time.Duration, int64, error) {
	var out bytes.Buffer
	t0 := time.Now()
	cmd, err := startCmd(argv, in, &out)
	if err != nil {
		return 0, 0, err
	}
	err = cmd.Wait()
	d := time.Since(t0)
	var rss int64
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		rss = ru.Maxrss
	}
	if err != nil {
		return d, rss, fmt.Errorf("%v: %s", err, bytes.TrimSpace(out.Bytes()))
	}
	return d, rss, nil
}

// waitFile polls for path every 5 ms and returns how long after start it
// appeared.
func waitFile(path string, start time.Time, timeout time.Duration) (time.Duration, error) {
	deadline := start.Add(timeout)
	for {
		if _, err := os.Stat(path); err == nil {
			return time.Since(start), nil
		} else if !errors.Is(err, os.ErrNotExist) {
			return time.Since(start), err
		}
		if time.Now().After(deadline) {
			return time.Since(start), fmt.Errorf("%s did not appear within %v", path, timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func summarize(times []time.Duration) Result {
	r := Result{Runs: len(times)}
	if len(times) == 0 {
		return r
	}
	ms := make([]float64, len(times))
	var sum float64
	for i, d := range times {
		ms[i] = float64(d.Microseconds()) / 1000
		sum += ms[i]
	}
	slices.Sort(ms)
	r.MedianMS = quantile(ms, 0.5)
	r.P90MS = quantile(ms, 0.9)
	r.MeanMS = sum / float64(len(ms))
	r.MinMS, r.MaxMS = ms[0], ms[len(ms)-1]
	return r
}

// quantile interpolates linearly between the closest ranks of sorted xs.
func quantile(xs []float64, q float64) float64 {
	pos := q * float64(len(xs)-1)
	lo := int(math.Floor(pos))
	hi := min(lo+1, len(xs)-1)
	return xs[lo] + (xs[hi]-xs[lo])*(pos-float64(lo))
}

func emit(r Result) {
	b, _ := json.Marshal(r)
	fmt.Println(string(b))
}
