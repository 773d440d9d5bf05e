package dkimsign

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/emersion/go-msgauth/dkim"
	"golang.org/x/net/idna"
)

// KeyConfig names one signing key: the d= domain, the s= selector, and the
// PEM file holding the private key.
type KeyConfig struct {
	Domain         string // d=; U-labels are converted to A-labels
	Selector       string // s=
	PrivateKeyFile string

	// Expiration, when non-zero, adds x= to the signature: the signature
	// expires that long after it is made (at least a minute). Each delivery
	// attempt signs afresh, so it counts from the attempt, not from enqueue.
	Expiration time.Duration

	// Canonicalization is c= as in RFC 6376 §3.5: "header/body", or a single
	// algorithm that names the header canonicalization with a "simple" body
	// (so "relaxed" means "relaxed/simple", as in OpenDKIM). Empty means
	// "relaxed/relaxed".
	Canonicalization string
}

// Key is a private key loaded by LoadKey, with where it publishes its public
// half. Its methods are safe for concurrent use.
type Key struct {
	domain     string // lower-case A-labels
	selector   string
	signer     crypto.Signer // *rsa.PrivateKey or ed25519.PrivateKey
	keyType    string        // "rsa" or "ed25519", as in the TXT record's k=
	expiration time.Duration
	headerCan  dkim.Canonicalization
	bodyCan    dkim.Canonicalization
}

// Domain returns the signing domain (d=), lower-case, in A-labels.
func (k *Key) Domain() string { return k.domain }

// Selector returns the selector (s=).
func (k *Key) Selector() string { return k.selector }

// Algorithm returns the signature algorithm (a=): "rsa-sha256" or
// "ed25519-sha256".
func (k *Key) Algorithm() string { return k.keyType + "-sha256" }

const (
	// minRSABits is the smallest RSA key verifiers must accept (RFC 8301
	// §3.2); shorter signatures are treated as if unsigned.
	minRSABits = 1024
	// maxKeyFileBytes keeps a misconfigured path (a log, /dev/zero) from
	// being read whole. A 16384-bit RSA PEM is about 12 KB.
	maxKeyFileBytes = 64 << 10
)

// LoadKey reads and checks the private key of kc. The runner calls it with
// its own user and group: the key file must be owned by that user or by
// root, must not be readable by others, and may be group-readable only when
// its group is the runner's. Accepted formats are PEM "RSA PRIVATE KEY"
// (PKCS#1) and "PRIVATE KEY" (PKCS#8, RSA or Ed25519, as written by
// `openssl genpkey`), unencrypted; RSA keys need at least 1024 bits.
// Errors name the file but never contain key material.
func LoadKey(kc KeyConfig, runnerUID, runnerGID int) (*Key, error) {
	domain, err := normalizeDomain(kc.Domain)
	if err != nil {
		return nil, fmt.Errorf("dkim: domain %q: %v", kc.Domain, err)
	}
	selector := strings.TrimSpace(kc.Selector)
	if !validDNSName(selector) {
		return nil, fmt.Errorf("dkim: selector %q is not a DNS name", kc.Selector)
	}
	if len(selector)+len("._domainkey.")+len(domain) > 253 {
		return nil, fmt.Errorf("dkim: %s._domainkey.%s is longer than a DNS name may be", selector, domain)
	}
	if kc.Expiration < 0 || (kc.Expiration > 0 && kc.Expiration < time.Minute) {
		return nil, fmt.Errorf("dkim: expiration %v for %s._domainkey.%s: want 0 (none) or at least a minute", kc.Expiration, selector, domain)
	}
	hc, bc, err := parseCanonicalization(kc.Canonicalization)
	if err != nil {
		return nil, err
	}
	if kc.PrivateKeyFile == "" {
		return nil, fmt.Errorf("dkim: no private key file for %s._domainkey.%s", selector, domain)
	}
	signer, err := readPrivateKey(kc.PrivateKeyFile, runnerUID, runnerGID)
	if err != nil {
		return nil, err
	}
	k := &Key{
		domain:     domain,
		selector:   selector,
		signer:     signer,
		expiration: kc.Expiration,
		headerCan:  hc,
		bodyCan:    bc,
	}
	switch signer.(type) {
	case *rsa.PrivateKey:
		k.keyType = "rsa"
	case ed25519.PrivateKey:
		k.keyType = "ed25519"
	}
	return k, nil
}

// readPrivateKey opens path, checks who may read it (on the open file, so
// that what is checked is what is read), and parses it.
func readPrivateKey(path string, runnerUID, runnerGID int) (crypto.Signer, error) {
	f, err := os.Open(path)
	if err != nil {
		// *PathError names the file and says why; it holds no content.
		return nil, fmt.Errorf("dkim: private key: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("dkim: private key: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("dkim: private key %s is not a regular file", path)
	}
	perm := fi.Mode().Perm()
	if perm&0o004 != 0 {
		return nil, fmt.Errorf("dkim: private key %s has mode %04o: readable by others; chmod 600 it", path, perm)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		if perm&0o040 != 0 && int(st.Gid) != runnerGID {
			return nil, fmt.Errorf("dkim: private key %s has mode %04o and group %d, not the runner's group %d: readable by that group; chmod 600 it or chgrp it to the runner's group", path, perm, st.Gid, runnerGID)
		}
		if int(st.Uid) != runnerUID && st.Uid != 0 {
			return nil, fmt.Errorf("dkim: private key %s is owned by uid %d, neither the runner (uid %d) nor root; chown it", path, st.Uid, runnerUID)
		}
	}
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFileBytes+1))
	defer clear(data)
	if err != nil {
		return nil, fmt.Errorf("dkim: private key: %w", err)
	}
	if len(data) > maxKeyFileBytes {
		return nil, fmt.Errorf("dkim: private key %s is larger than %d bytes: not a key file", path, maxKeyFileBytes)
	}
	signer, err := parsePrivateKey(data)
	if err != nil {
		return nil, fmt.Errorf("dkim: private key %s: %v", path, err)
	}
	return signer, nil
}

// parsePrivateKey returns the first private key in the PEM data. Its errors
// come from the PEM type and from crypto/x509, whose messages describe the
// structure, never the content.
func parsePrivateKey(data []byte) (crypto.Signer, error) {
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return nil, errors.New(`no PEM "RSA PRIVATE KEY" or "PRIVATE KEY" block`)
		}
		if _, ok := block.Headers["DEK-Info"]; ok {
			clear(block.Bytes)
			return nil, errors.New("key is encrypted; store it unencrypted, readable only by the runner")
		}
		switch block.Type {
		case "RSA PRIVATE KEY":
			k, err := x509.ParsePKCS1PrivateKey(block.Bytes)
			bits := rsaBitsPKCS1(block.Bytes)
			clear(block.Bytes)
			if err != nil {
				if bits > 0 && bits < minRSABits {
					return nil, rsaTooShort(bits)
				}
				return nil, fmt.Errorf("not a valid PKCS#1 RSA key: %v", err)
			}
			return checkRSA(k)
		case "PRIVATE KEY":
			k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
			bits := rsaBitsPKCS8(block.Bytes)
			clear(block.Bytes)
			if err != nil {
				if bits > 0 && bits < minRSABits {
					return nil, rsaTooShort(bits)
				}
				return nil, fmt.Errorf("not a valid PKCS#8 key: %v", err)
			}
			switch k := k.(type) {
			case *rsa.PrivateKey:
				return checkRSA(k)
			case ed25519.PrivateKey:
				return k, nil
			default:
				return nil, fmt.Errorf("unsupported key type %T: DKIM signs with RSA or Ed25519", k)
			}
		case "ENCRYPTED PRIVATE KEY":
			return nil, errors.New("key is encrypted; store it unencrypted, readable only by the runner")
		default:
			if strings.HasSuffix(block.Type, "PRIVATE KEY") {
				clear(block.Bytes)
				return nil, fmt.Errorf("unsupported PEM type %q: DKIM signs with RSA or Ed25519 (PKCS#1 or PKCS#8)", block.Type)
			}
			// Not a key (EC PARAMETERS, a certificate...): look further.
		}
	}
}

func checkRSA(k *rsa.PrivateKey) (crypto.Signer, error) {
	if bits := k.N.BitLen(); bits < minRSABits {
		return nil, rsaTooShort(bits)
	}
	return k, nil
}

func rsaTooShort(bits int) error {
	return fmt.Errorf("RSA key has %d bits: too short, DKIM verifiers need at least %d (RFC 8301), use 2048", bits, minRSABits)
}

// rsaBitsPKCS1 returns the modulus size of a PKCS#1 RSA key, or 0. It is
// used only to explain why crypto/x509, which refuses short keys itself,
// failed.
func rsaBitsPKCS1(der []byte) int {
	var k struct {
		Version int
		N       *big.Int
		// Further fields are ignored: encoding/asn1 allows trailing
		// elements in a SEQUENCE.
	}
	if _, err := asn1.Unmarshal(der, &k); err != nil || k.N == nil {
		return 0
	}
	return k.N.BitLen()
}

var oidRSAEncryption = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 1}

// rsaBitsPKCS8 is rsaBitsPKCS1 for a PKCS#8 wrapping.
func rsaBitsPKCS8(der []byte) int {
	var p struct {
		Version    int
		Algo       pkix.AlgorithmIdentifier
		PrivateKey []byte
	}
	if _, err := asn1.Unmarshal(der, &p); err != nil || !p.Algo.Algorithm.Equal(oidRSAEncryption) {
		return 0
	}
	defer clear(p.PrivateKey)
	return rsaBitsPKCS1(p.PrivateKey)
}

func parseCanonicalization(s string) (header, body dkim.Canonicalization, err error) {
	if s == "" {
		return dkim.CanonicalizationRelaxed, dkim.CanonicalizationRelaxed, nil
	}
	h, b, ok := strings.Cut(strings.ToLower(strings.TrimSpace(s)), "/")
	if !ok {
		b = "simple" // RFC 6376 §3.5, c= tag
	}
	valid := func(c string) bool { return c == "simple" || c == "relaxed" }
	if !valid(h) || !valid(b) {
		return "", "", fmt.Errorf("dkim: canonicalization %q: want simple or relaxed, or header/body such as relaxed/relaxed", s)
	}
	return dkim.Canonicalization(h), dkim.Canonicalization(b), nil
}

// TXTValue returns the public key record published at
// Selector()._domainkey.Domain(): "v=DKIM1; k=rsa; p=<base64 DER
// SubjectPublicKeyInfo>" or, for Ed25519, "v=DKIM1; k=ed25519; p=<base64 of
// the 32-byte public key>" (RFC 8463).
func (k *Key) TXTValue() string {
	var p []byte
	switch pub := k.signer.Public().(type) {
	case *rsa.PublicKey:
		der, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			panic("dkimsign: marshalling an RSA public key: " + err.Error()) // cannot happen for a valid key
		}
		p = der
	case ed25519.PublicKey:
		p = pub
	}
	return "v=DKIM1; k=" + k.keyType + "; p=" + base64.StdEncoding.EncodeToString(p)
}

// maxTXTString is the longest character-string a TXT record may hold (RFC
// 1035 §3.3); longer values are published as several strings, which
// verifiers concatenate (RFC 6376 §3.6.2.2).
const maxTXTString = 255

// TXTRecord returns the DNS record to publish, in zone-file syntax:
//
//	mail._domainkey.example.com. IN TXT ( "v=DKIM1; k=rsa; p=MIIB..." "..." )
//
// The value is split into strings of at most 255 bytes; a value that fits
// in one string is written without the parentheses.
func (k *Key) TXTRecord() string {
	v := k.TXTValue()
	var parts []string
	for len(v) > maxTXTString {
		parts = append(parts, `"`+v[:maxTXTString]+`"`)
		v = v[maxTXTString:]
	}
	parts = append(parts, `"`+v+`"`)
	rdata := parts[0]
	if len(parts) > 1 {
		rdata = "( " + strings.Join(parts, " ") + " )"
	}
	return k.selector + "._domainkey." + k.domain + ". IN TXT " + rdata
}

// normalizeDomain returns d lower-case, in A-labels, without a final dot.
func normalizeDomain(d string) (string, error) {
	d = strings.TrimSuffix(strings.TrimSpace(d), ".")
	if d == "" {
		return "", errors.New("empty")
	}
	if !isASCII(d) {
		a, err := idna.Lookup.ToASCII(d)
		if err != nil {
			return "", err
		}
		d = a
	}
	d = strings.ToLower(d)
	if !validDNSName(d) {
		return "", errors.New("not a DNS name")
	}
	return d, nil
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// validDNSName reports whether s is dot-separated labels of letters,
// digits, '-' and '_' (selectors in the wild use '_'), none empty or
// starting or ending with '-'. Anything else could not be looked up, and
// ';' or white space would corrupt the DKIM-Signature field.
func validDNSName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, l := range strings.Split(s, ".") {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}
