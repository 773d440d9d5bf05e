package dkimsign

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// vmHWM returns the process's peak resident set size in bytes, from
// /proc/self/status, or 0 where there is none.
func vmHWM() int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

const memChildEnv = "DKIMSIGN_MEMORY_CHILD"

// TestSignMemory signs generated messages of 6 MB and 60 MB with an RSA
// 2048 and an Ed25519 key, each in a fresh process (peak RSS is per
// process), and checks that the peak does not grow with the message.
func TestSignMemory(t *testing.T) {
	if raceEnabled {
		t.Skip("peak memory under the race detector says nothing about Sign")
	}
	if testing.Short() {
		t.Skip("signs 66 MB in child processes")
	}
	if _, err := os.Stat("/proc/self/status"); err != nil {
		t.Skip("no /proc/self/status to read VmHWM from")
	}
	dir := t.TempDir()
	rk, ek := keyMaterial(t)
	writePEM(t, dir, "rsa.pem", "PRIVATE KEY", pkcs8(t, rk), 0o600)
	writePEM(t, dir, "ed.pem", "PRIVATE KEY", pkcs8(t, ek), 0o600)

	peak := make(map[int]int64)
	for _, mb := range []int{6, 60} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestSignMemoryChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s:%d", memChildEnv, dir, mb))
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("child for %d MB: %v\n%s", mb, err, out)
		}
		var line string
		for _, l := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(l, "MEMORY ") {
				line = l
			}
		}
		if line == "" {
			t.Fatalf("child for %d MB printed no MEMORY line:\n%s", mb, out)
		}
		t.Log(line)
		f := strings.Fields(line)
		for _, kv := range f {
			if v, ok := strings.CutPrefix(kv, "vmhwm="); ok {
				peak[mb], _ = strconv.ParseInt(v, 10, 64)
			}
		}
	}
	growth := peak[60] - peak[6]
	t.Logf("peak RSS: %.1f MiB for 6 MB, %.1f MiB for 60 MB (growth %.1f MiB)",
		float64(peak[6])/(1<<20), float64(peak[60])/(1<<20), float64(growth)/(1<<20))
	if growth > 8<<20 {
		t.Errorf("peak RSS grows by %d bytes from a 6 MB to a 60 MB message: signing is not streaming", growth)
	}
	if peak[60] > 40<<20 {
		t.Errorf("peak RSS %d bytes for a 60 MB message", peak[60])
	}
}

// TestSignMemoryChild is TestSignMemory's child process; it does nothing
// in a normal run.
func TestSignMemoryChild(t *testing.T) {
	arg := os.Getenv(memChildEnv)
	if arg == "" {
		t.Skip("run by TestSignMemory")
	}
	dir, mbs, _ := strings.Cut(arg, ":")
	mb, err := strconv.Atoi(mbs)
	tcheck(t, err, "size")
	s := NewSigner([]*Key{
		loadKey(t, KeyConfig{Domain: "example.com", Selector: "rsa", PrivateKeyFile: dir + "/rsa.pem"}),
		loadKey(t, KeyConfig{Domain: "example.com", Selector: "ed", PrivateKeyFile: dir + "/ed.pem"}),
	})
	runtime.GC()
	before := vmHWM()
	start := time.Now()
	size := mb << 20
	r := generated(func(w io.Writer) error { return writeLargeMessage(w, size) })
	sig, err := s.Sign("example.com", r)
	tcheck(t, err, "Sign")
	elapsed := time.Since(start)
	checkSignatureFields(t, sig, 2)
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	fmt.Printf("MEMORY size=%d vmhwm=%d vmhwm_before=%d heap_sys=%d sys=%d total_alloc=%d num_gc=%d elapsed=%s\n",
		size, vmHWM(), before, ms.HeapSys, ms.Sys, ms.TotalAlloc, ms.NumGC, elapsed.Round(time.Millisecond))
}

// BenchmarkSign signs a generated 16 MB message with RSA 2048 and Ed25519.
func BenchmarkSign(b *testing.B) {
	s := NewSigner(testKeys(b)[:2])
	const size = 16 << 20
	b.SetBytes(size)
	b.ReportAllocs()
	for b.Loop() {
		r := generated(func(w io.Writer) error { return writeLargeMessage(w, size) })
		if _, err := s.Sign("example.com", r); err != nil {
			b.Fatal(err)
		}
	}
}
