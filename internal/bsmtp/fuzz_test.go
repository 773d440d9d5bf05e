package bsmtp

import (
	"os"
	"strings"
	"testing"
)

// maxFuzzInput bounds a fuzz input; larger ones say nothing new and slow
// the fuzzer down.
const maxFuzzInput = 16 << 10

// FuzzServe feeds arbitrary client input to Serve. Whatever the input,
// Serve must return (run fails the test after sessionTimeout), no panic
// may come from this package, every reply must be a well-formed reply
// line, every message queued must have been announced by its ID and
// counted, and no partial file may be left in tmp/.
//
// The seed corpus is in testdata/fuzz/FuzzServe; run the fuzzer with
// go test -fuzz=FuzzServe ./internal/bsmtp/.
func FuzzServe(f *testing.F) {
	f.Add([]byte(lines("HELO x", "MAIL FROM:<a@b.example>", "RCPT TO:<root@test.example>", "DATA") + data("Subject: s", "..x") + lines("QUIT")))
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) > maxFuzzInput {
			t.Skip("input too large")
		}
		fx := newFixtureIn(t, fastDir(t), map[string]string{"root": "admin@example.com", "loop": "loop2", "loop2": "loop"}, 4096)
		r := fx.run(t, string(in))
		if strings.Contains(r.log, "internal/bsmtp") {
			t.Fatalf("panic in bsmtp: %s", r.log)
		}
		if r.err != nil {
			t.Fatalf("Serve: %v", r.err)
		}
		for _, l := range strings.SplitAfter(r.out, "\r\n") {
			if l == "" {
				continue
			}
			text := l[:len(l)-2]
			ok := len(l) >= 6 && strings.HasSuffix(l, "\r\n") && (l[3] == ' ' || l[3] == '-') &&
				l[0] >= '2' && l[0] <= '5' && isDigit(l[1]) && isDigit(l[2]) &&
				!strings.ContainsFunc(text, func(r rune) bool { return r < ' ' && r != '\t' || r == 0x7f })
			if !ok {
				t.Fatalf("malformed reply line %q in %q", l, r.out)
			}
		}
		ids := queuedIDs(r.out)
		if r.n != len(ids) {
			t.Fatalf("Serve returned %d, replies name %d queued messages", r.n, len(ids))
		}
		fx.inOrder(t, ids)
		fx.checkTmpEmpty(t)
	})
}

// fastDir returns a temporary directory on tmpfs when there is one: the
// spool syncs every message it queues, which on a disk makes fuzzing
// crawl.
func fastDir(t *testing.T) string {
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		if d, err := os.MkdirTemp("/dev/shm", "bsmtp-fuzz-"); err == nil {
			t.Cleanup(func() { os.RemoveAll(d) })
			return d
		}
	}
	return t.TempDir()
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }
