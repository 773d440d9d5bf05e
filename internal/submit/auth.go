package submit

import (
	"context"
	"crypto/hmac"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/emersion/go-sasl"
)

// SASL mechanism names (RFC 4954 AUTH parameters).
const (
	MechOAuthBearer = "OAUTHBEARER" // RFC 7628
	MechXOAuth2     = "XOAUTH2"     // Google's pre-RFC 7628 bearer token mechanism
	MechPlain       = "PLAIN"       // RFC 4616
	MechLogin       = "LOGIN"       // draft-murchison-sasl-login
	MechCRAMMD5     = "CRAM-MD5"    // RFC 2195
)

// mechPreference lists the mechanisms in the order they are chosen when
// the server offers several and Config.AuthMechanism is empty. Why this
// order: see "Authentication" in the package documentation.
func mechPreference(havePassword, haveToken bool) []string {
	var m []string
	if haveToken {
		m = append(m, MechOAuthBearer, MechXOAuth2)
	}
	if havePassword {
		m = append(m, MechPlain, MechLogin, MechCRAMMD5)
	}
	return m
}

func isTokenMech(m string) bool { return m == MechOAuthBearer || m == MechXOAuth2 }

func knownMech(m string) bool {
	switch m {
	case MechOAuthBearer, MechXOAuth2, MechPlain, MechLogin, MechCRAMMD5:
		return true
	}
	return false
}

// chooseMechanism picks the mechanism to use from those the server offers
// in its EHLO AUTH line. A forced mechanism is used only if offered: never
// downgrade to another.
func chooseMechanism(offered []string, forced string, havePassword, haveToken bool) (string, error) {
	has := func(m string) bool {
		for _, o := range offered {
			if strings.EqualFold(o, m) {
				return true
			}
		}
		return false
	}
	if forced != "" {
		if !has(forced) {
			return "", fmt.Errorf("server does not offer AUTH mechanism %s (it offers: %s)", forced, strings.Join(offered, " "))
		}
		return forced, nil
	}
	for _, m := range mechPreference(havePassword, haveToken) {
		if has(m) {
			return m, nil
		}
	}
	what := "password"
	switch {
	case havePassword && haveToken:
		what = "password or token"
	case haveToken:
		what = "token"
	}
	return "", fmt.Errorf("server offers no AUTH mechanism usable with a %s (it offers: %s)", what, strings.Join(offered, " "))
}

// authenticate runs AUTH after TLS and EHLO. It is a no-op when no
// Username is configured.
func (s *Session) authenticate(ctx context.Context) *Error {
	cfg := &s.cfg
	if cfg.Username == "" {
		return nil
	}
	// go-smtp's Auth sends credentials over whatever the connection is;
	// check the TLS state ourselves.
	if st, ok := s.c.TLSConnectionState(); !ok || !st.HandshakeComplete {
		if cfg.TLS != TLSNone {
			return &Error{Step: StepAuth, Text: "refusing AUTH: TLS is not established"}
		}
		if !cfg.InsecureAllowPlainAuth || !s.loopback() {
			return &Error{Step: StepAuth, Text: "refusing to send credentials without TLS (tls = none): allowed only with InsecureAllowPlainAuth and a loopback address"}
		}
	}
	ok, list := s.c.Extension("AUTH")
	if !ok {
		return &Error{Step: StepAuth, Text: "server does not offer AUTH"}
	}
	mech, err := chooseMechanism(strings.Fields(strings.ToUpper(list)), cfg.AuthMechanism, cfg.Password != nil, cfg.Token != nil)
	if err != nil {
		return &Error{Step: StepAuth, Err: err}
	}
	if s.debug != nil {
		s.debug.note("AUTH mechanism %s", mech)
	}
	s.mech = mech

	if !isTokenMech(mech) {
		pw, err := cfg.Password(ctx)
		if err != nil {
			return &Error{Step: StepAuth, Text: "cannot get the password", Err: err}
		}
		var c sasl.Client
		switch mech {
		case MechPlain:
			c = sasl.NewPlainClient("", cfg.Username, pw)
		case MechLogin:
			c = &loginClient{username: cfg.Username, password: pw}
		case MechCRAMMD5:
			c = &cramMD5Client{username: cfg.Username, password: pw}
		}
		return s.authError(mech, s.c.Auth(c))
	}

	// A bearer token may have expired since it was cached: on a rejection
	// ask for a fresh one, once.
	var err2 error
	for _, refresh := range []bool{false, true} {
		tok, err := cfg.Token(ctx, refresh)
		if err != nil {
			return &Error{Step: StepAuth, Text: "cannot get the OAuth2 token", Err: err}
		}
		err2 = s.c.Auth(s.tokenClient(mech, tok))
		if err2 == nil || !retryableTokenFailure(err2) || s.connLost() {
			break
		}
		if s.debug != nil && !refresh {
			s.debug.note("token refused, retrying with a refreshed token")
		}
	}
	return s.authError(mech, err2)
}

func (s *Session) tokenClient(mech, token string) sasl.Client {
	if mech == MechXOAuth2 {
		return &xoauth2Client{username: s.cfg.Username, token: token}
	}
	port, _ := strconv.Atoi(s.port)
	return sasl.NewOAuthBearerClient(&sasl.OAuthBearerOptions{
		Username: s.cfg.Username,
		Token:    token,
		Host:     s.host,
		Port:     port,
	})
}

// retryableTokenFailure reports whether AUTH failed in a way a fresh token
// may cure: a 535 reply, or an error challenge (334 with a JSON status) for
// OAUTHBEARER or XOAUTH2.
func retryableTokenFailure(err error) bool {
	if se, ok := asReply(err); ok {
		return se.Code == 535
	}
	var obe *sasl.OAuthBearerError
	return errors.As(err, &obe)
}

// authError classifies the outcome of Client.Auth. AUTH failures are never
// permanent: a rejected password is a configuration error, not a property
// of the message (Postfix's smtp_sasl_auth_soft_bounce). The error carries
// only the server's reply and the SASL library's description, never the
// credentials.
func (s *Session) authError(mech string, err error) *Error {
	if err == nil {
		return nil
	}
	if se, ok := asReply(err); ok {
		e := replyError(StepAuth, se)
		e.Permanent = false
		if se.Code == 421 {
			s.kill()
		}
		return e
	}
	if s.connLost() {
		s.kill()
		return &Error{Step: StepAuth, Text: "connection lost during AUTH " + mech, Err: err}
	}
	return &Error{Step: StepAuth, Text: "AUTH " + mech + " failed", Err: err}
}

// cramMD5Client implements CRAM-MD5 (RFC 2195): the response to the
// server's challenge is the username, a space, and the hex HMAC-MD5 of the
// challenge keyed with the password. go-sasl does not provide it.
type cramMD5Client struct {
	username, password string
	done               bool
}

func (c *cramMD5Client) Start() (string, []byte, error) { return MechCRAMMD5, nil, nil }

func (c *cramMD5Client) Next(challenge []byte) ([]byte, error) {
	if c.done {
		return nil, sasl.ErrUnexpectedServerChallenge
	}
	c.done = true
	m := hmac.New(md5.New, []byte(c.password))
	m.Write(challenge)
	return []byte(c.username + " " + hex.EncodeToString(m.Sum(nil))), nil
}

// xoauth2Client implements Google's XOAUTH2: the initial response is
// "user=U\x01auth=Bearer T\x01\x01". On failure the server sends a 334
// challenge holding a JSON error, to which the client must answer with an
// empty line; the server then sends the final (535) reply. go-sasl does not
// provide it.
type xoauth2Client struct {
	username, token string
	failed          bool
}

func (c *xoauth2Client) Start() (string, []byte, error) {
	return MechXOAuth2, []byte("user=" + c.username + "\x01auth=Bearer " + c.token + "\x01\x01"), nil
}

func (c *xoauth2Client) Next(challenge []byte) ([]byte, error) {
	if c.failed {
		return nil, sasl.ErrUnexpectedServerChallenge
	}
	c.failed = true
	return []byte{}, nil
}

// loginClient implements LOGIN: the username in answer to the first
// challenge, the password to the second. It does not use go-sasl's LOGIN
// client, which sends the username as an initial response and then
// insists on the exact challenge "Password:"; servers word their
// challenges differently (aiosmtpd sends "User Name\x00" and
// "Password\x00"), and the mechanism's draft leaves the wording to them.
type loginClient struct {
	username, password string
	step               int
}

func (c *loginClient) Start() (string, []byte, error) { return MechLogin, nil, nil }

func (c *loginClient) Next(challenge []byte) ([]byte, error) {
	c.step++
	switch c.step {
	case 1:
		return []byte(c.username), nil
	case 2:
		return []byte(c.password), nil
	}
	return nil, sasl.ErrUnexpectedServerChallenge
}
