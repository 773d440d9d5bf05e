package runner

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/postie-mail/postie/internal/config"
	"github.com/postie-mail/postie/internal/dkimsign"
	"github.com/postie-mail/postie/internal/maillog"
	"github.com/postie-mail/postie/internal/oauth2token"
	"github.com/postie-mail/postie/internal/spool"
	"github.com/postie-mail/postie/internal/submit"
)

// New builds a Runner from the configuration: the submission settings,
// the password source and the DKIM keys. Key problems are found here, at
// the start of a run (and by mailq --check), not at 3 a.m. in the middle
// of a flush. debug, when not nil, receives the SMTP dialogue (AUTH
// redacted).
func New(cfg *config.Config, log *maillog.Logger, debug io.Writer) (*Runner, error) {
	r := &Runner{Cfg: cfg, Spool: spool.New(cfg.SpoolDir), Log: log, Now: time.Now}
	r.Spool.Warn = log.Errorf
	hosts := func(primary *config.Smarthost, fallback []config.Smarthost) ([]*submit.Config, error) {
		var out []*submit.Config
		for _, sh := range append([]config.Smarthost{*primary}, fallback...) {
			sc, err := SubmitConfigFor(cfg, &sh, debug)
			if err != nil {
				return nil, &config.Error{Path: cfg.Path, Msg: err.Error()}
			}
			out = append(out, sc)
		}
		return out, nil
	}
	for i := range cfg.Route {
		rt := &cfg.Route[i]
		hs, err := hosts(&rt.Smarthost, rt.Fallback)
		if err != nil {
			return nil, err
		}
		r.Routes = append(r.Routes, Route{Match: rt.Matches, Hosts: hs})
	}
	if cfg.Smarthost.Configured() {
		hs, err := hosts(&cfg.Smarthost, cfg.Fallback)
		if err != nil {
			return nil, err
		}
		r.Routes = append(r.Routes, Route{Hosts: hs})
	}
	if keys := cfg.DKIM.Keys(); len(keys) > 0 {
		signer, err := LoadSigner(cfg)
		if err != nil {
			return nil, err
		}
		r.Signer = signer
	}
	return r, nil
}

// LoadSigner loads every configured DKIM key.
func LoadSigner(cfg *config.Config) (*dkimsign.Signer, error) {
	var keys []*dkimsign.Key
	for _, k := range cfg.DKIM.Keys() {
		key, err := dkimsign.LoadKey(dkimsign.KeyConfig{
			Domain: k.Domain, Selector: k.Selector, PrivateKeyFile: k.PrivateKeyFile,
			Expiration: k.Expiration.Duration,
		}, os.Getuid(), os.Getgid())
		if err != nil {
			return nil, &config.Error{Path: cfg.Path, Msg: err.Error()}
		}
		keys = append(keys, key)
	}
	return dkimsign.NewSigner(keys), nil
}

// SubmitConfigOAuth is SubmitConfigFor the default [smarthost].
func SubmitConfigOAuth(cfg *config.Config, debug io.Writer) (*submit.Config, error) {
	return SubmitConfigFor(cfg, &cfg.Smarthost, debug)
}

// SubmitConfigFor converts one smarthost table, with the OAuth2 token
// source when it has an oauth2 table.
func SubmitConfigFor(cfg *config.Config, sh *config.Smarthost, debug io.Writer) (*submit.Config, error) {
	sc := submitConfig(cfg, sh, debug)
	o := sh.OAuth2
	if o == nil {
		return sc, nil
	}
	// One token cache per account.
	sum := sha256.Sum256([]byte(sh.Address + "\x00" + sh.Username))
	src, err := oauth2token.New(oauth2token.Config{
		TokenURL:         o.TokenURL,
		ClientID:         o.ClientID,
		ClientSecretFile: o.ClientSecretFile,
		RefreshTokenFile: o.RefreshTokenFile,
		Scopes:           o.Scopes,
		CAFile:           o.CAFile,
		CacheFile:        filepath.Join(cfg.SpoolDir, "oauth2-token-"+hex.EncodeToString(sum[:6])+".json"),
		ReadSecret:       ReadSecretFile,
	})
	if err != nil {
		return nil, err
	}
	sc.Token = src.Token
	return sc, nil
}

func submitConfig(cfg *config.Config, sh *config.Smarthost, debug io.Writer) *submit.Config {
	sc := &submit.Config{
		Address:                sh.Address,
		TLS:                    submit.TLSMode(sh.TLS),
		Hostname:               cfg.Hostname,
		Username:               sh.Username,
		AuthMechanism:          sh.Auth,
		CAFile:                 sh.CAFile,
		TLSFingerprint:         sh.TLSFingerprint,
		TLSMinVersion:          sh.TLSMinVersion,
		ClientCert:             sh.TLSCertFile,
		ClientKey:              sh.TLSKeyFile,
		InsecureAllowPlainAuth: sh.AllowInsecureAuth,
		ConnectTimeout:         sh.ConnectTimeout.Duration,
		CommandTimeout:         sh.CommandTimeout.Duration,
		DataTimeout:            sh.DataTimeout.Duration,
		Debug:                  debug,
	}
	switch {
	case sh.Password != "":
		pw := sh.Password
		sc.Password = func(context.Context) (string, error) { return pw, nil }
	case sh.PasswordFile != "":
		path := sh.PasswordFile
		sc.Password = func(context.Context) (string, error) { return ReadSecretFile(path) }
	case len(sh.PasswordCommand) > 0:
		argv := sh.PasswordCommand
		sc.Password = func(ctx context.Context) (string, error) { return runPasswordCommand(ctx, argv) }
	}
	return sc
}

// ReadSecretFile reads a password file: its first line. A file readable
// by others is refused, naming the file and its mode, because a secret
// that every local user can read is no secret.
func ReadSecretFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("password file: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("password file: %w", err)
	}
	if mode := st.Mode().Perm(); mode&0o004 != 0 {
		return "", fmt.Errorf("password file %s has mode %04o: readable by every user; chmod 600 it (or 640 root:postie)", path, mode)
	}
	if mode := st.Mode().Perm(); mode&0o040 != 0 {
		if sys, ok := st.Sys().(*syscall.Stat_t); ok && int(sys.Gid) != os.Getegid() && !inGroup(int(sys.Gid)) {
			return "", fmt.Errorf("password file %s has mode %04o and a group the queue runner is not in: chmod 600 it", path, mode)
		}
	}
	line, err := bufio.NewReader(io.LimitReader(f, 64<<10)).ReadString('\n')
	if err != nil && err != io.EOF {
		return "", fmt.Errorf("password file %s: %w", path, err)
	}
	return strings.TrimRight(line, "\r\n"), nil
}

func inGroup(gid int) bool {
	gs, _ := os.Getgroups()
	for _, g := range gs {
		if g == gid {
			return true
		}
	}
	return false
}

// runPasswordCommand runs argv (no shell) and returns the first line of its
// output. Its stderr is not shown: it could contain the secret.
func runPasswordCommand(ctx context.Context, argv []string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var out bytes.Buffer
	cmd.Stdout = &out
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("password_command %s: %v", argv[0], err)
	}
	line, _, _ := strings.Cut(out.String(), "\n")
	line = strings.TrimRight(line, "\r")
	if line == "" {
		return "", fmt.Errorf("password_command %s printed no password", argv[0])
	}
	return line, nil
}
