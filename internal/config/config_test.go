package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseFull(t *testing.T) {
	text := `
hostname = "web1.example.com"
spool_dir = "/var/spool/postie"

[smarthost]
address = "smtp.example.com:587"
tls = "starttls"
username = "web1@example.com"
password_file = "/etc/postie/password"
ca_file = ""

[dkim]
domain = "example.com"
selector = "mail"
private_key_file = "/etc/postie/dkim.key"

[[dkim.key]]
domain = "example.com"
selector = "ed"
private_key_file = "/etc/postie/ed.key"

[queue]
deliver = "queue"
max_age = "48h"

[aliases]
root = "admin@example.com"
"www-data" = "web@example.com"

[limits]
messages_per_hour = 100
[limits.user.www-data]
messages_per_hour = 10
[limits.user.1001]
recipients_per_message = 5
`
	c, err := Parse("t.toml", text)
	if err != nil {
		t.Fatal(err)
	}
	if c.Hostname != "web1.example.com" || c.Smarthost.Address != "smtp.example.com:587" || c.Queue.Deliver != "queue" {
		t.Errorf("parsed %+v", c)
	}
	if c.Queue.MaxAge.Duration != 48*time.Hour {
		t.Errorf("max_age = %v", c.Queue.MaxAge)
	}
	if len(c.DKIM.Keys()) != 2 {
		t.Errorf("dkim keys = %d", len(c.DKIM.Keys()))
	}
	if m, r, _ := c.Limits.For(33, "www-data"); m != 10 || r != 0 {
		t.Errorf("www-data limits = %d %d", m, r)
	}
	if m, r, _ := c.Limits.For(1001, "bob"); m != 100 || r != 5 {
		t.Errorf("uid 1001 limits = %d %d", m, r)
	}
	if c.Aliases["www-data"] != "web@example.com" {
		t.Errorf("aliases = %v", c.Aliases)
	}
}

func TestErrors(t *testing.T) {
	tests := []struct {
		name, text string
		line       int
		want       string
	}{
		{"unknown top-level key", "hostname = \"h\"\nspool = \"/x\"\n", 2, `unknown key "spool"`},
		{"misspelt nested key", "[smarthost]\naddress = \"h:25\"\npasword_file = \"/x\"\n", 3, `unknown key "smarthost.pasword_file"`},
		{"wrong case", "Hostname = \"h\"\n", 1, `unknown key "Hostname" (did you mean "hostname"?)`},
		{"wrong case table", "[SmartHost]\naddress = \"h:25\"\n", 1, `unknown key "SmartHost"`},
		{"unknown table", "[smtp]\nx = 1\n", 1, `unknown key "smtp"`},
		{"type error", "[queue]\nconnections = \"four\"\n", 2, "connections"},
		{"bad duration", "[queue]\nmax_age = \"5 days\"\n", 2, "max_age"},
		{"syntax error", "hostname = \n", 1, ""},
		{"bad tls", "[smarthost]\naddress = \"h:25\"\ntls = \"ssl\"\n", 3, "smarthost.tls"},
		{"bad address", "[smarthost]\naddress = \"smtp.example.com\"\n", 2, "host:port"},
		{"two passwords", "[smarthost]\naddress = \"h:25\"\npassword = \"a\"\npassword_file = \"/b\"\n", 0, "only one"},
		{"bad deliver", "[queue]\ndeliver = \"now\"\n", 2, "queue.deliver"},
		{"unknown key in limits.user", "[limits.user.bob]\nmessages_per_hr = 3\n", 2, "limits.user.bob.messages_per_hr"},
		{"unknown key in dkim.key", "[[dkim.key]]\ndomain = \"d\"\nselectr = \"s\"\n", 3, "dkim.key.selectr"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "postie.toml")
			os.WriteFile(path, []byte(tt.text), 0o644)
			_, err := Load(path, true)
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("err = %v, want *Error", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %q, want it to contain %q", err, tt.want)
			}
			if tt.line > 0 && ce.Line != tt.line {
				t.Errorf("line = %d, want %d (%v)", ce.Line, tt.line, err)
			}
			if !strings.Contains(err.Error(), path) {
				t.Errorf("err %q does not name the file", err)
			}
		})
	}
}

func TestMissingFile(t *testing.T) {
	c, err := Load(filepath.Join(t.TempDir(), "none.toml"), false)
	if err != nil {
		t.Fatal(err)
	}
	if c.Smarthost.Configured() || c.SpoolDir == "" || c.Queue.Deliver != "background" {
		t.Errorf("defaults = %+v", c)
	}
	if _, err := Load(filepath.Join(t.TempDir(), "none.toml"), true); err == nil {
		t.Error("missing explicit file accepted")
	}
}

func TestLocate(t *testing.T) {
	env := func(string) string { return "/home/u/evil.toml" }
	if _, _, err := Locate("/tmp/x.toml", true, false, env); err == nil {
		t.Error("-C accepted with raised privileges")
	}
	if p, _, _ := Locate("", true, false, env); p != DefaultPath {
		t.Errorf("privileged path = %q, want the default ($POSTIE_CONFIG ignored)", p)
	}
	if p, _, _ := Locate("", false, false, env); p != "/home/u/evil.toml" {
		t.Errorf("unprivileged path = %q", p)
	}
	if p, _, _ := Locate("/etc/x", true, true, env); p != "/etc/x" {
		t.Errorf("root with -C = %q", p)
	}
}
