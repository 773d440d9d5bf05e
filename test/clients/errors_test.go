package clients_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestBadInput runs the real binary on bad command lines and bad input:
// each must exit with its sysexits code, say why on stderr in one line,
// and leave nothing in the spool (tmp/, incoming/, queue/).
func TestBadInput(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	// A good message first, so that the spool directories exist and an
	// empty one means something.
	if res := r.sendmail([]byte("Subject: warm-up\n\nok\n"), "ok@example.com"); res.code != 0 {
		t.Fatalf("warm-up: %v", res)
	}
	r.deliver(1)
	r.expectSpoolEmpty()

	xfile := filepath.Join(r.dir, "traffic.log")
	tests := []struct {
		name   string
		argv   []string
		input  string
		code   int
		stderr string // the one line must contain this
	}{
		{"unknown flag", []string{"-Z", "a@example.com"}, "Subject: x\n\nx\n", 64, "-Z"},
		{"unknown flag in a cluster", []string{"-tiZ"}, "To: a@example.com\n\nx\n", 64, "-Z"},
		{"-X file", []string{"-X", xfile, "a@example.com"}, "Subject: x\n\nx\n", 64, "-X"},
		{"-t without a header", []string{"-t", "-i"}, "just a line of text\nand another\n", 65, "header"},
		{"-t with empty input", []string{"-t"}, "", 65, "header"},
		{"-t without recipients", []string{"-t"}, "Subject: nobody\n\nx\n", 65, "recipient"},
		{"NUL in header, -t", []string{"-t", "-i"}, "To: a@example.com\nSubject: bad\x00byte\n\nbody\n", 65, "NUL"},
		{"NUL in header, argv recipient", []string{"-i", "a@example.com"}, "Subject: ok\nX-Bad: a\x00b\n\nbody\n", 65, "NUL"},
		{"CRLF in a recipient", []string{"a@example.com\r\nRCPT TO:<evil@example.com>"}, "Subject: x\n\nx\n", 64, "line break"},
		{"LF in -f", []string{"-f", "x@example.com\nBcc: evil@example.com", "a@example.com"}, "Subject: x\n\nx\n", 64, "line break"},
		{"CR in -F", []string{"-F", "Name\rBcc: evil@example.com", "a@example.com"}, "Subject: x\n\nx\n", 64, "line break"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// Not parallel: the subtests share the rig's spool, which
			// must be empty after each.
			r.t = t
			res := r.sendmail([]byte(tc.input), tc.argv...)
			if res.code != tc.code {
				t.Errorf("exit %d, want %d (%v)", res.code, tc.code, res)
			}
			if strings.Count(res.stderr, "\n") != 1 || !strings.HasSuffix(res.stderr, "\n") ||
				!strings.HasPrefix(res.stderr, "sendmail: ") || !strings.Contains(res.stderr, tc.stderr) {
				t.Errorf("stderr %q, want one line \"sendmail: ...\" that mentions %q", res.stderr, tc.stderr)
			}
			if res.stdout != "" {
				t.Errorf("stdout %q, want nothing", res.stdout)
			}
			r.expectSpoolEmpty()
		})
	}
	r.t = t
	if _, err := os.Stat(xfile); err == nil {
		t.Errorf("-X created %s", xfile)
	}
	// Nothing was delivered after the warm-up.
	if got := r.flush(); len(got) != 1 {
		t.Errorf("sink has %d messages, want only the warm-up", len(got))
	}
}
