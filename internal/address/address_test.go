package address

import (
	"reflect"
	"testing"
)

func TestParseList(t *testing.T) {
	tests := []struct {
		in   string
		want []Address
	}{
		{"a@example.com", []Address{{"", "a@example.com"}}},
		{"a@x.example,b@y.example", []Address{{"", "a@x.example"}, {"", "b@y.example"}}},
		{"root", []Address{{"", "root"}}},
		{"root (Cron Daemon)", []Address{{"Cron Daemon", "root"}}},
		{"Logwatch", []Address{{"", "Logwatch"}}},
		{`"Doe, John" <john@example.com>, jane@example.com`, []Address{{"Doe, John", "john@example.com"}, {"", "jane@example.com"}}},
		{"undisclosed-recipients:;", nil},
		{"Team: a@x.example, b@y.example;, c@z.example", []Address{{"", "a@x.example"}, {"", "b@y.example"}, {"", "c@z.example"}}},
		{"=?utf-8?q?J=C3=BCrgen_M=C3=BCller?= <jm@example.de>", []Address{{"Jürgen Müller", "jm@example.de"}}},
		{`"a b"@example.org`, []Address{{"", `"a b"@example.org`}}},
		{"john@example.com (John Doe)", []Address{{"John Doe", "john@example.com"}}},
		{"<bare@example.com>", []Address{{"", "bare@example.com"}}},
		{"Root User <root>", []Address{{"Root User", "root"}}},
		{"  a@example.com  ,  , b@example.com", []Address{{"", "a@example.com"}, {"", "b@example.com"}}},
		{"user@[192.0.2.1]", []Address{{"", "user@[192.0.2.1]"}}},
		{"δοκιμή@παράδειγμα.δοκιμή", []Address{{"", "δοκιμή@παράδειγμα.δοκιμή"}}},
	}
	for _, tt := range tests {
		got, err := ParseList(tt.in)
		if err != nil {
			t.Errorf("ParseList(%q): %v", tt.in, err)
			continue
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("ParseList(%q) = %#v, want %#v", tt.in, got, tt.want)
		}
	}
}

func TestParseListErrors(t *testing.T) {
	for _, in := range []string{
		"a@example.com\r\nRCPT TO:<evil@example.com>",
		"a@example.com\nBcc: x@example.com",
		"a\x00@example.com",
		"two words",
		"a@",
		"@example.com",
		"<a@example.com",
	} {
		if got, err := ParseList(in); err == nil {
			t.Errorf("ParseList(%q) = %v, want an error", in, got)
		}
	}
}

func TestString(t *testing.T) {
	tests := []struct {
		a    Address
		want string
	}{
		{Address{"", "a@x"}, "a@x"},
		{Address{"Cron Daemon", "root@h"}, "Cron Daemon <root@h>"},
		{Address{"Doe, John", "j@x"}, `"Doe, John" <j@x>`},
		{Address{"Jürgen", "j@x"}, "=?utf-8?q?J=C3=BCrgen?= <j@x>"},
	}
	for _, tt := range tests {
		if got := tt.a.String(); got != tt.want {
			t.Errorf("%#v.String() = %q, want %q", tt.a, got, tt.want)
		}
	}
}

func TestExpand(t *testing.T) {
	a, err := NewAliases(map[string]string{
		"root":       "admin@example.com, ops",
		"ops":        "ops@example.com",
		"postmaster": "root",
		"loop1":      "loop2",
		"loop2":      "loop1",
		"self":       "self, other@example.com",
	})
	if err != nil {
		t.Fatal(err)
	}
	r := &Resolver{Aliases: a, Hostname: "web1.example.com"}
	tests := []struct {
		in      string
		want    []string
		wantErr bool
	}{
		{"root", []string{"admin@example.com", "ops@example.com"}, false},
		{"Root", []string{"admin@example.com", "ops@example.com"}, false},
		{"postmaster, root, admin@example.com", []string{"admin@example.com", "ops@example.com"}, false},
		{"www-data", []string{"www-data@web1.example.com"}, false},
		{"root@other.example", []string{"root@other.example"}, false},
		{"root@Web1.example.com", []string{"admin@example.com", "ops@example.com"}, false},
		{"nobody@web1.example.com", []string{"nobody@web1.example.com"}, false},
		{"root@localhost, www-data@localhost.localdomain, x@web1", []string{"admin@example.com", "ops@example.com", "www-data@web1.example.com", "x@web1.example.com"}, false},
		{"self", []string{"self@web1.example.com", "other@example.com"}, false},
		{"loop1", nil, true},
		{"a@Example.COM, a@example.com", []string{"a@Example.COM"}, false},
	}
	for _, tt := range tests {
		l, err := ParseList(tt.in)
		if err != nil {
			t.Fatal(err)
		}
		got, err := r.Expand(l)
		if (err != nil) != tt.wantErr {
			t.Errorf("Expand(%q) error = %v", tt.in, err)
			continue
		}
		if !tt.wantErr && !reflect.DeepEqual(got, tt.want) {
			t.Errorf("Expand(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestAliasesRefused(t *testing.T) {
	for _, v := range []string{"|/usr/bin/procmail", ":include:/etc/list", "/var/mail/x"} {
		if _, err := NewAliases(map[string]string{"x": v}); err == nil {
			t.Errorf("alias to %q accepted", v)
		}
	}
}

func FuzzParseList(f *testing.F) {
	for _, s := range []string{"a@b.c", "root (Cron Daemon)", `"x, y" <a@b>, c@d`, "g: a@b, c@d;", "=?utf-8?q?x?= <a@b>", `"a b"@c`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		l, err := ParseList(s)
		if err != nil {
			return
		}
		for _, a := range l {
			for _, c := range []byte(a.Addr) {
				if c == '\r' || c == '\n' || c == 0 || c == '<' || c == '>' {
					t.Fatalf("ParseList(%q) gave address %q with a forbidden byte", s, a.Addr)
				}
			}
			if a.Addr == "" {
				t.Fatalf("ParseList(%q) gave an empty address", s)
			}
		}
	})
}
