package clients_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/emersion/go-smtp"
)

const (
	phpBin        = "/usr/bin/php"
	phpmailerLoad = "/usr/share/php/libphp-phpmailer/autoload.php"
	symfonyLoad   = "/usr/share/php/Symfony/Component/Mailer/autoload.php"
)

// phpMailCode calls mail() with the arguments in $MAIL_ARGS (a JSON array,
// 4 or 5 elements) and exits 3 when mail() returns false.
const phpMailCode = `$a = json_decode(getenv("MAIL_ARGS"), true); exit(mail(...$a) ? 0 : 3);`

// TestPHPMail runs PHP's mail() with sendmail_path = "BIN -t -i", as
// php.ini on Debian has it. PHP 8 writes "To:", "Subject:", the
// additional headers, each ending in CRLF, a CRLF, then the message as the
// script gave it (LF line endings) and a final CRLF: mixed line endings.
func TestPHPMail(t *testing.T) {
	t.Parallel()
	need(t, "php-cli", phpBin)
	xscript := fmt.Sprintf("%d:Command line code", caller.uid)
	tests := []struct {
		name     string
		args     []string // to, subject, message, additional_headers[, additional_params]
		env      envelope
		body     string // as delivered, LF shown for CRLF
		check    func(t *testing.T, m *msg)
		postieID bool // Postie adds the Message-ID
	}{
		{
			name: "plain",
			args: []string{"to@example.com", "PHP plain", "Hello\nworld\n", "From: App <app@example.com>"},
			env:  envelope{callerAddr(), []string{"to@example.com"}},
			body: "Hello\nworld\n\n",
			check: func(t *testing.T, m *msg) {
				checkAddrs(t, m, "From", "app@example.com")
				checkAddrs(t, m, "To", "to@example.com")
			},
			postieID: true,
		},
		{
			name: "envelope sender -f",
			args: []string{"to@example.com", "PHP -f", "Bounces go elsewhere.\n", "From: app@example.com", "-f bounce@example.com"},
			env:  envelope{"bounce@example.com", []string{"to@example.com"}},
			body: "Bounces go elsewhere.\n\n",
			check: func(t *testing.T, m *msg) {
				checkAddrs(t, m, "From", "app@example.com")
			},
			postieID: true,
		},
		{
			name: "Cc and Bcc in additional_headers",
			args: []string{"Tom <to@example.com>", "PHP cc bcc", "Copies.\n",
				"From: app@example.com\r\nCc: Carol <cc@example.com>, cc2@example.com\r\nBcc: hidden@example.com"},
			env:  envelope{callerAddr(), []string{"to@example.com", "cc@example.com", "cc2@example.com", "hidden@example.com"}},
			body: "Copies.\n\n",
			check: func(t *testing.T, m *msg) {
				checkAddrs(t, m, "To", "to@example.com")
				checkAddrs(t, m, "Cc", "cc@example.com", "cc2@example.com")
			},
			postieID: true,
		},
		{
			name: "lone dot line survives with -i",
			args: []string{"to@example.com", "PHP dot", "line 1\n.\nline 3\n..\nend\n", "From: app@example.com"},
			env:  envelope{callerAddr(), []string{"to@example.com"}},
			body: "line 1\n.\nline 3\n..\nend\n\n",
			check: func(t *testing.T, m *msg) {
				checkHeader(t, m, "Subject", "PHP dot")
			},
			postieID: true,
		},
		{
			name: "LF additional headers and body, own Message-ID",
			args: []string{"to@example.com", "PHP LF", "first\nsecond\n\nfourth",
				"From: app@example.com\nReply-To: help@example.com\nMessage-ID: <app-1@example.com>\nX-Mailer: legacy-cms"},
			env:  envelope{callerAddr(), []string{"to@example.com"}},
			body: "first\nsecond\n\nfourth\n",
			check: func(t *testing.T, m *msg) {
				checkHeader(t, m, "Reply-To", "help@example.com")
				checkHeader(t, m, "Message-ID", "<app-1@example.com>")
				checkHeader(t, m, "X-Mailer", "legacy-cms")
			},
		},
		{
			// A CMS newsletter: 150 recipients on one To: line of
			// about 3000 octets. The envelope gets them all; the
			// field is folded under 998 octets a line and keeps them.
			name: "150 recipients on one To line",
			args: []string{newsletterTo(150), "PHP newsletter", "News.\n", "From: news@example.com"},
			env:  envelope{callerAddr(), newsletterAddrs(150)},
			body: "News.\n\n",
			check: func(t *testing.T, m *msg) {
				checkAddrs(t, m, "To", newsletterAddrs(150)...)
				for i, line := range strings.Split(string(m.Data), "\r\n") {
					if len(line) > 998 {
						t.Errorf("delivered line %d has %d octets", i, len(line))
					}
				}
			},
			postieID: true,
		},
		{
			// A display name with a comma, and raw UTF-8 in Subject
			// and body (what many PHP sites send).
			name: "quoted display name, raw UTF-8",
			args: []string{`"Doe, John" <john@example.com>, jane@example.com`, "Größe: 5 €", "Grüße\n", "From: \"Shop, Inc.\" <shop@example.com>"},
			env:  envelope{callerAddr(), []string{"john@example.com", "jane@example.com"}},
			body: "Grüße\n\n",
			check: func(t *testing.T, m *msg) {
				checkAddrs(t, m, "To", "john@example.com", "jane@example.com")
				checkAddrs(t, m, "From", "shop@example.com")
				checkBodyType(t, m, smtp.Body8BitMIME)
			},
			postieID: true,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := newRig(t)
			args, _ := json.Marshal(tc.args)
			r.mustRun(true, nil, []string{"MAIL_ARGS=" + string(args)}, phpBin,
				"-d", "sendmail_path="+bins.sendmail+" -t -i", "-d", "mail.add_x_header=1", "-r", phpMailCode)
			q := r.expectQueued(tc.env)
			m := r.deliver(1)[0]
			checkEnvelope(t, m, tc.env)
			checkStandard(t, m)
			checkHeader(t, m, "Subject", tc.args[1])
			checkHeader(t, m, "X-PHP-Originating-Script", xscript)
			checkBody(t, m, tc.body)
			if tc.postieID {
				checkPostieMessageID(t, m, q[0])
			}
			tc.check(t, m)
		})
	}
}

// TestPHPMailer sends with PHPMailer's isSendmail(), which runs
// "BIN -oi -fFROM -t" and writes Bcc into the header for sendmail to
// remove.
func TestPHPMailer(t *testing.T) {
	t.Parallel()
	need(t, "php-cli", phpBin)
	need(t, "libphp-phpmailer", phpmailerLoad)
	r := newRig(t)
	script := filepath.Join(r.dir, "phpmailer.php")
	writeFile(t, script, `<?php
require '`+phpmailerLoad+`';
use PHPMailer\PHPMailer\PHPMailer;
$m = new PHPMailer(true);
try {
	$m->isSendmail();
	$m->Sendmail = getenv('SENDMAIL');
	$m->setFrom('app@example.com', 'App');
	$m->addAddress('to@example.com', 'To Person');
	$m->addAddress('to2@example.com');
	$m->addCC('cc@example.com', 'Carbon');
	$m->addBCC('bcc@example.com');
	$m->addBCC('bcc2@example.com', 'Blind Two');
	$m->Subject = 'PHPMailer via sendmail';
	$m->Body = "Hello\n.\nBye\n";
	$m->send();
} catch (Exception $e) {
	fwrite(STDERR, $e->getMessage() . "\n");
	exit(1);
}
`)
	env := envelope{"app@example.com", []string{"to@example.com", "to2@example.com", "cc@example.com", "bcc@example.com", "bcc2@example.com"}}
	r.mustRun(true, nil, []string{"SENDMAIL=" + bins.sendmail}, phpBin, script)
	r.expectQueued(env)
	m := r.deliver(1)[0]
	checkEnvelope(t, m, env)
	checkStandard(t, m)
	checkAddrs(t, m, "From", "app@example.com")
	checkAddrs(t, m, "To", "to@example.com", "to2@example.com")
	checkAddrs(t, m, "Cc", "cc@example.com")
	checkHeader(t, m, "Subject", "PHPMailer via sendmail")
	checkBody(t, m, "Hello\n.\nBye\n")
}

// TestPHPMailerBccOnly: with only Bcc recipients PHPMailer writes
// "To: undisclosed-recipients:;" and the Bcc field; the group has no
// members, so the envelope holds the Bcc addresses only.
func TestPHPMailerBccOnly(t *testing.T) {
	t.Parallel()
	need(t, "php-cli", phpBin)
	need(t, "libphp-phpmailer", phpmailerLoad)
	r := newRig(t)
	script := filepath.Join(r.dir, "phpmailer.php")
	writeFile(t, script, `<?php
require '`+phpmailerLoad+`';
use PHPMailer\PHPMailer\PHPMailer;
$m = new PHPMailer(true);
try {
	$m->isSendmail();
	$m->Sendmail = getenv('SENDMAIL');
	$m->setFrom('app@example.com');
	$m->addBCC('a@example.com');
	$m->addBCC('b@example.com');
	$m->Subject = 'Bcc only';
	$m->Body = "Hidden list.\n";
	$m->send();
} catch (Exception $e) {
	fwrite(STDERR, $e->getMessage() . "\n");
	exit(1);
}
`)
	env := envelope{"app@example.com", []string{"a@example.com", "b@example.com"}}
	r.mustRun(true, nil, []string{"SENDMAIL=" + bins.sendmail}, phpBin, script)
	r.expectQueued(env)
	m := r.deliver(1)[0]
	checkEnvelope(t, m, env)
	checkStandard(t, m)
	checkHeader(t, m, "To", "undisclosed-recipients:;")
	checkBody(t, m, "Hidden list.\n")
}

// TestSymfonyMailer sends three messages through one SendmailTransport
// (one -bs session, or one -t process per message) and checks that each
// arrives once, with Bcc recipients in the envelope only. Symfony treats
// any output of sendmail on stderr as a failure, so the PHP process must
// print nothing there.
func TestSymfonyMailer(t *testing.T) {
	t.Parallel()
	need(t, "php-cli", phpBin)
	need(t, "php-symfony-mailer", symfonyLoad)
	for _, flags := range []string{"-bs", "-bs -i", "-t -i"} {
		t.Run(flags, func(t *testing.T) {
			t.Parallel()
			r := newRig(t)
			script := filepath.Join(r.dir, "symfony.php")
			writeFile(t, script, `<?php
require '`+symfonyLoad+`';
use Symfony\Component\Mailer\Mailer;
use Symfony\Component\Mailer\Transport\SendmailTransport;
use Symfony\Component\Mime\Email;
try {
	$mailer = new Mailer(new SendmailTransport(getenv('SENDMAIL_CMD')));
	for ($i = 1; $i <= 3; $i++) {
		$e = (new Email())
			->from('App <app@example.com>')
			->to('to@example.com')
			->cc('cc@example.com')
			->bcc('bcc@example.com')
			->subject("Symfony $i")
			->text("Message $i\n.\nend\n");
		$mailer->send($e);
	}
} catch (\Throwable $e) {
	fwrite(STDERR, get_class($e) . ': ' . $e->getMessage() . "\n");
	exit(1);
}
`)
			env := envelope{"app@example.com", []string{"to@example.com", "cc@example.com", "bcc@example.com"}}
			r.mustRun(true, nil, []string{"SENDMAIL_CMD=" + bins.sendmail + " " + flags}, phpBin, script)
			r.expectQueued(env, env, env)
			seen := map[string]int{}
			for _, m := range r.deliver(3) {
				checkEnvelope(t, m, env)
				checkStandard(t, m)
				checkAddrs(t, m, "From", "app@example.com")
				checkAddrs(t, m, "To", "to@example.com")
				checkAddrs(t, m, "Cc", "cc@example.com")
				subj := m.Header.Get("Subject")
				seen[subj]++
				var i int
				if _, err := fmt.Sscanf(subj, "Symfony %d", &i); err != nil {
					t.Errorf("Subject %q", subj)
					continue
				}
				// Over SMTP, Symfony writes the message (which ends in
				// CRLF) and then CRLF.CRLF, so the data ends with an
				// empty line, as any MTA would record it.
				body := fmt.Sprintf("Message %d\n.\nend\n", i)
				if flags != "-t -i" {
					body += "\n"
				}
				checkBody(t, m, body)
			}
			for i := 1; i <= 3; i++ {
				if n := seen[fmt.Sprintf("Symfony %d", i)]; n != 1 {
					t.Errorf("Symfony %d arrived %d times, want once (all: %v)", i, n, seen)
				}
			}
		})
	}
}

// newsletterAddrs returns n addresses; newsletterTo, the To value that
// lists them.
func newsletterAddrs(n int) []string {
	var l []string
	for i := range n {
		l = append(l, fmt.Sprintf("subscriber%03d@example.com", i))
	}
	return l
}

func newsletterTo(n int) string { return strings.Join(newsletterAddrs(n), ", ") }

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
