// Command postie-sink runs a loopback SMTP smarthost (STARTTLS or implicit
// TLS, AUTH PLAIN/LOGIN) that stores every message it accepts as a file. It
// is the peer of Postie's demo, client tests and benchmarks; it is not
// installed.
//
//	postie-sink -dir /tmp/mail -user u -pass p -info /tmp/sink.env
//
// writes ADDR=, CA_FILE= and FINGERPRINT= lines to the -info file once it
// listens, then serves until killed.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/postie-mail/postie/internal/testsink"
)

func main() {
	var (
		addr    = flag.String("listen", "127.0.0.1:0", "address to listen on (loopback)")
		mode    = flag.String("tls", "starttls", "starttls, implicit or none")
		dir     = flag.String("dir", "", "directory to store received messages in (none: count only)")
		user    = flag.String("user", "", "AUTH user name (empty: no AUTH)")
		pass    = flag.String("pass", "", "AUTH password")
		info    = flag.String("info", "", "file to write ADDR, CA_FILE and FINGERPRINT to")
		maxSize = flag.Int64("max-size", 0, "SIZE limit in bytes (0: none)")
		expect  = flag.Int64("expect", 0, "with -done: the number of messages to wait for")
		done    = flag.String("done", "", "file to write COUNT= and SECONDS= (first to last message) once -expect messages arrived")
	)
	flag.Parse()
	opts := testsink.Options{TLS: *mode, Dir: *dir, Discard: *dir == "", Addr: *addr, MaxMessageBytes: *maxSize}
	if *user != "" {
		opts.Users = map[string]string{*user: *pass}
		opts.RequireAuth = true
	}
	s, err := testsink.Start(opts)
	if err != nil {
		fmt.Fprintf(os.Stderr, "postie-sink: %v\n", err)
		os.Exit(1)
	}
	defer s.Close()
	text := fmt.Sprintf("ADDR=%s\nCA_FILE=%s\nFINGERPRINT=%s\n", s.Addr, s.CAFile, s.Fingerprint)
	if *info != "" {
		if err := os.WriteFile(*info+".tmp", []byte(text), 0o644); err == nil {
			os.Rename(*info+".tmp", *info)
		}
	} else {
		fmt.Print(text)
	}
	if *expect > 0 && *done != "" {
		go func() {
			var first time.Time
			for {
				n := s.Count()
				if n > 0 && first.IsZero() {
					first = time.Now()
				}
				if n >= *expect {
					text := fmt.Sprintf("COUNT=%d\nSECONDS=%.3f\n", n, time.Since(first).Seconds())
					os.WriteFile(*done+".tmp", []byte(text), 0o644)
					os.Rename(*done+".tmp", *done)
					return
				}
				time.Sleep(2 * time.Millisecond)
			}
		}()
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	<-sig
	fmt.Fprintf(os.Stderr, "postie-sink: %d messages received\n", s.Count())
}
