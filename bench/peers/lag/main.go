// Command lag is a TCP forwarder that holds every chunk it relays for
// -delay in each direction, so that a smarthost on loopback looks as far
// away as one across a network: a round trip costs twice -delay. The
// flush on loopback hides what a client's round trips cost; behind lag
// they show (bench/peers/ab-flush.sh runs it when DELAY is set).
//
//	lag -to 127.0.0.1:2525 -delay 5ms
//
// It listens on an ephemeral port of 127.0.0.1 and prints that address on
// its first line. Order is kept and nothing is coalesced or split, so TLS
// and SMTP pass through untouched.
package main

import (
	"flag"
	"fmt"
	"net"
	"os"
	"time"
)

// chunk is data read at one instant, to be written at due.
type chunk struct {
	due time.Time
	b   []byte
}

// forward copies src to dst, each chunk d after it was read. A writer
// goroutine keeps the delay per chunk, not per queue: a burst arrives as a
// burst, d later.
func forward(dst, src *net.TCPConn, d time.Duration) {
	ch := make(chan chunk, 4096)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for c := range ch {
			time.Sleep(time.Until(c.due))
			if _, err := dst.Write(c.b); err != nil {
				for range ch {
				}
				return
			}
		}
		dst.CloseWrite()
	}()
	buf := make([]byte, 64<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			ch <- chunk{time.Now().Add(d), append([]byte(nil), buf[:n]...)}
		}
		if err != nil {
			close(ch)
			<-done
			return
		}
	}
}

func main() {
	to := flag.String("to", "", "address to forward to (host:port)")
	d := flag.Duration("delay", 5*time.Millisecond, "one-way delay")
	flag.Parse()
	if *to == "" {
		fmt.Fprintln(os.Stderr, "usage: lag -to HOST:PORT [-delay 5ms]")
		os.Exit(2)
	}
	l, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		fmt.Fprintln(os.Stderr, "lag:", err)
		os.Exit(1)
	}
	fmt.Println(l.Addr())
	for {
		c, err := l.AcceptTCP()
		if err != nil {
			fmt.Fprintln(os.Stderr, "lag:", err)
			os.Exit(1)
		}
		go func() {
			defer c.Close()
			u, err := net.Dial("tcp", *to)
			if err != nil {
				fmt.Fprintln(os.Stderr, "lag:", err)
				return
			}
			defer u.Close()
			go forward(u.(*net.TCPConn), c, *d)
			forward(c, u.(*net.TCPConn), *d)
		}()
	}
}
