package runner_test

import (
	"fmt"
	"net"
	"testing"

	"github.com/emersion/go-smtp"

	"github.com/postie-mail/postie/internal/config"
	"github.com/postie-mail/postie/internal/runner"
	"github.com/postie-mail/postie/internal/testsink"
)

func startSink(t *testing.T) *testsink.Sink {
	t.Helper()
	s, err := testsink.Start(testsink.Options{Users: map[string]string{"user": password}, RequireAuth: true})
	tcheck(t, err, "sink")
	t.Cleanup(func() { s.Close() })
	return s
}

// deadAddr returns a loopback address where nothing listens.
func deadAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	tcheck(t, err, "listen")
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func TestRoutingAndFailover(t *testing.T) {
	h := newHarness(t, testsink.Options{}, "")
	routed := startSink(t)
	fallback := startSink(t)
	base := h.cfg.Smarthost
	host := func(addr, ca string) config.Smarthost {
		sh := base
		sh.Address, sh.CAFile = addr, ca
		return sh
	}
	// Mail from example.org goes through its own smarthost; the default
	// smarthost is down and its fallback takes the rest.
	h.cfg.Route = []config.Route{{Senders: []string{"*@example.org"}, Smarthost: host(routed.Addr, routed.CAFile)}}
	h.cfg.Smarthost = host(deadAddr(t), h.sink.CAFile)
	h.cfg.Fallback = []config.Smarthost{host(fallback.Addr, fallback.CAFile)}
	h.enqueue("alice@example.org", []string{"x@example.net"}, "routed\n")
	h.enqueue("bob@example.com", []string{"y@example.net"}, "default\n")
	sum := h.run(runner.Options{})
	if sum.Sent != 2 {
		t.Fatalf("summary %+v\n%s", sum, h.log.String())
	}
	if routed.Count() != 1 || routed.Messages()[0].From != "alice@example.org" {
		t.Errorf("routed sink got %d", routed.Count())
	}
	if fallback.Count() != 1 || fallback.Messages()[0].From != "bob@example.com" {
		t.Errorf("fallback sink got %d", fallback.Count())
	}
}

// A 4xx from the first smarthost sends the deferred recipients to the
// fallback; the accepted ones are not sent twice.
func TestFailoverOn4xx(t *testing.T) {
	h := newHarness(t, testsink.Options{}, "")
	fallback := startSink(t)
	h.sink.SetFault(testsink.Fault{Rcpt: func(to string) error {
		if to == "busy@example.net" {
			return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "busy"}
		}
		return nil
	}})
	sh := h.cfg.Smarthost
	sh.Address, sh.CAFile = fallback.Addr, fallback.CAFile
	h.cfg.Fallback = []config.Smarthost{sh}
	h.enqueue("bob@example.com", []string{"ok@example.net", "busy@example.net"}, "x\n")
	if sum := h.run(runner.Options{}); sum.Sent != 1 {
		t.Fatalf("summary %+v\n%s", sum, h.log.String())
	}
	if got := fmt.Sprint(h.sink.Messages()[0].To); got != "[ok@example.net]" {
		t.Errorf("primary delivered to %s", got)
	}
	if got := fmt.Sprint(fallback.Messages()[0].To); got != "[busy@example.net]" {
		t.Errorf("fallback delivered to %s", got)
	}
}

func TestRouteMatches(t *testing.T) {
	r := config.Route{Senders: []string{"alerts@example.com", "example.org", "@example.net", "*@*.example.io"}}
	for s, want := range map[string]bool{
		"alerts@example.com": true, "ALERTS@Example.com": true, "other@example.com": false,
		"a@example.org": true, "a@sub.example.org": false, "a@example.net": true,
		"a@x.example.io": true, "a@example.io": false, "": false,
	} {
		if got := r.Matches(s); got != want {
			t.Errorf("Matches(%q) = %v", s, got)
		}
	}
}
