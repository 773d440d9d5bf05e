package conform

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"hash"
	"io"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// genReader generates a message of about size bytes without holding it:
// a multipart with a text part of long 8-bit lines, a short part, and an
// application/octet-stream part with long lines, or (nonMIME) a plain
// message of long lines.
type genReader struct {
	size    int64
	nonMIME bool
	n       int64
	buf     bytes.Buffer
	stage   int
}

var genLine = strings.Repeat("Grüße aus der Cron-Ausgabe, Zeile mit Text; ", 50) // about 2300 octets

func (g *genReader) Read(p []byte) (int, error) {
	for g.buf.Len() < len(p) && g.stage < 4 {
		g.fill()
	}
	if g.buf.Len() == 0 {
		return 0, io.EOF
	}
	n, _ := g.buf.Read(p)
	g.n += int64(n)
	return n, nil
}

func (g *genReader) fill() {
	b := &g.buf
	switch g.stage {
	case 0:
		b.WriteString("From: cron@example.com\r\nSubject: big\r\n")
		if !g.nonMIME {
			b.WriteString("MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"=_b\"\r\n\r\n" +
				"preamble\r\n--=_b\r\nContent-Type: text/plain; charset=utf-8\r\n")
		}
		b.WriteString("\r\n")
		g.stage++
	case 1, 2:
		limit := g.size * int64(g.stage) / 2
		if g.nonMIME {
			limit = g.size
		}
		if g.n+int64(b.Len()) < limit {
			fmt.Fprintf(b, "%d %s\r\n", g.n, genLine)
			return
		}
		if g.nonMIME {
			g.stage = 4
			return
		}
		if g.stage == 1 {
			b.WriteString("--=_b\r\nContent-Type: text/plain\r\n\r\nshort\r\n" +
				"--=_b\r\nContent-Type: application/octet-stream\r\n\r\n")
		}
		g.stage++
	case 3:
		b.WriteString("--=_b--\r\n")
		g.stage++
	}
}

// lineChecker fails on a line longer than MaxLineLen and hashes what it is
// given.
type lineChecker struct {
	t     testing.TB
	col   int
	n     int64
	h     hash.Hash
	lines int64
}

func (c *lineChecker) Write(p []byte) (int, error) {
	c.h.Write(p)
	c.n += int64(len(p))
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			c.col += len(p)
			break
		}
		if c.col+i-1 > MaxLineLen {
			c.t.Fatalf("line %d has %d octets", c.lines+1, c.col+i-1)
		}
		c.col = 0
		c.lines++
		p = p[i+1:]
	}
	return n, nil
}

// TestLargeMessage streams 60 MB messages through Scan and Copy and checks
// that the heap stays flat.
func TestLargeMessage(t *testing.T) {
	if testing.Short() {
		t.Skip("large message")
	}
	const size = 60 << 20
	for _, nonMIME := range []bool{false, true} {
		t.Run(fmt.Sprintf("nonMIME=%v", nonMIME), func(t *testing.T) {
			f, err := Scan(&genReader{size: size, nonMIME: nonMIME})
			if err != nil {
				t.Fatal(err)
			}
			if !f.LongLines || !f.EightBit || !f.UTF8 {
				t.Fatalf("facts %+v", f)
			}
			var sums [2][]byte
			var peak uint64
			for i := range sums {
				runtime.GC()
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				base := ms.HeapAlloc
				var high atomic.Uint64
				done := make(chan struct{})
				var wg sync.WaitGroup
				wg.Add(1)
				go func() {
					defer wg.Done()
					var ms runtime.MemStats
					for {
						runtime.ReadMemStats(&ms)
						if ms.HeapAlloc > base && ms.HeapAlloc-base > high.Load() {
							high.Store(ms.HeapAlloc - base)
						}
						select {
						case <-done:
							return
						case <-time.After(2 * time.Millisecond):
						}
					}
				}()
				c := &lineChecker{t: t, h: sha256.New()}
				start := time.Now()
				n, err := Copy(c, &genReader{size: size, nonMIME: nonMIME}, f)
				close(done)
				wg.Wait()
				if err != nil {
					t.Fatal(err)
				}
				if n != c.n || n < size {
					t.Fatalf("wrote %d bytes, counted %d", n, c.n)
				}
				sums[i] = c.h.Sum(nil)
				peak = max(peak, high.Load())
				t.Logf("%d MB in, %d MB out in %v, peak heap growth %d KiB", size>>20, n>>20, time.Since(start).Round(time.Millisecond), high.Load()>>10)
			}
			if !bytes.Equal(sums[0], sums[1]) {
				t.Errorf("two runs gave different output")
			}
			// Line chunk, header section and read-ahead buffers, plus
			// slack for the garbage collector's pace.
			if peak > 24<<20 {
				t.Errorf("peak heap growth %d MiB", peak>>20)
			}
		})
	}
}

func benchmarkCopy(b *testing.B, in []byte) {
	f, _ := Scan(bytes.NewReader(in))
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Copy(io.Discard, bytes.NewReader(in), f); err != nil {
			b.Fatal(err)
		}
	}
}

func genMessage(size int64, nonMIME bool) []byte {
	b, _ := io.ReadAll(&genReader{size: size, nonMIME: nonMIME})
	return b
}

func BenchmarkCopyLongLinesMultipart(b *testing.B) { benchmarkCopy(b, genMessage(8<<20, false)) }
func BenchmarkCopyLongLinesNonMIME(b *testing.B)   { benchmarkCopy(b, genMessage(8<<20, true)) }

func BenchmarkCopyBareCR(b *testing.B) {
	benchmarkCopy(b, bytes.Repeat([]byte("progress 10%\r20%\r30%\r\n"), 8<<20/23))
}

func BenchmarkCopyFastPath(b *testing.B) {
	benchmarkCopy(b, bytes.Repeat([]byte("an ordinary line of cron output\r\n"), 8<<20/33))
}

func BenchmarkScan(b *testing.B) {
	in := genMessage(8<<20, false)
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		Scan(bytes.NewReader(in))
	}
}

// TestCopySmallBuffer checks that copying a small message that needs no
// work does not take io.Copy's 32 KB buffer: a queue runner copies every
// message it delivers, and the garbage cost it about a tenth of its user
// CPU (ab-flush.sh, 10,000 messages).
func TestCopySmallBuffer(t *testing.T) {
	msg := bytes.Repeat([]byte("an ordinary line of cron output\r\n"), 4096/33)
	src := bytes.NewReader(msg)
	var before, after runtime.MemStats
	const runs = 100
	runtime.GC()
	runtime.ReadMemStats(&before)
	for range runs {
		if _, err := Copy(io.Discard, io.NewSectionReader(src, 0, int64(len(msg))), Facts{}); err != nil {
			t.Fatal(err)
		}
	}
	runtime.ReadMemStats(&after)
	// 4 KB of buffer and a few small objects a copy; 32 KB before.
	if per := (after.TotalAlloc - before.TotalAlloc) / runs; per > 8<<10 {
		t.Errorf("Copy of a %d-byte message allocated %d bytes, want at most 8 KB", len(msg), per)
	}
}
