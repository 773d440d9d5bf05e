// Package memory_test runs Postie's enqueue and flush in-process, with the
// DKIM setup of run.sh, so that the Go tools can say where memory goes:
//
//	go test -run '^$' -bench 'Flush/60MB' -benchtime 1x -benchmem \
//	    -memprofile /tmp/mem.out ./bench/memory
//	go tool pprof -sample_index=alloc_space -top /tmp/mem.out
//
// run.sh measures the peak RSS of the real programs; these benchmarks
// report bytes allocated per message (B/op), which drive how far the heap
// grows between collections. The smarthost (internal/testsink) runs in the
// same process and counts only; its allocations show in the profile under
// go-smtp's server and testsink.
package memory_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/postie-mail/postie/bench/memory/msggen"
	"github.com/postie-mail/postie/internal/mailqcmd"
	"github.com/postie-mail/postie/internal/sendmailcmd"
	"github.com/postie-mail/postie/internal/testsink"
)

var sizes = []struct {
	name string
	size int
}{
	{"4KB", 4 << 10},
	{"60MB", 60 << 20},
}

// rig is a spool, a config with an RSA 2048 and an Ed25519 key for
// example.com, a counting smarthost, and the message to send, in a file.
type rig struct {
	config string
	msg    string
	sink   *testsink.Sink
}

func newRig(b *testing.B, size int) *rig {
	b.Helper()
	dir := b.TempDir()
	sink, err := testsink.Start(testsink.Options{Users: map[string]string{"u": "p"}, RequireAuth: true, Discard: true})
	check(b, err, "starting the sink")
	b.Cleanup(func() { sink.Close() })

	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	check(b, err, "generating the RSA key")
	_, ek, err := ed25519.GenerateKey(rand.Reader)
	check(b, err, "generating the Ed25519 key")
	ekDER, err := x509.MarshalPKCS8PrivateKey(ek)
	check(b, err, "marshalling the Ed25519 key")
	rsaPath := writePEM(b, dir, "rsa.pem", "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rk))
	edPath := writePEM(b, dir, "ed25519.pem", "PRIVATE KEY", ekDER)

	r := &rig{config: filepath.Join(dir, "postie.toml"), msg: filepath.Join(dir, "msg"), sink: sink}
	cfg := fmt.Sprintf(`hostname = "web1.example.com"
spool_dir = %q

[smarthost]
address = %q
username = "u"
password = "p"
ca_file = %q

[dkim]
domain = "example.com"
selector = "rsa"
private_key_file = %q

[[dkim.key]]
domain = "example.com"
selector = "ed"
private_key_file = %q

[queue]
deliver = "queue"

[log]
target = "stderr"
`, filepath.Join(dir, "spool"), sink.Addr, sink.CAFile, rsaPath, edPath)
	check(b, os.WriteFile(r.config, []byte(cfg), 0o644), "writing the config")

	f, err := os.Create(r.msg)
	check(b, err, "creating the message")
	check(b, msggen.Write(f, size, "Reports <reports@example.com>", "someone@example.net"), "writing the message")
	check(b, f.Close(), "writing the message")
	return r
}

func writePEM(b *testing.B, dir, name, typ string, der []byte) string {
	b.Helper()
	p := filepath.Join(dir, name)
	check(b, os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600), "writing "+name)
	return p
}

func check(b *testing.B, err error, what string) {
	b.Helper()
	if err != nil {
		b.Fatalf("%s: %v", what, err)
	}
}

func (r *rig) enqueue(b *testing.B) {
	f, err := os.Open(r.msg)
	check(b, err, "opening the message")
	defer f.Close()
	var stderr bytes.Buffer
	if code := sendmailcmd.Main([]string{"sendmail", "-C", r.config, "-t", "-i"}, sendmailcmd.IO{In: f, Out: io.Discard, Err: &stderr}); code != 0 {
		b.Fatalf("sendmail -t -i: exit %d: %s", code, stderr.String())
	}
}

func (r *rig) flush(b *testing.B) {
	var stderr bytes.Buffer
	if code := mailqcmd.Main([]string{"mailq", "-C", r.config, "-q"}, mailqcmd.IO{In: nil, Out: io.Discard, Err: &stderr}); code != 0 {
		b.Fatalf("mailq -q: exit %d: %s", code, stderr.String())
	}
}

// BenchmarkEnqueue measures sendmail -t -i.
func BenchmarkEnqueue(b *testing.B) {
	for _, s := range sizes {
		b.Run(s.name, func(b *testing.B) {
			r := newRig(b, s.size)
			b.SetBytes(int64(s.size))
			b.ResetTimer()
			for range b.N {
				r.enqueue(b)
				b.StopTimer()
				r.flush(b) // keep the spool from growing
				b.StartTimer()
			}
		})
	}
}

// BenchmarkFlush measures mailq -q of one queued message: DKIM signing
// with both keys and sending, each a pass through internal/conform.
func BenchmarkFlush(b *testing.B) {
	for _, s := range sizes {
		b.Run(s.name, func(b *testing.B) {
			r := newRig(b, s.size)
			b.SetBytes(int64(s.size))
			b.ResetTimer()
			for range b.N {
				b.StopTimer()
				r.enqueue(b)
				b.StartTimer()
				r.flush(b)
			}
			if got := r.sink.Count(); got != int64(b.N) {
				b.Fatalf("the smarthost received %d messages, want %d", got, b.N)
			}
		})
	}
}
