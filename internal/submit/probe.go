package submit

import (
	"context"
	"crypto/tls"
)

// TLSState returns the TLS connection state, for diagnostics (mailq
// --check prints the certificate).
func (s *Session) TLSState() (tls.ConnectionState, bool) {
	return s.c.TLSConnectionState()
}

// AuthMechanism returns the SASL mechanism the session authenticated
// with, or "" when it did not authenticate.
func (s *Session) AuthMechanism() string { return s.mech }

// Probe asks the server whether it would take mail from from to rcpt,
// without sending any: MAIL FROM, RCPT TO, then RSET. A rejection is
// returned as an *Error with the server's reply.
func (s *Session) Probe(ctx context.Context, from, rcpt string) error {
	if !s.Usable() {
		return &Error{Step: StepConnect, Text: "session is no longer usable"}
	}
	if err := checkAddress(from); err != nil {
		return &Error{Step: StepMail, Permanent: true, Err: err}
	}
	if err := checkAddress(rcpt); err != nil {
		return &Error{Step: StepRcpt, Permanent: true, Err: err}
	}
	stop := context.AfterFunc(ctx, s.kill)
	defer stop()
	if err := s.c.Mail(from, nil); err != nil {
		return s.cmdError(StepMail, err)
	}
	if err := s.c.Rcpt(rcpt, nil); err != nil {
		e := s.cmdError(StepRcpt, err)
		if r := s.reset(); r != nil {
			return r
		}
		return e
	}
	if r := s.reset(); r != nil {
		return r
	}
	return nil
}
