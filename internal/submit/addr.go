package submit

import (
	"errors"
	"strings"

	"golang.org/x/net/idna"
)

// errLocalPartUTF8 means an address cannot be written in ASCII: its local
// part is not ASCII, and only SMTPUTF8 (RFC 6531) can carry it.
var errLocalPartUTF8 = errors.New("the local part is not ASCII and the server lacks SMTPUTF8")

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// splitAddress splits at the last "@", since a quoted local part may
// contain "@". An address without "@" (a bare local name) has no domain.
func splitAddress(addr string) (local, domain string) {
	i := strings.LastIndexByte(addr, '@')
	if i < 0 {
		return addr, ""
	}
	return addr[:i], addr[i+1:]
}

// asciiAddress rewrites addr for a server without SMTPUTF8: the domain is
// converted to A-labels (IDNA, RFC 5891; "bücher.example" becomes
// "xn--bcher-kva.example"), which is the same domain to the DNS. A non-ASCII
// local part has no ASCII form: that is errLocalPartUTF8.
func asciiAddress(addr string) (string, error) {
	if isASCII(addr) {
		return addr, nil
	}
	local, domain := splitAddress(addr)
	if !isASCII(local) {
		return "", errLocalPartUTF8
	}
	if strings.HasPrefix(domain, "[") {
		// An address literal is ASCII or invalid.
		return "", errors.New("the address literal is not ASCII")
	}
	a, err := idna.Lookup.ToASCII(domain)
	if err != nil {
		return "", errors.New("the domain is not a valid internationalized domain name")
	}
	return local + "@" + a, nil
}

// checkAddress rejects what cannot be put on a MAIL or RCPT line at all.
func checkAddress(addr string) error {
	if strings.ContainsAny(addr, "\r\n\x00<>") {
		return errors.New("the address contains a line break, NUL or angle bracket")
	}
	return nil
}
