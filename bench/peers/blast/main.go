// Command blast measures how fast postie-sink itself accepts mail: the
// ceiling that no client relaying through it can pass. It opens -c
// connections at once, each with STARTTLS (certificate verified against
// -ca) and AUTH PLAIN, and sends -n messages of -size bytes over them in
// all, one after another on each connection, as a relay that reuses its
// connections would. It prints one JSON object:
//
//	{"messages":10000,"connections":8,"seconds":1.9,"per_second":5263}
//
// The time runs from before the first connection to the last reply.
package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

func main() {
	var (
		addr  = flag.String("addr", "", "sink host:port")
		ca    = flag.String("ca", "", "PEM file with the sink's certificate")
		user  = flag.String("user", "", "AUTH user")
		pass  = flag.String("pass", "", "AUTH password")
		n     = flag.Int("n", 10000, "messages in all")
		conns = flag.Int("c", 8, "parallel connections")
		size  = flag.Int("size", 4096, "message size in bytes")
		file  = flag.String("file", "", "send this message (LF or CRLF) instead of a generated one")
	)
	flag.Parse()
	if *addr == "" || *ca == "" {
		fmt.Fprintln(os.Stderr, "usage: blast -addr HOST:PORT -ca CA.pem -user U -pass P [-n 10000] [-c 8] [-size 4096]")
		os.Exit(2)
	}
	pem, err := os.ReadFile(*ca)
	if err != nil {
		fail(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		fail(fmt.Errorf("%s: no certificate", *ca))
	}
	host, _, err := net.SplitHostPort(*addr)
	if err != nil {
		fail(err)
	}
	tlsConf := &tls.Config{RootCAs: roots, ServerName: host}
	msg := message(*size)
	if *file != "" {
		b, err := os.ReadFile(*file)
		if err != nil {
			fail(err)
		}
		msg = bytes.ReplaceAll(bytes.ReplaceAll(b, []byte("\r\n"), []byte("\n")), []byte("\n"), []byte("\r\n"))
	}

	var (
		next    atomic.Int64
		sent    atomic.Int64
		wg      sync.WaitGroup
		errOnce sync.Once
		first   error
	)
	start := time.Now()
	for range *conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := worker(*addr, tlsConf, *user, *pass, msg, int64(*n), &next, &sent); err != nil {
				errOnce.Do(func() { first = err })
			}
		}()
	}
	wg.Wait()
	secs := time.Since(start).Seconds()
	if first != nil {
		fail(first)
	}
	out, _ := json.Marshal(map[string]any{
		"messages": sent.Load(), "connections": *conns, "seconds": secs,
		"per_second": float64(sent.Load()) / secs,
	})
	fmt.Println(string(out))
}

// worker sends messages on one connection until n have been taken in all.
func worker(addr string, tlsConf *tls.Config, user, pass string, msg []byte, n int64, next, sent *atomic.Int64) error {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	c, err := smtp.NewClientStartTLS(conn, tlsConf)
	if err != nil {
		return fmt.Errorf("starttls: %w", err)
	}
	defer c.Close()
	if user != "" {
		if err := c.Auth(sasl.NewPlainClient("", user, pass)); err != nil {
			return fmt.Errorf("auth: %w", err)
		}
	}
	for i := next.Add(1); i <= n; i = next.Add(1) {
		if err := c.SendMail("bench@example.com", []string{fmt.Sprintf("r%d@example.org", i)}, bytes.NewReader(msg)); err != nil {
			return fmt.Errorf("message %d: %w", i, err)
		}
		sent.Add(1)
	}
	return c.Quit()
}

// message builds a plain-text message of exactly size bytes (at least its
// header), with CRLF line endings.
func message(size int) []byte {
	var b bytes.Buffer
	b.WriteString("From: bench@example.com\r\nTo: sink@example.org\r\nSubject: blast\r\nMessage-ID: <blast@example.com>\r\n\r\n")
	const line = "The quick brown fox jumps over the lazy dog. 0123456789012345678901\r\n"
	for b.Len()+len(line) <= size {
		b.WriteString(line)
	}
	for b.Len() < size-2 {
		b.WriteByte('x')
	}
	if b.Len() < size {
		b.WriteString("\r\n")
	}
	return b.Bytes()
}

func fail(err error) {
	fmt.Fprintf(os.Stderr, "blast: %v\n", err)
	os.Exit(1)
}
