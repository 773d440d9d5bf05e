package cmdline

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func ptr(s string) *string { return &s }

// TestRealCallers parses the exact argv that programs calling sendmail
// use.
func TestRealCallers(t *testing.T) {
	tests := []struct {
		name string
		argv []string
		want Args
	}{
		{"php mail()", []string{"sendmail", "-t", "-i"},
			Args{Mode: ModeDeliver, ExtractRecipients: true, IgnoreDots: true}},
		{"php mail() with -f in additional_parameters", []string{"sendmail", "-t", "-i", "-f", "site@example.com"},
			Args{Mode: ModeDeliver, ExtractRecipients: true, IgnoreDots: true, Sender: ptr("site@example.com")}},
		{"php mail() with -fADDR", []string{"sendmail", "-t", "-i", "-fsite@example.com"},
			Args{Mode: ModeDeliver, ExtractRecipients: true, IgnoreDots: true, Sender: ptr("site@example.com")}},
		{"PHPMailer", []string{"sendmail", "-oi", "-f", "from@example.com", "-t"},
			Args{Mode: ModeDeliver, ExtractRecipients: true, IgnoreDots: true, Sender: ptr("from@example.com")}},
		{"Symfony -bs", []string{"sendmail", "-bs"}, Args{Mode: ModeSMTP}},
		{"Laravel -bs -i", []string{"sendmail", "-bs", "-i"}, Args{Mode: ModeSMTP, IgnoreDots: true}},
		{"Symfony -t -i", []string{"sendmail", "-t", "-i"}, Args{Mode: ModeDeliver, ExtractRecipients: true, IgnoreDots: true}},
		{"Debian cron", []string{"sendmail", "-i", "-FCronDaemon", "-B8BITMIME", "-oem", "root"},
			Args{Mode: ModeDeliver, IgnoreDots: true, FullName: "CronDaemon", BodyType: "8BITMIME", Recipients: []string{"root"}}},
		{"Debian cron MAILTO list", []string{"sendmail", "-i", "-FCronDaemon", "-B8BITMIME", "-oem", "a@x.example,b@y.example"},
			Args{Mode: ModeDeliver, IgnoreDots: true, FullName: "CronDaemon", BodyType: "8BITMIME", Recipients: []string{"a@x.example,b@y.example"}}},
		{"cronie", []string{"sendmail", "-FCronDaemon", "-i", "-odi", "-oem", "-oi", "-t", "-f", "root"},
			Args{Mode: ModeDeliver, IgnoreDots: true, ExtractRecipients: true, FullName: "CronDaemon", Sender: ptr("root")}},
		{"mutt", []string{"sendmail", "-oem", "-oi", "--", "a@example.com", "b@example.com"},
			Args{Mode: ModeDeliver, IgnoreDots: true, Recipients: []string{"a@example.com", "b@example.com"}}},
		{"s-nail", []string{"sendmail", "-i", "--", "a@example.com"},
			Args{Mode: ModeDeliver, IgnoreDots: true, Recipients: []string{"a@example.com"}}},
		{"git send-email", []string{"sendmail", "-i", "a@example.com", "b@example.com"},
			Args{Mode: ModeDeliver, IgnoreDots: true, Recipients: []string{"a@example.com", "b@example.com"}}},
		{"sudo", []string{"sendmail", "-t"}, Args{Mode: ModeDeliver, ExtractRecipients: true}},
		{"Alpine", []string{"sendmail", "-bs", "-odb", "-oem"}, Args{Mode: ModeSMTP}},
		{"mailq via argv[0]", []string{"/usr/bin/mailq"}, Args{Mode: ModeList}},
		{"newaliases via argv[0]", []string{"/usr/bin/newaliases"}, Args{Mode: ModeNewAliases}},
		{"-F detached with spaces", []string{"sendmail", "-F", "Cron Daemon", "-i", "root"},
			Args{Mode: ModeDeliver, IgnoreDots: true, FullName: "Cron Daemon", Recipients: []string{"root"}}},
		{"null sender", []string{"sendmail", "-f", "<>", "a@example.com"},
			Args{Mode: ModeDeliver, Sender: ptr("<>"), Recipients: []string{"a@example.com"}}},
		{"-r", []string{"sendmail", "-r", "x@example.com", "a@example.com"},
			Args{Mode: ModeDeliver, Sender: ptr("x@example.com"), Recipients: []string{"a@example.com"}}},
		{"clustered -ti", []string{"sendmail", "-ti"}, Args{Mode: ModeDeliver, ExtractRecipients: true, IgnoreDots: true}},
		{"DSN flags", []string{"sendmail", "-N", "success,failure", "-R", "hdrs", "-V", "env123", "a@example.com"},
			Args{Mode: ModeDeliver, Notify: []string{"success", "failure"}, Ret: "hdrs", EnvID: "env123", Recipients: []string{"a@example.com"}}},
		{"DSN attached", []string{"sendmail", "-Nnever", "-RFULL", "a@example.com"},
			Args{Mode: ModeDeliver, Notify: []string{"never"}, Ret: "full", Recipients: []string{"a@example.com"}}},
		{"-q", []string{"sendmail", "-q"}, Args{Mode: ModeFlush}},
		{"-q30m", []string{"sendmail", "-q30m"}, Args{Mode: ModeFlush, QueueArg: "30m"}},
		{"-bp", []string{"sendmail", "-bp"}, Args{Mode: ModeList}},
		{"-bv", []string{"sendmail", "-bv", "root"}, Args{Mode: ModeVerify, Recipients: []string{"root"}}},
		{"-bi", []string{"sendmail", "-bi"}, Args{Mode: ModeNewAliases}},
		{"-I", []string{"sendmail", "-I"}, Args{Mode: ModeNewAliases}},
		{"ignored flags", []string{"sendmail", "-oee", "-odq", "-obq", "-L", "tag", "-G", "-U", "-v", "-Am", "a@example.com"},
			Args{Mode: ModeDeliver, Verbose: 1, Recipients: []string{"a@example.com"}}},
		{"-C", []string{"sendmail", "-C", "/etc/x.toml", "-t"}, Args{Mode: ModeDeliver, Config: "/etc/x.toml", ExtractRecipients: true}},
		{"-- ends flags", []string{"sendmail", "--", "-notaflag@example.com"},
			Args{Mode: ModeDeliver, Recipients: []string{"-notaflag@example.com"}}},
		{"7BIT", []string{"sendmail", "-B", "7bit", "a@example.com"},
			Args{Mode: ModeDeliver, BodyType: "7BIT", Recipients: []string{"a@example.com"}}},
		{"-O IgnoreDots", []string{"sendmail", "-O", "IgnoreDots", "a@example.com"},
			Args{Mode: ModeDeliver, IgnoreDots: true, Recipients: []string{"a@example.com"}}},
		{"quoted local part", []string{"sendmail", "-i", `"a b"@example.org`},
			Args{Mode: ModeDeliver, IgnoreDots: true, Recipients: []string{`"a b"@example.org`}}},
		{"no args", []string{"sendmail"}, Args{Mode: ModeDeliver}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.argv)
			if err != nil {
				t.Fatalf("Parse(%q): %v", tt.argv, err)
			}
			if !reflect.DeepEqual(*got, tt.want) {
				t.Errorf("Parse(%q)\n got %+v\nwant %+v", tt.argv, *got, tt.want)
			}
		})
	}
}

func TestUsageErrors(t *testing.T) {
	tests := []struct {
		argv []string
		want string // in the message
	}{
		{[]string{"sendmail", "-X", "/tmp/log"}, "-X"},
		{[]string{"sendmail", "-Z"}, "-Z"},
		{[]string{"sendmail", "-tZ"}, "-Z"},
		{[]string{"sendmail", "-f"}, "-f requires an argument"},
		{[]string{"sendmail", "-bd"}, "-bd"},
		{[]string{"sendmail", "-bt"}, "-bt"},
		{[]string{"sendmail", "-bz"}, "-bz"},
		{[]string{"sendmail", "-N", "sometimes"}, "sometimes"},
		{[]string{"sendmail", "-N", "never,success"}, "never"},
		{[]string{"sendmail", "-R", "body"}, "body"},
		{[]string{"sendmail", "-B", "BINARYMIME"}, "BINARYMIME"},
		{[]string{"sendmail", "-V", "a=b"}, "-V"},
		{[]string{"sendmail", "a@example.com\r\nRCPT TO:<x@evil>"}, "line break"},
		{[]string{"sendmail", "-f", "a@example.com\nBcc: x"}, "line break"},
		{[]string{"sendmail", "-F", "Name\r\nBcc: victim@example.com"}, "line break"},
		{[]string{"sendmail", "a\x00b@example.com"}, "NUL"},
	}
	for _, tt := range tests {
		_, err := Parse(tt.argv)
		var ue *UsageError
		if !errors.As(err, &ue) {
			t.Errorf("Parse(%q) = %v, want a UsageError", tt.argv, err)
			continue
		}
		if !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Parse(%q) error %q does not mention %q", tt.argv, err, tt.want)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"-t -i", "-oi -f a@b -t", "-FCronDaemon -i -odi -oem -oi -t -f root", "-bs", "-- a b", "-N success,failure -R hdrs -V x", "-q30m"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		argv := append([]string{"sendmail"}, strings.Fields(s)...)
		a, err := Parse(argv)
		if err != nil {
			return
		}
		for _, r := range a.Recipients {
			if strings.ContainsAny(r, "\r\n\x00") {
				t.Fatalf("recipient with a line break accepted: %q", r)
			}
		}
		if a.Sender != nil && strings.ContainsAny(*a.Sender, "\r\n\x00") {
			t.Fatalf("sender with a line break accepted")
		}
	})
}
