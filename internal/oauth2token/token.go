// Package oauth2token gives the queue runner OAuth2 access tokens for
// XOAUTH2 and OAUTHBEARER (Gmail, Office 365), refreshed with a refresh
// token, without scripts.
//
// The refresh token and client secret live in files that only the runner
// can read. Access tokens are cached in a 0600 file in the spool until
// they expire, so a flush every minute does not hit the token endpoint
// every minute. When the smarthost rejects a cached token (it may have
// been revoked early), the runner asks again with refresh=true, and a new
// token is fetched once before the message is deferred. A refresh token
// that the endpoint rotates is kept in the cache, which takes precedence
// over the file.
//
// The exchange itself is golang.org/x/oauth2's.
package oauth2token

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/oauth2"

	"github.com/postie-mail/postie/internal/safeio"
)

// Config describes the token endpoint and the credentials.
type Config struct {
	TokenURL         string
	ClientID         string
	ClientSecretFile string
	RefreshTokenFile string
	Scopes           []string
	// CAFile is trusted, in addition to the system roots, for the token
	// endpoint.
	CAFile string
	// CacheFile holds the current access token (and a rotated refresh
	// token), mode 0600.
	CacheFile string
	// ReadSecret reads a secret file (checking its permissions).
	ReadSecret func(path string) (string, error)
}

// Source hands out access tokens. It is safe for concurrent use: parallel
// connections share one token.
type Source struct {
	cfg  Config
	http *http.Client
	mu   sync.Mutex
	now  func() time.Time
}

// cached is the cache file's content.
type cached struct {
	AccessToken  string    `json:"access_token"`
	Expiry       time.Time `json:"expiry"`
	RefreshToken string    `json:"refresh_token,omitempty"`
}

// New returns a Source for cfg.
func New(cfg Config) (*Source, error) {
	if cfg.TokenURL == "" || cfg.ClientID == "" || cfg.RefreshTokenFile == "" {
		return nil, errors.New("oauth2: token_url, client_id and refresh_token_file are required")
	}
	if !strings.HasPrefix(cfg.TokenURL, "https://") {
		return nil, fmt.Errorf("oauth2: token_url %q must be https", cfg.TokenURL)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if cfg.CAFile != "" {
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("oauth2: ca_file: %w", err)
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("oauth2: ca_file %s holds no PEM certificate", cfg.CAFile)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return &Source{cfg: cfg, http: &http.Client{Transport: tr, Timeout: 30 * time.Second}, now: time.Now}, nil
}

// Token returns an access token: the cached one unless refresh is set or
// it expires within a minute, else a fresh one from the endpoint.
func (s *Source) Token(ctx context.Context, refresh bool) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, _ := s.readCache()
	if !refresh && c.AccessToken != "" && s.now().Add(time.Minute).Before(c.Expiry) {
		return c.AccessToken, nil
	}
	rt := c.RefreshToken
	if rt == "" {
		var err error
		if rt, err = s.cfg.ReadSecret(s.cfg.RefreshTokenFile); err != nil {
			return "", fmt.Errorf("oauth2: refresh token: %w", err)
		}
	}
	secret := ""
	if s.cfg.ClientSecretFile != "" {
		var err error
		if secret, err = s.cfg.ReadSecret(s.cfg.ClientSecretFile); err != nil {
			return "", fmt.Errorf("oauth2: client secret: %w", err)
		}
	}
	oc := &oauth2.Config{
		ClientID:     s.cfg.ClientID,
		ClientSecret: secret,
		Endpoint:     oauth2.Endpoint{TokenURL: s.cfg.TokenURL},
		Scopes:       s.cfg.Scopes,
	}
	ctx = context.WithValue(ctx, oauth2.HTTPClient, s.http)
	tok, err := oc.TokenSource(ctx, &oauth2.Token{RefreshToken: rt}).Token()
	if err != nil {
		return "", fmt.Errorf("oauth2: refresh at %s: %s", s.cfg.TokenURL, describe(err))
	}
	n := cached{AccessToken: tok.AccessToken, Expiry: tok.Expiry}
	if tok.Expiry.IsZero() {
		n.Expiry = s.now().Add(time.Hour)
	}
	if tok.RefreshToken != "" && tok.RefreshToken != rt {
		n.RefreshToken = tok.RefreshToken
	} else {
		n.RefreshToken = c.RefreshToken
	}
	if err := s.writeCache(n); err != nil {
		return "", err
	}
	return tok.AccessToken, nil
}

// describe gives the endpoint's error without echoing request secrets.
func describe(err error) string {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		msg := re.ErrorCode
		if re.ErrorDescription != "" {
			msg += ": " + re.ErrorDescription
		}
		if msg == "" && re.Response != nil {
			msg = re.Response.Status
		}
		return msg
	}
	return err.Error()
}

func (s *Source) readCache() (cached, error) {
	var c cached
	b, err := os.ReadFile(s.cfg.CacheFile)
	if err != nil {
		return c, err
	}
	err = json.Unmarshal(b, &c)
	return c, err
}

func (s *Source) writeCache(c cached) error {
	b, err := json.Marshal(c)
	if err != nil {
		return err
	}
	if err := safeio.WriteFile(s.cfg.CacheFile, b); err != nil {
		return fmt.Errorf("oauth2: token cache %s: %w", s.cfg.CacheFile, err)
	}
	return nil
}
