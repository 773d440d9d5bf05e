package mailqcmd

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/postie-mail/postie/internal/config"
	"github.com/postie-mail/postie/internal/runner"
	"github.com/postie-mail/postie/internal/spool"
	"github.com/postie-mail/postie/internal/submit"
)

// runCheck checks the configuration and the way to the smarthost without
// sending anything, step by step, saying for each step "ok" or what failed
// and what to change. With an address, it also probes MAIL FROM/RCPT TO
// and resets. Exit 0 only when mail would go out.
func runCheck(cfg *config.Config, args []string, verbose bool, std IO) int {
	failed := false
	step := func(name string, err error, detail string) {
		if err != nil {
			failed = true
			fmt.Fprintf(std.Out, "FAIL  %-10s %v\n", name, err)
			return
		}
		fmt.Fprintf(std.Out, "ok    %-10s %s\n", name, detail)
	}
	src := cfg.Path
	if src == "" {
		src = "(no config file: defaults)"
	}
	step("config", nil, src)

	sp := spool.New(cfg.SpoolDir)
	if err := sp.Ready(); err != nil {
		step("spool", fmt.Errorf("%v: run sendmail once as the spool's owner, or reinstall the package", err), "")
	} else {
		step("spool", nil, cfg.SpoolDir)
	}

	if len(cfg.DKIM.Keys()) > 0 {
		signer, err := runner.LoadSigner(cfg)
		if err != nil {
			step("dkim", err, "")
		} else {
			for _, k := range signer.Keys() {
				step("dkim", nil, fmt.Sprintf("%s._domainkey.%s (%s); publish: mailq --dkim-txt", k.Selector(), k.Domain(), k.Algorithm()))
			}
		}
	}

	if !cfg.Smarthost.Configured() {
		step("smarthost", errors.New("no smarthost configured: set [smarthost] address (host:port) in the config file"), "")
		return checkExit(failed)
	}
	sh := &cfg.Smarthost
	host, _, _ := net.SplitHostPort(sh.Address)
	ctx, cancel := context.WithTimeout(context.Background(), sh.ConnectTimeout.Duration+sh.CommandTimeout.Duration)
	defer cancel()
	addrs, err := net.DefaultResolver.LookupHost(ctx, host)
	if err != nil {
		step("resolve", fmt.Errorf("cannot resolve %s: %v; check [smarthost] address", host, err), "")
		return checkExit(true)
	}
	step("resolve", nil, fmt.Sprintf("%s → %v", host, addrs))

	if sh.Password == "" && sh.PasswordFile != "" {
		if _, err := runner.ReadSecretFile(sh.PasswordFile); err != nil {
			step("password", err, "")
		} else {
			step("password", nil, sh.PasswordFile)
		}
	}

	var debug *os.File
	if verbose {
		debug = os.Stderr
	}
	sc, err := runner.SubmitConfigOAuth(cfg, nil)
	if err != nil {
		step("oauth2", err, "")
		return checkExit(true)
	}
	if debug != nil {
		sc.Debug = debug
	}
	start := time.Now()
	sess, err := submit.Dial(ctx, sc)
	if err != nil {
		var se *submit.Error
		if errors.As(err, &se) {
			step(se.Step, fmt.Errorf("%v%s", err, advice(se, sh)), "")
		} else {
			step("connect", err, "")
		}
		return checkExit(true)
	}
	defer sess.Close()
	step("connect", nil, fmt.Sprintf("%s (%s)", sess.Relay(), time.Since(start).Round(time.Millisecond)))
	if st, ok := sess.TLSState(); ok && len(st.PeerCertificates) > 0 {
		c := st.PeerCertificates[0]
		detail := fmt.Sprintf("%s, %s; certificate %q issued by %q, expires %s (%s), verified",
			tls.VersionName(st.Version), tls.CipherSuiteName(st.CipherSuite), c.Subject.CommonName, c.Issuer.CommonName,
			c.NotAfter.Format("2006-01-02"), untilExpiry(c))
		step("tls", nil, detail)
	} else if sh.TLS == "none" {
		step("tls", nil, `none (tls = "none")`)
	}
	if sh.Username != "" {
		step("auth", nil, fmt.Sprintf("%s as %s", sess.AuthMechanism(), sh.Username))
	} else {
		step("auth", nil, "none configured")
	}
	if len(args) > 0 {
		// The probe's sender: a second argument, the forced From, the
		// account's own address, or postmaster at this host.
		from := cfg.Rewrite.From
		if from == "" && strings.Contains(sh.Username, "@") {
			from = sh.Username
		}
		if from == "" {
			from = "postmaster@" + cfg.Hostname
		}
		if len(args) > 1 {
			from = args[1]
		}
		name := "probe"
		err := sess.Probe(ctx, from, args[0])
		var se *submit.Error
		if errors.As(err, &se) {
			name = se.Step
		}
		step(name, err, fmt.Sprintf("MAIL FROM:<%s> RCPT TO:<%s> accepted (RSET; nothing sent)", from, args[0]))
	}
	return checkExit(failed)
}

func checkExit(failed bool) int {
	if failed {
		return exConfig
	}
	return exOK
}

// advice says what to change for a failed step.
func advice(se *submit.Error, sh *config.Smarthost) string {
	switch se.Step {
	case "connect":
		return "; check [smarthost] address, the firewall, and that the server listens there"
	case "tls":
		var ue x509.UnknownAuthorityError
		var he x509.HostnameError
		var ce x509.CertificateInvalidError
		switch {
		case errors.As(se, &ue):
			return "; the certificate is not signed by a trusted CA: set [smarthost] ca_file to the issuer's PEM, or pin it with tls_fingerprint"
		case errors.As(se, &he):
			return "; the certificate does not name this host: use the name in the certificate in [smarthost] address"
		case errors.As(se, &ce):
			return "; the certificate is expired or not yet valid: the server's administrator must renew it"
		}
		if sh.TLS == "starttls" {
			return "; if the server uses implicit TLS (port 465), set tls = \"implicit\""
		}
	case "auth":
		return "; check [smarthost] username and the password (file)"
	}
	return ""
}

func untilExpiry(c *x509.Certificate) string {
	d := time.Until(c.NotAfter)
	if d < 0 {
		return "expired"
	}
	return fmt.Sprintf("in %d days", int(d.Hours()/24))
}
