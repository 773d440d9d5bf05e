package clients_test

import (
	"bytes"
	"encoding/base64"
	"io"
	"mime/quotedprintable"
	"strings"
	"testing"

	"github.com/emersion/go-smtp"
)

// TestSystemPrograms feeds Postie's sendmail the exact command lines and
// message shapes of the system programs that mail root, as their sources
// write them: LF line endings, bare local names, no Message-ID or Date,
// job output passed byte for byte (bare CR from progress bars, NUL, no
// final newline), and no -i where the program passes none.
//
// Expected bodies are what was written, with LF turned into CRLF, plus
// the delivery-time conformance of internal/conform: a bare CR in the body
// becomes CRLF, NUL bytes are removed, a final CRLF is added when the input
// lacked one, and a part with a line over 998 octets is re-encoded as
// quoted-printable.
func TestSystemPrograms(t *testing.T) {
	t.Parallel()
	admin := []string{"admin@example.com"}
	root := "root@" + hostname
	tests := []struct {
		name  string
		argv  []string
		input string
		env   envelope
		body  string // LF stands for CRLF; "" skips the exact comparison
		check func(t *testing.T, m *msg)
	}{
		{
			// Debian cron 3.0pl1: MAILARGS "%s -i -FCronDaemon -B8BITMIME -oem %s".
			name: "Debian cron",
			argv: []string{"-i", "-FCronDaemon", "-B8BITMIME", "-oem", "root"},
			input: "From: root (Cron Daemon)\nTo: root\nSubject: Cron <root@web1> /usr/local/bin/job\n" +
				"MIME-Version: 1.0\nContent-Type: text/plain; charset=UTF-8\nContent-Transfer-Encoding: 8bit\n" +
				"X-Cron-Env: <SHELL=/bin/sh>\nX-Cron-Env: <HOME=/root>\nX-Cron-Env: <PATH=/usr/bin:/bin>\nX-Cron-Env: <LOGNAME=root>\n\n" +
				"rsync:  10%\r  55%\r 100%\nstatus: ok\x00\x00 (NULs from a C string)\ncafé → naïve\n.\nexit without newline",
			env:  envelope{callerAddr(), admin},
			body: "rsync:  10%\n  55%\n 100%\nstatus: ok (NULs from a C string)\ncafé → naïve\n.\nexit without newline\n",
			check: func(t *testing.T, m *msg) {
				checkAddrs(t, m, "From", root)
				checkAddrs(t, m, "To", root)
				checkHeader(t, m, "Subject", "Cron <root@web1> /usr/local/bin/job")
				checkHeader(t, m, "X-Cron-Env", "<SHELL=/bin/sh>", "<HOME=/root>", "<PATH=/usr/bin:/bin>", "<LOGNAME=root>")
				checkHeader(t, m, "Content-Transfer-Encoding", "8bit")
				checkBodyType(t, m, smtp.Body8BitMIME)
			},
		},
		{
			// MAILTO="root,ops@example.com" reaches sendmail as one word.
			name:  "Debian cron, MAILTO list",
			argv:  []string{"-i", "-FCronDaemon", "-B8BITMIME", "-oem", "root,ops@example.com"},
			input: "From: root (Cron Daemon)\nTo: root,ops@example.com\nSubject: Cron <root@web1> true\n\ndone\n",
			env:   envelope{callerAddr(), []string{"admin@example.com", "ops@example.com"}},
			body:  "done\n",
			check: func(t *testing.T, m *msg) {
				checkAddrs(t, m, "To", root, "ops@example.com")
			},
		},
		{
			// A job printing one 2000-octet line: the 8bit text part is
			// re-encoded as quoted-printable; the text decodes the same.
			name: "Debian cron, 2000-octet output line",
			argv: []string{"-i", "-FCronDaemon", "-B8BITMIME", "-oem", "root"},
			input: "From: root (Cron Daemon)\nTo: root\nSubject: Cron <root@web1> dump\n" +
				"MIME-Version: 1.0\nContent-Type: text/plain; charset=UTF-8\nContent-Transfer-Encoding: 8bit\n\n" +
				strings.Repeat("0123456789", 200) + "\nshort line é\n",
			env: envelope{callerAddr(), admin},
			check: func(t *testing.T, m *msg) {
				checkHeader(t, m, "Content-Transfer-Encoding", "quoted-printable")
				checkHeader(t, m, "Content-Type", "text/plain; charset=UTF-8")
				for i, line := range strings.Split(string(m.Data), "\r\n") {
					if len(line) > 998 {
						t.Errorf("delivered line %d has %d octets", i, len(line))
					}
				}
				dec, err := io.ReadAll(quotedprintable.NewReader(bytes.NewReader(m.Body)))
				if err != nil {
					t.Fatalf("quoted-printable body: %v", err)
				}
				want := strings.Repeat("0123456789", 200) + "\r\nshort line é\r\n"
				if string(dec) != want {
					t.Errorf("decoded body %q, want %q", dec, want)
				}
			},
		},
		{
			// cronie: MAILFMT "%s -FCronDaemon -i -odi -oem -oi -t -f %s".
			name: "cronie",
			argv: []string{"-FCronDaemon", "-i", "-odi", "-oem", "-oi", "-t", "-f", "root"},
			input: "From: \"(Cron Daemon)\" <root>\nTo: root\nSubject: Cron <root@web1> /usr/local/bin/job\n" +
				"MIME-Version: 1.0\nContent-Type: text/plain; charset=UTF-8\nAuto-Submitted: auto-generated\nPrecedence: bulk\n" +
				"X-Cron-Env: <LANG=C.UTF-8>\n\nline 1\n.\nline 3\n",
			env:  envelope{root, admin},
			body: "line 1\n.\nline 3\n",
			check: func(t *testing.T, m *msg) {
				checkAddrs(t, m, "From", root)
				checkDisplayName(t, m, "From", "(Cron Daemon)")
				checkAddrs(t, m, "To", root)
				checkHeader(t, m, "Auto-Submitted", "auto-generated")
				checkHeader(t, m, "Precedence", "bulk")
			},
		},
		{
			// anacron runjob.c: execl(SENDMAIL, SENDMAIL, "-FAnacron", "-odi", mailto, NULL).
			name: "anacron",
			argv: []string{"-FAnacron", "-odi", "root"},
			input: "From: Anacron <root>\nTo: root\nContent-Type: text/plain; charset=\"UTF-8\"\n" +
				"Subject: Anacron job 'cron.daily' on web1\n\n/etc/cron.daily/logrotate:\nerror: skipping \"/var/log/x.log\"\n",
			env:  envelope{callerAddr(), admin},
			body: "/etc/cron.daily/logrotate:\nerror: skipping \"/var/log/x.log\"\n",
			check: func(t *testing.T, m *msg) {
				checkAddrs(t, m, "From", root)
				checkDisplayName(t, m, "From", "Anacron")
				checkHeader(t, m, "Subject", "Anacron job 'cron.daily' on web1")
			},
		},
		{
			// sudo eventlog.c: mailerpath with mailerflags "-t" (no -i),
			// "To: %s\nFrom: %s\nAuto-Submitted: %s\nSubject: ...".
			name: "sudo",
			argv: []string{"-t"},
			input: "To: root\nFrom: root\nAuto-Submitted: auto-generated\nSubject: *** SECURITY information for web1 ***\n\n" +
				"web1 : Nov 23 18:00:00 : alice : user NOT in sudoers ; TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/bin/sh\n\n",
			env:  envelope{callerAddr(), admin},
			body: "web1 : Nov 23 18:00:00 : alice : user NOT in sudoers ; TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/bin/sh\n\n",
			check: func(t *testing.T, m *msg) {
				checkAddrs(t, m, "From", root)
				checkAddrs(t, m, "To", root)
				checkHeader(t, m, "Subject", "*** SECURITY information for web1 ***")
				checkHeader(t, m, "Auto-Submitted", "auto-generated")
			},
		},
		{
			// fail2ban action.d/sendmail-common.conf: mailcmd =
			// sendmail -f "<sender>" "<dest>" (no -i); the message
			// comes from printf %b and has no final newline.
			name: "fail2ban",
			argv: []string{"-f", "fail2ban@web1", "root"},
			input: "Subject: [Fail2Ban] sshd: banned 1.2.3.4 from web1\nDate: Mon, 23 Nov 2026 18:00:00 +0000\n" +
				"From: Fail2Ban <fail2ban@web1>\nTo: root\n\nHi,\n\nThe IP 1.2.3.4 has just been banned by Fail2Ban after\n" +
				"5 attempts against sshd.\n\n\nRegards,\n\nFail2Ban",
			env:  envelope{"fail2ban@web1", admin},
			body: "Hi,\n\nThe IP 1.2.3.4 has just been banned by Fail2Ban after\n5 attempts against sshd.\n\n\nRegards,\n\nFail2Ban\n",
			check: func(t *testing.T, m *msg) {
				checkAddrs(t, m, "From", "fail2ban@web1")
				checkAddrs(t, m, "To", root)
				checkHeader(t, m, "Date", "Mon, 23 Nov 2026 18:00:00 +0000")
				checkHeader(t, m, "Subject", "[Fail2Ban] sshd: banned 1.2.3.4 from web1")
			},
		},
		{
			// fail2ban with its stock jail.conf: destemail =
			// root@localhost, sender = root@<fq-hostname>. Mail for
			// root@localhost is local mail on every Debian MTA setup
			// (Postfix's default mydestination lists localhost); it
			// must reach root's alias, not go to the smarthost as
			// root@localhost, which no smarthost can deliver.
			name: "fail2ban, stock jail.conf (root@localhost)",
			argv: []string{"-f", "root@" + hostname, "root@localhost"},
			input: "Subject: [Fail2Ban] sshd: started on web1\nDate: Mon, 23 Nov 2026 18:00:00 +0000\n" +
				"From: Fail2Ban <root@" + hostname + ">\nTo: root@localhost\n\nHi,\n\nThe jail sshd has been started successfully.\n\nRegards,\n\nFail2Ban",
			env:  envelope{root, admin},
			body: "Hi,\n\nThe jail sshd has been started successfully.\n\nRegards,\n\nFail2Ban\n",
			check: func(t *testing.T, m *msg) {
				checkAddrs(t, m, "From", root)
			},
		},
		{
			// root@<hostname> is the name Postie itself writes for
			// root (To: root becomes To: root@web1.example.com), and
			// sendmail -bs aliases RCPT TO:<root@hostname>; the
			// command line must do the same.
			name:  "script: root@hostname argument",
			argv:  []string{"-i", "root@" + hostname},
			input: "Subject: to root, qualified\n\nbody\n",
			env:   envelope{callerAddr(), admin},
			body:  "body\n",
			check: func(t *testing.T, m *msg) {},
		},
		{
			name:  "script: -t with To: root@hostname",
			argv:  []string{"-t", "-i"},
			input: "To: root@" + hostname + "\nSubject: to root, qualified\n\nbody\n",
			env:   envelope{callerAddr(), admin},
			body:  "body\n",
			check: func(t *testing.T, m *msg) {
				checkAddrs(t, m, "To", root)
			},
		},
		{
			// logwatch: mailer "/usr/sbin/sendmail -t", one To: line
			// per MailTo address.
			name: "logwatch",
			argv: []string{"-t"},
			input: "To: root\nTo: ops@example.com\nFrom: Logwatch <root>\nSubject: Logwatch for web1 (Linux)\n" +
				"Auto-Submitted: auto-generated\nMIME-Version: 1.0\nContent-Transfer-Encoding: 7bit\nContent-Type: text/plain; charset=\"us-ascii\"\n\n" +
				" \n ################### Logwatch 7.8 (01/22/23) #################### \n" +
				"        Processing Initiated: Mon Nov 23 06:25:01 2026\n ###################################################################### \n",
			env: envelope{callerAddr(), []string{"admin@example.com", "ops@example.com"}},
			body: " \n ################### Logwatch 7.8 (01/22/23) #################### \n" +
				"        Processing Initiated: Mon Nov 23 06:25:01 2026\n ###################################################################### \n",
			check: func(t *testing.T, m *msg) {
				checkHeader(t, m, "To", root, "ops@example.com")
				checkAddrs(t, m, "From", root)
				checkDisplayName(t, m, "From", "Logwatch")
			},
		},
		{
			// unattended-upgrades: Popen([SENDMAIL_BINARY, "-oi", "-t"])
			// fed MIMEText(body, charset="utf-8").as_string().
			name:  "unattended-upgrades",
			argv:  []string{"-oi", "-t"},
			input: uuMessage,
			env:   envelope{callerAddr(), admin},
			body:  uuBase64,
			check: func(t *testing.T, m *msg) {
				checkAddrs(t, m, "From", root)
				checkAddrs(t, m, "To", root)
				checkHeader(t, m, "Content-Transfer-Encoding", "base64")
				dec, err := base64.StdEncoding.DecodeString(strings.ReplaceAll(string(m.Body), "\r\n", ""))
				if err != nil || string(dec) != uuText {
					t.Errorf("decoded body %q (%v), want %q", dec, err, uuText)
				}
			},
		},
		{
			// mdadm Monitor.c: popen("/usr/lib/sendmail -t"), From
			// "mdadm monitoring <root>" unless MAILFROM is set.
			name:  "mdadm",
			argv:  []string{"-t"},
			input: "From: mdadm monitoring <root>\nTo: root\nSubject: Fail event on /dev/md0:web1\n\n" + mdadmBody,
			env:   envelope{callerAddr(), admin},
			body:  mdadmBody,
			check: func(t *testing.T, m *msg) {
				checkAddrs(t, m, "From", root)
				checkDisplayName(t, m, "From", "mdadm monitoring")
				checkAddrs(t, m, "To", root)
				checkHeader(t, m, "Subject", "Fail event on /dev/md0:web1")
			},
		},
		{
			// A script with no From: Postie adds one with -F's name.
			name:  "script: no From, -F name",
			argv:  []string{"-F", "Backup Script", "-oi", "root"},
			input: "Subject: backup done\n\n3 files\n",
			env:   envelope{callerAddr(), admin},
			body:  "3 files\n",
			check: func(t *testing.T, m *msg) {
				checkAddrs(t, m, "From", callerAddr())
				checkDisplayName(t, m, "From", "Backup Script")
				if _, ok := m.Header["To"]; ok {
					t.Errorf("To %q was added; sendmail adds none", m.Header["To"])
				}
			},
		},
		{
			// printf 'Subject: ping\n' | sendmail root: a header and
			// no body at all.
			name:  "script: header only",
			argv:  []string{"root"},
			input: "Subject: ping\n",
			env:   envelope{callerAddr(), admin},
			body:  "",
			check: func(t *testing.T, m *msg) {
				checkHeader(t, m, "Subject", "ping")
				if len(m.Body) != 0 {
					t.Errorf("body %q, want none", m.Body)
				}
			},
		},
		{
			// A message saved from a mailbox, "From " line first.
			name:  "script: mbox From_ line",
			argv:  []string{"-i", "ops@example.com"},
			input: "From alice@example.com Mon Nov 23 18:00:00 2026\nFrom: alice@example.com\nSubject: resend\n\nbody\n",
			env:   envelope{callerAddr(), []string{"ops@example.com"}},
			body:  "body\n",
			check: func(t *testing.T, m *msg) {
				checkAddrs(t, m, "From", "alice@example.com")
				checkHeader(t, m, "Subject", "resend")
			},
		},
		{
			// Input written with CRLF throughout (a Windows-made
			// template), recipients from the header and from argv.
			name:  "script: CRLF input, -t plus argv",
			argv:  []string{"-t", "-i", "extra@example.com"},
			input: "To: a@example.com\r\nSubject: crlf\r\n\r\nline 1\r\nline 2\r\n",
			env:   envelope{callerAddr(), []string{"extra@example.com", "a@example.com"}},
			body:  "line 1\nline 2\n",
			check: func(t *testing.T, m *msg) {
				checkAddrs(t, m, "To", "a@example.com")
			},
		},
		{
			// Resent- fields: -t takes only Resent-To/Cc/Bcc.
			name: "script: Resent- fields",
			argv: []string{"-t", "-i"},
			input: "Resent-From: root\nResent-To: ops@example.com\nResent-Bcc: audit@example.com\n" +
				"From: alice@example.com\nTo: bob@example.com\nSubject: fwd\n\nbody\n",
			env:  envelope{callerAddr(), []string{"ops@example.com", "audit@example.com"}},
			body: "body\n",
			check: func(t *testing.T, m *msg) {
				checkAddrs(t, m, "To", "bob@example.com")
				checkAddrs(t, m, "Resent-To", "ops@example.com")
				checkAddrs(t, m, "Resent-From", root)
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := newRig(t)
			res := r.sendmail([]byte(tc.input), tc.argv...)
			if res.code != 0 || res.stderr != "" || res.stdout != "" {
				t.Fatalf("sendmail %q: %v", tc.argv, res)
			}
			q := r.expectQueued(tc.env)
			m := r.deliver(1)[0]
			checkEnvelope(t, m, tc.env)
			checkStandard(t, m)
			checkPostieMessageID(t, m, q[0])
			if tc.body != "" {
				checkBody(t, m, tc.body)
			}
			tc.check(t, m)
		})
	}
}

// checkDisplayName checks the display name of the single address in k.
func checkDisplayName(t *testing.T, m *msg, k, want string) {
	t.Helper()
	l, err := m.Header.AddressList(k)
	if err != nil || len(l) != 1 || l[0].Name != want {
		t.Errorf("%s %q: display name is not %q (%v)", k, m.Header.Get(k), want, err)
	}
}

// checkBodyType checks the BODY parameter of MAIL FROM.
func checkBodyType(t *testing.T, m *msg, want smtp.BodyType) {
	t.Helper()
	if m.Opts.Body != want {
		t.Errorf("MAIL FROM BODY=%q, want %q", m.Opts.Body, want)
	}
}

const uuText = "Unattended upgrade result: All upgrades installed\n\n" +
	"Packages that were upgraded:\n libssl3 openssl ca-certificates\n\n" +
	"Unattended-upgrades log:\nStarting unattended upgrades script\nAllowed origins are: o=Debian,n=bookworm, o=Debian,n=bookworm-security\n" +
	"Packages that will be upgraded: libssl3 openssl ca-certificates\nWriting dpkg log to /var/log/unattended-upgrades/unattended-upgrades-dpkg.log\n" +
	"All upgrades installed — « fin »\n"

// uuBase64 is uuText as Python's email package encodes it: base64 in lines
// of 76 characters, each ending in LF.
var uuBase64 = func() string {
	enc := base64.StdEncoding.EncodeToString([]byte(uuText))
	var b strings.Builder
	for len(enc) > 76 {
		b.WriteString(enc[:76] + "\n")
		enc = enc[76:]
	}
	b.WriteString(enc + "\n")
	return b.String()
}()

var uuMessage = "Content-Type: text/plain; charset=\"utf-8\"\nMIME-Version: 1.0\nContent-Transfer-Encoding: base64\n" +
	"Subject: unattended-upgrades result for web1.example.com: SUCCESS\nFrom: root\nTo: root\nAuto-Submitted: auto-generated\n\n" +
	uuBase64

const mdadmBody = "This is an automatically generated mail message from mdadm\nrunning on web1\n\n" +
	"A Fail event had been detected on md device /dev/md0.\n\nIt could be related to component device /dev/sdb1.\n\n" +
	"Faithfully yours, etc.\n\nP.S. The /proc/mdstat file currently contains the following:\n\n" +
	"Personalities : [raid1] \nmd0 : active raid1 sdb1[1](F) sda1[0]\n      1046528 blocks super 1.2 [2/1] [U_]\n      \n" +
	"unused devices: <none>\n"
