package dkimsign

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/emersion/go-message"
	// Display names in other charsets (=?koi8-r?...?=) must not make the
	// From field unparsable.
	_ "github.com/emersion/go-message/charset"
	"github.com/emersion/go-message/mail"
	"github.com/emersion/go-message/textproto"
)

// FromDomain returns the domain of the first address in the From field of
// h, lower-cased, for choosing keys with Signer.KeysFor.
func FromDomain(h mail.Header) (string, error) {
	addrs, err := h.AddressList("From")
	if err != nil {
		return "", fmt.Errorf("dkim: From field: %w", err)
	}
	if len(addrs) == 0 {
		return "", errors.New("dkim: message has no From address")
	}
	a := addrs[0].Address
	i := strings.LastIndexByte(a, '@')
	if i < 0 || i == len(a)-1 {
		return "", fmt.Errorf("dkim: From address %q has no domain", a)
	}
	return strings.ToLower(a[i+1:]), nil
}

// ReadFromDomain reads the header section of a message from r (no more
// than MaxHeaderBytes, and not the body) and returns FromDomain of it. A
// malformed field after the From field does not matter.
func ReadFromDomain(r io.Reader) (string, error) {
	h, rerr := textproto.ReadHeader(bufio.NewReader(io.LimitReader(r, MaxHeaderBytes)))
	d, err := FromDomain(mail.Header{Header: message.Header{Header: h}})
	if err != nil && rerr != nil {
		return "", fmt.Errorf("dkim: reading header: %w", rerr)
	}
	return d, err
}
