package runner_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/postie-mail/postie/internal/runner"
	"github.com/postie-mail/postie/internal/testsink"
)

var benchConns = 4

// BenchmarkFlush flushes b.N queued 4 KB messages to a loopback sink with
// STARTTLS and AUTH; it reports messages per second.
func BenchmarkFlush(b *testing.B) {
	t := &testing.T{}
	h := newHarness(t, testsink.Options{Discard: true}, "")
	h.t = t
	h.cfg.Queue.Connections = benchConns
	body := strings.Repeat("The quick brown fox jumps over the lazy dog. 0123456789\n", 70)
	for i := range b.N {
		h.enqueue("alice@example.com", []string{fmt.Sprintf("r%d@example.org", i)}, body)
	}
	h.sp.Pickup()
	b.ResetTimer()
	start := time.Now()
	sum, err := h.runner().Run(context.Background(), runner.Options{})
	if err != nil || sum.Sent != b.N {
		b.Fatalf("run: %v %+v\n%s", err, sum, h.log.String())
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msg/s")
}
