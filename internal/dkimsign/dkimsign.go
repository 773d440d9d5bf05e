// Package dkimsign signs outgoing messages with DKIM (RFC 6376) at delivery
// time, with RSA-SHA256 and Ed25519-SHA256 keys (RFC 8463).
//
// Only the queue runner reads private keys. At start-up it loads them and
// builds one Signer:
//
//	k, err := dkimsign.LoadKey(dkimsign.KeyConfig{Domain: "example.com",
//		Selector: "mail", PrivateKeyFile: "/etc/postie/dkim.key"},
//		os.Getuid(), os.Getgid())
//	signer := dkimsign.NewSigner([]*dkimsign.Key{k})
//
// and for each delivery attempt it signs the spooled message, then sends the
// signature fields followed by the message:
//
//	domain, err := dkimsign.ReadFromDomain(f) // reads the header section only
//	f.Seek(0, io.SeekStart)
//	sig, err := signer.Sign(domain, f) // "" if no key is for that domain
//	f.Seek(0, io.SeekStart)
//	io.WriteString(data, sig)
//	io.Copy(data, f)
//
// What Sign reads must be exactly what is sent (after any conformance
// transformation), with CRLF line endings: a signature covers bytes, and a
// relay that rewrites them breaks it.
//
// # Memory
//
// Sign holds the header section in memory (at most MaxHeaderBytes) and
// streams the body once through go-msgauth's streaming dkim.Signer, one per
// key, fanned out with io.MultiWriter; memory does not grow with the size
// of the message.
//
// # Signed header fields
//
// Every signature covers the fields of signedFields (From, To, Cc, Subject,
// Date, Message-ID, MIME-Version, Content-Type, Reply-To, In-Reply-To,
// References) and over-signs them: h= names each field once more than it
// occurs in the message. A verifier takes same-named fields from the bottom
// up and an h= name with no field left to match hashes as a null string
// (RFC 6376 §5.4.2), so a field added later, a second Subject or a Cc where
// there was none, makes the signature fail instead of riding on it. Sign
// counts the fields while reading the header section, before the
// signatures are set up, so this costs no second read.
//
// Canonicalization is relaxed/relaxed unless KeyConfig says otherwise.
package dkimsign

import (
	"bufio"
	"bytes"
	"crypto"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/emersion/go-msgauth/dkim"
)

// signedFields are the header fields every signature covers, each
// over-signed. From must be first: go-msgauth refuses a list without it,
// and RFC 6376 §5.4 requires it.
var signedFields = []string{
	"From", "To", "Cc", "Subject", "Date", "Message-ID", "MIME-Version",
	"Content-Type", "Reply-To", "In-Reply-To", "References",
}

// MaxHeaderBytes bounds the header section Sign and ReadFromDomain read
// into memory. A message whose header section is larger is not signed
// (Sign returns an error).
const MaxHeaderBytes = 1 << 20

// Signer signs messages with the keys it was given. It is safe for
// concurrent use.
type Signer struct {
	keys []*Key
	now  func() time.Time // for x=; tests replace it
}

// NewSigner returns a Signer using keys. Several keys may share a domain:
// a message from that domain gets one signature from each, typically an
// RSA and an Ed25519 one: verifiers without Ed25519 (RFC 8463) still have
// the RSA one to check.
func NewSigner(keys []*Key) *Signer {
	return &Signer{keys: append([]*Key(nil), keys...), now: time.Now}
}

// KeysFor returns the keys whose domain is fromDomain, compared without
// regard to case, a final dot or IDNA form, in the order given to
// NewSigner. A subdomain does not match its parent.
func (s *Signer) KeysFor(fromDomain string) []*Key {
	d := strings.TrimSuffix(strings.TrimSpace(fromDomain), ".")
	if !isASCII(d) {
		a, err := normalizeDomain(d)
		if err != nil {
			return nil
		}
		d = a
	}
	var keys []*Key
	for _, k := range s.keys {
		if strings.EqualFold(k.domain, d) {
			keys = append(keys, k)
		}
	}
	return keys
}

// Sign reads a whole message (header section, blank line, body, with CRLF
// line endings) from r once and returns the DKIM-Signature header fields
// to prepend to it: one per key for fromDomain, each folded and ending in
// CRLF, in the order of KeysFor. It returns "" and reads nothing when no key
// is for fromDomain.
//
// A message that ends within its header section is signed as if it ended
// with the empty line and the CRLF that SMTP's DATA adds.
func (s *Signer) Sign(fromDomain string, r io.Reader) (string, error) {
	keys := s.KeysFor(fromDomain)
	if len(keys) == 0 {
		return "", nil
	}
	br := bufio.NewReaderSize(r, 64<<10)
	header, counts, err := readHeaderSection(br)
	if err != nil {
		return "", err
	}
	headerKeys := overSigned(counts)
	if n := len(strings.Join(headerKeys, ":")); n > maxHValue {
		return "", fmt.Errorf("dkim: too many header fields to sign: h= would be %d octets, more than a header line may hold", n)
	}
	now := s.now()

	signers := make([]*dkim.Signer, 0, len(keys))
	writers := make([]io.Writer, 0, len(keys))
	// Each dkim.Signer runs a goroutine until closed; on any error, close
	// them all. Close is idempotent.
	defer func() {
		for _, ds := range signers {
			ds.Close()
		}
	}()
	for _, k := range keys {
		ds, err := dkim.NewSigner(k.signOptions(headerKeys, now))
		if err != nil {
			return "", fmt.Errorf("dkim: %s._domainkey.%s: %w", k.selector, k.domain, err)
		}
		signers = append(signers, ds)
		writers = append(writers, ds)
	}
	mw := io.MultiWriter(writers...)
	if _, err := mw.Write(header); err != nil {
		return "", fmt.Errorf("dkim: signing: %w", err)
	}
	if _, err := br.WriteTo(mw); err != nil {
		return "", fmt.Errorf("dkim: signing: %w", err)
	}
	var sigs strings.Builder
	for i, ds := range signers {
		if err := ds.Close(); err != nil {
			return "", fmt.Errorf("dkim: signing with %s._domainkey.%s: %w", keys[i].selector, keys[i].domain, err)
		}
		sigs.WriteString(ds.Signature())
	}
	return sigs.String(), nil
}

func (k *Key) signOptions(headerKeys []string, now time.Time) *dkim.SignOptions {
	o := &dkim.SignOptions{
		Domain:                 k.domain,
		Selector:               k.selector,
		Signer:                 k.signer,
		Hash:                   crypto.SHA256,
		HeaderCanonicalization: k.headerCan,
		BodyCanonicalization:   k.bodyCan,
		HeaderKeys:             headerKeys,
	}
	if k.expiration > 0 {
		o.Expiration = now.Add(k.expiration)
	}
	return o
}

// overSigned returns the h= list: each of signedFields once more than
// counts says it occurs.
func overSigned(counts map[string]int) []string {
	var keys []string
	for _, f := range signedFields {
		for range counts[strings.ToLower(f)] + 1 {
			keys = append(keys, f)
		}
	}
	return keys
}

// maxHValue bounds the h= tag value: go-msgauth writes it unfolded on one
// line, " h=...;", which must stay within 998 octets (RFC 5322 §2.1.1).
// Only a message repeating signed fields dozens of times comes near it.
const maxHValue = 990

var errHeaderTooLarge = fmt.Errorf("dkim: header section larger than %d bytes", MaxHeaderBytes)

// readHeaderSection reads the header section and the blank line after it
// from br, returning them as read and how often each of signedFields
// occurs (keyed by lower-case name). It splits fields as go-msgauth does
// when it picks them to hash (a field is a line and the lines after it
// that start with a space or tab; its name is what precedes the first
// colon, trimmed), so the counts match what the signature hashes. If the
// input ends before the blank line, CRLFs are added to complete it.
func readHeaderSection(br *bufio.Reader) ([]byte, map[string]int, error) {
	counts := make(map[string]int, len(signedFields))
	for _, f := range signedFields {
		counts[strings.ToLower(f)] = 0
	}
	var raw []byte
	fieldStart := -1 // where the current field starts in raw; -1 before the first
	endField := func(end int) {
		if fieldStart < 0 {
			return
		}
		name, _, _ := bytes.Cut(raw[fieldStart:end], []byte(":"))
		lname := strings.ToLower(string(bytes.TrimSpace(name)))
		if _, ok := counts[lname]; ok {
			counts[lname]++
		}
	}
	lineStart := 0
	for {
		chunk, err := br.ReadSlice('\n')
		if len(raw)+len(chunk) > MaxHeaderBytes {
			return nil, nil, errHeaderTooLarge
		}
		raw = append(raw, chunk...)
		if errors.Is(err, bufio.ErrBufferFull) {
			continue // a long line: read on
		}
		if err != nil && err != io.EOF {
			return nil, nil, fmt.Errorf("dkim: reading header: %w", err)
		}
		line := raw[lineStart:]
		if err == io.EOF {
			if len(line) > 0 {
				if fieldStart < 0 || (line[0] != ' ' && line[0] != '\t') {
					endField(lineStart)
					fieldStart = lineStart
				}
				if raw[len(raw)-1] != '\r' {
					raw = append(raw, '\r')
				}
				raw = append(raw, '\n')
			}
			endField(len(raw))
			raw = append(raw, '\r', '\n')
			return raw, counts, nil
		}
		if bytes.Equal(line, []byte("\r\n")) || bytes.Equal(line, []byte("\n")) {
			endField(lineStart)
			return raw, counts, nil
		}
		if fieldStart < 0 || (line[0] != ' ' && line[0] != '\t') {
			endField(lineStart)
			fieldStart = lineStart
		}
		lineStart = len(raw)
	}
}

// Keys returns the signer's keys, in configuration order.
func (s *Signer) Keys() []*Key { return s.keys }
