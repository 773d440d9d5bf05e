package sendmailcmd

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func setup(t *testing.T, extra string) string {
	t.Helper()
	dir := t.TempDir()
	p := filepath.Join(dir, "postie.toml")
	os.WriteFile(p, []byte(fmt.Sprintf("hostname = \"web1.example.com\"\nspool_dir = %q\n[queue]\ndeliver = \"queue\"\n[log]\ntarget = \"stderr\"\n[aliases]\nroot = \"admin@example.com, ops\"\nops = \"ops@example.com\"\n%s",
		filepath.Join(dir, "spool"), extra)), 0o644)
	t.Setenv("POSTIE_CONFIG", p)
	return dir
}

func run(argv []string, stdin string) (int, string, string) {
	var out, errb bytes.Buffer
	code := Main(argv, IO{In: strings.NewReader(stdin), Out: &out, Err: &errb})
	return code, out.String(), errb.String()
}

func TestExitCodes(t *testing.T) {
	tests := []struct {
		name  string
		argv  []string
		stdin string
		code  int
		err   string
	}{
		{"ok is silent", []string{"sendmail", "-t", "-i"}, "To: a@example.com\n\nhi\n", 0, ""},
		{"unknown flag", []string{"sendmail", "-Q"}, "", 64, "sendmail: unknown option -Q\n"},
		{"-X refused", []string{"sendmail", "-X", "/tmp/log", "a@example.com"}, "", 64, "-X"},
		{"injection in argument", []string{"sendmail", "a@example.com\r\nDATA"}, "", 64, "line break"},
		{"-t without header", []string{"sendmail", "-t"}, "no header here\n", 65, "no header section"},
		{"NUL in header", []string{"sendmail", "a@example.com"}, "Subject: a\x00b\n\nx\n", 65, "NUL"},
		{"no recipients", []string{"sendmail"}, "Subject: x\n\nx\n", 64, "no recipients"},
		{"missing -C file", []string{"sendmail", "-C", "/nonexistent/postie.toml", "a@example.com"}, "", 78, "/nonexistent/postie.toml"},
		{"-bd refused", []string{"sendmail", "-bd"}, "", 64, "daemon"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			setup(t, "")
			code, out, errs := run(tt.argv, tt.stdin)
			if code != tt.code {
				t.Errorf("exit %d, want %d (%q)", code, tt.code, errs)
			}
			if tt.err == "" && (errs != "" || out != "") {
				t.Errorf("output on success: %q %q", out, errs)
			}
			if !strings.Contains(errs, tt.err) {
				t.Errorf("stderr %q lacks %q", errs, tt.err)
			}
			if tt.code != 0 && strings.Count(errs, "\n") != 1 {
				t.Errorf("error is not one line: %q", errs)
			}
		})
	}
}

func TestConfigError(t *testing.T) {
	dir := setup(t, "")
	os.WriteFile(filepath.Join(dir, "postie.toml"), []byte("hostname = \"h\"\nsmarthost_addr = \"x\"\n"), 0o644)
	code, _, errs := run([]string{"sendmail", "a@example.com"}, "x\n")
	if code != 78 || !strings.Contains(errs, `line 2: unknown key "smarthost_addr"`) {
		t.Errorf("exit %d: %q", code, errs)
	}
}

func TestVerify(t *testing.T) {
	setup(t, "")
	code, out, _ := run([]string{"sendmail", "-bv", "root", "bob@example.org"}, "")
	want := "admin@example.com... deliverable: relay (no smarthost configured)\nops@example.com... deliverable: relay (no smarthost configured)\nbob@example.org... deliverable: relay (no smarthost configured)\n"
	if code != 0 || out != want {
		t.Errorf("-bv: %d\n%s", code, out)
	}
}

func TestNewAliases(t *testing.T) {
	dir := setup(t, "")
	if code, out, errs := run([]string{"/usr/bin/newaliases"}, ""); code != 0 || out+errs != "" {
		t.Errorf("newaliases: %d %q %q", code, out, errs)
	}
	af := filepath.Join(dir, "aliases")
	os.WriteFile(af, []byte("# comment\npostmaster: root\nbad: |/usr/bin/procmail\n"), 0o644)
	b, _ := os.ReadFile(os.Getenv("POSTIE_CONFIG"))
	os.WriteFile(os.Getenv("POSTIE_CONFIG"), []byte(strings.Replace(string(b), "[queue]", fmt.Sprintf("aliases_file = %q\n[queue]", af), 1)), 0o644)
	code, _, errs := run([]string{"newaliases"}, "")
	if code != 78 || !strings.Contains(errs, "line 3") || !strings.Contains(errs, "pipe") {
		t.Errorf("newaliases with a pipe alias: %d %q", code, errs)
	}
}
