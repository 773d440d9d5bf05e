package sendmailcmd

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/postie-mail/postie/internal/spool"

	"github.com/postie-mail/postie/internal/maillog"
)

// fakeMailq is a mailq that writes its argv, one per line, to the file
// $FAKE_MAILQ_ARGS and exits with $FAKE_MAILQ_EXIT.
const fakeMailq = `#!/bin/sh
printf '%s\n' "$0" "$@" >"$FAKE_MAILQ_ARGS.tmp"
mv "$FAKE_MAILQ_ARGS.tmp" "$FAKE_MAILQ_ARGS"
exit "${FAKE_MAILQ_EXIT:-0}"
`

// fakeProgram returns a sendmail whose mailq is fakeMailq, run as a child
// where sendmail would exec it, and the file its arguments land in.
func fakeProgram(t *testing.T, exit string) (Program, string) {
	t.Helper()
	dir := t.TempDir()
	mailq := filepath.Join(dir, "mailq")
	if err := os.WriteFile(mailq, []byte(fakeMailq), 0o755); err != nil {
		t.Fatal(err)
	}
	args := filepath.Join(dir, "args")
	t.Setenv("FAKE_MAILQ_ARGS", args)
	t.Setenv("FAKE_MAILQ_EXIT", exit)
	p := Program{
		FindMailq: func() (string, error) { return mailq, nil },
		// Run mailq as a child instead of replacing the test.
		Exec: func(path string, argv, env []string) error {
			return (&exec.Cmd{Path: path, Args: argv, Env: env}).Run()
		},
	}
	return p, args
}

// mailqArgv returns the argv the fake mailq got (its $0 is its path, so
// the first element is replaced with "mailq"), or nil when it did not run.
func mailqArgv(t *testing.T, file string) []string {
	t.Helper()
	b, err := os.ReadFile(file)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	argv := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	argv[0] = "mailq"
	return argv
}

// TestMailqHandoff checks that what sendmail leaves to mailq reaches it
// with the right arguments, and that mailq's exit code is sendmail's.
func TestMailqHandoff(t *testing.T) {
	const cfgVar = "$CFG" // the config setup writes
	tests := []struct {
		name  string
		argv  []string
		exit  string
		code  int
		mailq []string // nil: mailq must not run
	}{
		{"-bp", []string{"sendmail", "-bp"}, "0", 0, []string{"mailq", "-C", cfgVar}},
		{"-bp ignores arguments", []string{"sendmail", "-bp", "-v", "x@example.com"}, "0", 0, []string{"mailq", "-C", cfgVar}},
		{"-bp exit code", []string{"sendmail", "-bp"}, "77", 77, []string{"mailq", "-C", cfgVar}},
		{"-q", []string{"sendmail", "-q"}, "75", 75, []string{"mailq", "-C", cfgVar, "-q"}},
		{"-q with interval", []string{"sendmail", "-q30m"}, "0", 0, []string{"mailq", "-C", cfgVar, "-q"}},
		{"-v -q IDs", []string{"sendmail", "-v", "-q", "6FXR0RP6A52CGXYV", "-x"}, "0", 0, []string{"mailq", "-C", cfgVar, "-q", "-v", "--", "6FXR0RP6A52CGXYV", "-x"}},
		{"-C passed on", []string{"sendmail", "-C", cfgVar, "-bp"}, "0", 0, []string{"mailq", "-C", cfgVar}},
		{"invoked as mailq", []string{"/usr/bin/mailq", "--json", "-C", "/x.toml"}, "0", 0, []string{"mailq", "--json", "-C", "/x.toml"}},
		{"invoked as mailq -q", []string{"mailq", "-q"}, "75", 75, []string{"mailq", "-q"}},
		{"bad command line: no mailq", []string{"sendmail", "-bp", "-X", "x"}, "0", 64, nil},
		{"newaliases: no mailq", []string{"newaliases"}, "0", 0, nil},
		{"-bv: no mailq", []string{"sendmail", "-bv", "x@example.com"}, "0", 0, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := setup(t, "")
			cfg := filepath.Join(dir, "postie.toml")
			p, file := fakeProgram(t, tt.exit)
			argv := slices.Clone(tt.argv)
			for i := range argv {
				argv[i] = strings.ReplaceAll(argv[i], cfgVar, cfg)
			}
			var out, errb bytes.Buffer
			code := p.Main(argv, IO{In: strings.NewReader(""), Out: &out, Err: &errb})
			if code != tt.code {
				t.Errorf("exit %d, want %d (%q)", code, tt.code, errb.String())
			}
			var want []string
			for _, a := range tt.mailq {
				want = append(want, strings.ReplaceAll(a, cfgVar, cfg))
			}
			if got := mailqArgv(t, file); !slices.Equal(got, want) {
				t.Errorf("mailq got %q, want %q", got, want)
			}
		})
	}
}

// TestConfigErrorBeforeMailq checks that sendmail reports a broken config
// itself, as before, rather than leaving it to mailq.
func TestConfigErrorBeforeMailq(t *testing.T) {
	dir := setup(t, "")
	os.WriteFile(filepath.Join(dir, "postie.toml"), []byte("hostname = \"h\"\nsmarthost_addr = \"x\"\n"), 0o644)
	p, file := fakeProgram(t, "0")
	for _, argv := range [][]string{{"sendmail", "-bp"}, {"sendmail", "-q"}} {
		var errb bytes.Buffer
		code := p.Main(argv, IO{In: strings.NewReader(""), Out: &bytes.Buffer{}, Err: &errb})
		if code != 78 || !strings.HasPrefix(errb.String(), "sendmail: ") {
			t.Errorf("%q: exit %d %q", argv, code, errb.String())
		}
	}
	if got := mailqArgv(t, file); got != nil {
		t.Errorf("mailq ran: %q", got)
	}
}

// TestDeliverAfterEnqueue checks deliver = "foreground" (mailq -q ID, waited
// for; sendmail exits 0 whatever mailq says) and "background" (a detached
// mailq -q --background).
func TestDeliverAfterEnqueue(t *testing.T) {
	tests := []struct {
		name    string
		deliver string
		argv    []string
		exit    string
		mailq   []string // "ID" stands for the queued message's ID
	}{
		{"foreground", "foreground", []string{"sendmail", "-i", "root"}, "75", []string{"-q", "--", "ID"}},
		{"foreground -v", "foreground", []string{"sendmail", "-v", "-i", "root"}, "0", []string{"-q", "-v", "--", "ID"}},
		{"background", "background", []string{"sendmail", "-i", "root"}, "0", []string{"-q", "--background"}},
		{"queue", "queue", []string{"sendmail", "-i", "root"}, "0", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := setupDeliver(t, tt.deliver)
			p, file := fakeProgram(t, tt.exit)
			var out, errb bytes.Buffer
			code := p.Main(tt.argv, IO{In: strings.NewReader("Subject: cron\n\nout\n"), Out: &out, Err: &errb})
			if code != 0 {
				t.Fatalf("exit %d: %q", code, errb.String())
			}
			if tt.mailq == nil {
				time.Sleep(50 * time.Millisecond)
				if got := mailqArgv(t, file); got != nil {
					t.Errorf("mailq ran: %q", got)
				}
				return
			}
			// The background runner is not waited for.
			var got []string
			for deadline := time.Now().Add(10 * time.Second); got == nil && time.Now().Before(deadline); {
				if got = mailqArgv(t, file); got == nil {
					time.Sleep(10 * time.Millisecond)
				}
			}
			want := append([]string{"mailq", "-C", cfg}, tt.mailq...)
			if i := slices.Index(want, "ID"); i >= 0 && len(got) == len(want) {
				want[i] = got[i]
				if !spool.ValidID(got[i]) {
					t.Errorf("mailq got %q as the ID", got[i])
				}
			}
			if !slices.Equal(got, want) {
				t.Errorf("mailq got %q, want %q", got, want)
			}
		})
	}
}

// TestMailqMissing checks what each handoff does without mailq: -bp and
// -q fail with EX_UNAVAILABLE; after an enqueue the message stays queued,
// with a line on stderr for foreground delivery and in the log for
// background delivery.
func TestMailqMissing(t *testing.T) {
	tests := []struct {
		name, deliver string
		argv          []string
		code          int
		stderr        string
	}{
		{"-bp", "queue", []string{"sendmail", "-bp"}, 69, "sendmail: cannot find mailq (looked for /nowhere/mailq): file does not exist\n"},
		{"-q", "queue", []string{"sendmail", "-q"}, 69, "sendmail: cannot find mailq (looked for /nowhere/mailq): file does not exist\n"},
		{"as mailq", "queue", []string{"mailq"}, 69, "sendmail: cannot find mailq (looked for /nowhere/mailq): file does not exist\n"},
		{"foreground", "foreground", []string{"sendmail", "root"}, 0, "sendmail: queued, not delivered now: cannot find mailq (looked for /nowhere/mailq): file does not exist\n"},
		{"background", "background", []string{"sendmail", "root"}, 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			setupDeliver(t, tt.deliver)
			var logb bytes.Buffer
			p := Program{
				FindMailq: func() (string, error) { return findMailq("/nowhere/sendmail", []string{"/nowhere/mailq"}) },
				Log:       maillog.NewWriter(&logb),
			}
			var errb bytes.Buffer
			code := p.Main(tt.argv, IO{In: strings.NewReader("Subject: x\n\nx\n"), Out: &bytes.Buffer{}, Err: &errb})
			if code != tt.code || errb.String() != tt.stderr {
				t.Errorf("exit %d %q, want %d %q", code, errb.String(), tt.code, tt.stderr)
			}
			// Background delivery says nothing on stderr, but the
			// log must show why nothing was delivered.
			if want := "queued, not delivered now: cannot find mailq"; tt.deliver == "background" && !strings.Contains(logb.String(), want) {
				t.Errorf("log %q, want a line with %q", logb.String(), want)
			}
		})
	}
}

// setupDeliver is setup with [queue] deliver = mode; it returns the
// config's path.
func setupDeliver(t *testing.T, mode string) string {
	t.Helper()
	cfg := filepath.Join(setup(t, ""), "postie.toml")
	b, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Replace(string(b), `deliver = "queue"`, `deliver = "`+mode+`"`, 1)
	if err := os.WriteFile(cfg, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestMailqCandidates(t *testing.T) {
	tests := []struct {
		exe  string
		want []string
	}{
		{"/usr/sbin/sendmail", []string{"/usr/sbin/mailq", "/usr/bin/mailq"}},
		{"/usr/local/sbin/sendmail", []string{"/usr/local/sbin/mailq", "/usr/local/bin/mailq"}},
		{"/home/u/postie/bin/sendmail", []string{"/home/u/postie/bin/mailq"}},
		{"/opt/sbin-tools/sendmail", []string{"/opt/sbin-tools/mailq"}},
	}
	for _, tt := range tests {
		if got := MailqCandidates(tt.exe); !slices.Equal(got, tt.want) {
			t.Errorf("MailqCandidates(%q) = %q, want %q", tt.exe, got, tt.want)
		}
	}
}

// TestFindMailq checks the lookup over a tree with sbin/sendmail: the
// first executable file wins, and sendmail itself never does.
func TestFindMailq(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, root, exe string)
		want  string // relative to root; "" is an error
	}{
		{"beside", func(t *testing.T, root, exe string) {
			writeExe(t, root+"/sbin/mailq", 0o755)
			writeExe(t, root+"/bin/mailq", 0o755)
		}, "sbin/mailq"},
		{"bin next to sbin", func(t *testing.T, root, exe string) {
			writeExe(t, root+"/bin/mailq", 0o755)
		}, "bin/mailq"},
		{"not executable", func(t *testing.T, root, exe string) {
			writeExe(t, root+"/sbin/mailq", 0o644)
			writeExe(t, root+"/bin/mailq", 0o755)
		}, "bin/mailq"},
		{"a directory", func(t *testing.T, root, exe string) {
			os.Mkdir(root+"/sbin/mailq", 0o755)
		}, ""},
		{"symlink to sendmail", func(t *testing.T, root, exe string) {
			os.Symlink("sendmail", root+"/sbin/mailq")
			writeExe(t, root+"/bin/mailq", 0o755)
		}, "bin/mailq"},
		{"hard link to sendmail", func(t *testing.T, root, exe string) {
			os.Link(exe, root+"/bin/mailq")
		}, ""},
		{"symlink to mailq", func(t *testing.T, root, exe string) {
			writeExe(t, root+"/bin/mailq", 0o755)
			os.Symlink("../bin/mailq", root+"/sbin/mailq")
		}, "sbin/mailq"},
		{"none", func(t *testing.T, root, exe string) {}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			os.Mkdir(root+"/bin", 0o755)
			os.Mkdir(root+"/sbin", 0o755)
			exe := root + "/sbin/sendmail"
			writeExe(t, exe, 0o755)
			tt.setup(t, root, exe)
			got, err := findMailq(exe, MailqCandidates(exe))
			if tt.want == "" {
				if err == nil || !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), root+"/bin/mailq") {
					t.Errorf("got %q, %v; want an error naming the places looked in", got, err)
				}
				return
			}
			if err != nil || got != filepath.Join(root, tt.want) {
				t.Errorf("got %q, %v; want %s", got, err, tt.want)
			}
		})
	}
}

func writeExe(t *testing.T, path string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"), mode); err != nil {
		t.Fatal(err)
	}
}
