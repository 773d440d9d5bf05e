package maillog

import (
	"bytes"
	"errors"
	"slices"
	"testing"
)

// fakeSyslog records what a Logger sends to syslog.
type fakeSyslog struct{ lines []string }

func (f *fakeSyslog) Info(m string) error    { f.lines = append(f.lines, "info "+m); return nil }
func (f *fakeSyslog) Warning(m string) error { f.lines = append(f.lines, "warning "+m); return nil }

// TestSyslogDial checks that a syslog Logger connects on its first line,
// not before, and tries once.
func TestSyslogDial(t *testing.T) {
	tests := []struct {
		name     string
		reach    bool // syslog answers
		fallback bool // stderr when it does not (New), else drop (NewSyslog)
		lines    int
		dials    int
		sys      []string
		stderr   string
	}{
		{"nothing logged, no dial", true, true, 0, 0, nil, ""},
		{"one dial for many lines", true, true, 3, 1, []string{"info line 0", "warning line 1", "info line 2"}, ""},
		{"unreachable: stderr, one dial", false, true, 3, 1, nil, "postie: line 0\npostie: line 1\npostie: line 2\n"},
		{"unreachable, syslog only: dropped", false, false, 2, 1, nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stderr bytes.Buffer
			sys := &fakeSyslog{}
			dials := 0
			l := NewSyslog()
			if tt.fallback {
				l = New("syslog")
				l.w = &stderr
			}
			l.dial = func() (sysWriter, error) {
				dials++
				if !tt.reach {
					return nil, errors.New("no syslog")
				}
				return sys, nil
			}
			for i := range tt.lines {
				if i%2 == 1 {
					l.Errorf("line %d", i)
				} else {
					l.Printf("line %d", i)
				}
			}
			if dials != tt.dials {
				t.Errorf("dialled %d times, want %d", dials, tt.dials)
			}
			if !slices.Equal(sys.lines, tt.sys) {
				t.Errorf("syslog got %q, want %q", sys.lines, tt.sys)
			}
			if stderr.String() != tt.stderr {
				t.Errorf("stderr got %q, want %q", stderr.String(), tt.stderr)
			}
		})
	}
}

func TestStderrNeverDials(t *testing.T) {
	if l := New("stderr"); l.dial != nil {
		t.Error("a stderr Logger would dial syslog")
	}
	var b bytes.Buffer
	l := NewWriter(&b)
	l.Printf("%s", "a\r\nb\n")
	if b.String() != "postie: a b \n" {
		t.Errorf("got %q", b.String())
	}
}
