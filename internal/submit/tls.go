package submit

import (
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
)

// tlsCheck records, from inside the handshake, that the server's
// certificate passed verification. go-smtp performs the STARTTLS handshake
// lazily inside the next command, so without this a handshake failure
// would look like a failed EHLO.
type tlsCheck struct {
	verified bool
	how      string // "CA-verified" or "fingerprint-pinned", for the debug log
}

// tlsConfig builds the client TLS configuration for host.
//
// Without a pin, the chain must verify against the system roots plus
// CAFile and the certificate must be valid for host (crypto/tls does both,
// with ServerName set to host). With a pin, the pin alone authenticates the
// server, as Postfix's "fingerprint" security level does: a self-signed
// certificate whose SHA-256 (of the DER certificate or of its
// SubjectPublicKeyInfo) matches is accepted and any other is refused, even
// one a CA vouches for.
func tlsConfig(cfg *Config, host string, check *tlsCheck) (*tls.Config, error) {
	minVersion, err := parseTLSVersion(cfg.TLSMinVersion)
	if err != nil {
		return nil, err
	}
	tc := &tls.Config{
		ServerName: host,
		MinVersion: minVersion,
	}

	if cfg.ClientCert != "" || cfg.ClientKey != "" {
		if cfg.ClientCert == "" || cfg.ClientKey == "" {
			return nil, errors.New("client certificate and key must be given together")
		}
		cert, err := tls.LoadX509KeyPair(cfg.ClientCert, cfg.ClientKey)
		if err != nil {
			return nil, fmt.Errorf("loading client certificate: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}

	pin, err := parseFingerprint(cfg.TLSFingerprint)
	if err != nil {
		return nil, err
	}
	if pin != nil {
		// Chain and name verification are replaced by the pin check below;
		// VerifyConnection runs on every handshake even so.
		tc.InsecureSkipVerify = true
		tc.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("server sent no certificate")
			}
			leaf := cs.PeerCertificates[0]
			certSum := sha256.Sum256(leaf.Raw)
			spkiSum := sha256.Sum256(leaf.RawSubjectPublicKeyInfo)
			if subtle.ConstantTimeCompare(certSum[:], pin) != 1 && subtle.ConstantTimeCompare(spkiSum[:], pin) != 1 {
				return fmt.Errorf("server certificate does not match the configured fingerprint (certificate sha256 %s, public key sha256 %s)",
					hex.EncodeToString(certSum[:]), hex.EncodeToString(spkiSum[:]))
			}
			check.verified, check.how = true, "fingerprint-pinned"
			return nil
		}
		return tc, nil
	}

	roots, err := x509.SystemCertPool()
	if err != nil || roots == nil {
		roots = x509.NewCertPool()
	}
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("reading CA file: %w", err)
		}
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA file %s holds no PEM certificate", cfg.CAFile)
		}
	}
	tc.RootCAs = roots
	// crypto/tls has verified chain and name before this is called.
	tc.VerifyConnection = func(tls.ConnectionState) error {
		check.verified, check.how = true, "CA-verified"
		return nil
	}
	return tc, nil
}

// parseFingerprint decodes a SHA-256 fingerprint written in hex, with or
// without colons ("AB:CD:..." as openssl x509 -fingerprint prints it).
// The empty string means no pin.
func parseFingerprint(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, nil
	}
	if i := strings.IndexByte(s, '='); i >= 0 {
		// "sha256 Fingerprint=AB:CD:..." pasted whole.
		s = s[i+1:]
	}
	b, err := hex.DecodeString(strings.ReplaceAll(s, ":", ""))
	if err != nil || len(b) != sha256.Size {
		return nil, fmt.Errorf("TLS fingerprint %q is not a SHA-256 fingerprint (64 hex digits, colons allowed)", s)
	}
	return b, nil
}

func parseTLSVersion(s string) (uint16, error) {
	switch s {
	case "", "1.2":
		return tls.VersionTLS12, nil
	case "1.3":
		return tls.VersionTLS13, nil
	}
	return 0, fmt.Errorf("TLS minimum version %q is not supported (use 1.2 or 1.3)", s)
}
