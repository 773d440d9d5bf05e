// Package conform makes a spooled message conformant to SMTP and RFC 5322
// at delivery time, without changing what its reader sees, and without
// holding the message in memory.
//
// Postie queues what Unix programs hand it, byte for byte, except that a
// bare LF was turned into CRLF at enqueue. Such a message can still hold
// bare CRs (progress bars in cron output), NUL bytes, and lines longer than
// the 998 octets RFC 5322 section 2.1.1 allows (and smarthosts enforce).
// The runner streams the spool file through [Copy] into the SMTP DATA writer,
// and once more into the DKIM signer, so Copy is a deterministic function of
// its input: the same message gives the same bytes every time.
//
// # Facts
//
// [Facts] say what a message needs. They are recorded at enqueue time with
// a [Scanner] (an io.Writer that can sit beside the spool file in an
// io.MultiWriter) or found later by [Scan]. When Facts say nothing is needed,
// Copy is a plain io.Copy (plus a final CRLF if the message lacks one).
// Facts must not under-report: a long line Facts do not mention is sent as
// it is. Over-reporting costs time, and otherwise changes the output in two
// ways only, because every transformation below is driven by the content:
// the charset Copy declares for a non-MIME message comes from
// Facts.EightBit and Facts.UTF8, and with Facts.LongLines set, a leaf larger
// than the read-ahead (see below) is re-encoded even if it has no long line.
//
// # Line endings, bare CR and NUL
//
// Every line Copy writes ends with CRLF, and the output ends with CRLF even
// if the message did not (an empty message stays empty). A bare LF becomes
// CRLF, as it does at enqueue.
//
// A bare CR (one not followed by LF) becomes CRLF in the body, and a space in
// the top-level header section:
//   - Passing it through, as Postfix does, gets the message refused: since
//     the 2023 SMTP smuggling fixes, smarthosts reject or strip bare CR and
//     bare LF in DATA, and RFC 5322 section 2.3 forbids them.
//   - In the body, the reader sees a CR as the start of a new line: in a
//     terminal it returns the carriage, and mail readers show it as a line
//     break. CRLF keeps every segment of a progress bar readable ("10%",
//     "20%", ...) where dropping the CR would glue them ("10%20%").
//     Encoding it as =0D in quoted-printable is no better: RFC 2046 section
//     4.1.1 forbids CR outside CRLF in text, and the reader would get it back.
//     Once it is a real line break, the DATA writer dot-stuffs a line that
//     the CR used to hide, so "\r.\r\n" can no longer smuggle an end of data.
//   - In the top-level header, a CRLF would end the field early, and the
//     rest would be read as a new field (header injection) or as the start of
//     the body. A space keeps the field whole; after unfolding, a reader sees
//     what it saw when it treated the CR as white space.
//
// The header/body distinction applies to the top-level header only: the
// header of a MIME part lies in the body of the message, and a bare CR there
// becomes CRLF like any other.
//
// NUL bytes are removed wherever they occur: RFC 5322 section 3.5 and
// RFC 2045 sections 2.7 and 2.8 exclude them from message text, RFC 5321
// section 4.1.1.4 says control characters SHOULD be avoided in DATA, and
// readers written in C stop at them. This loses data only in a "binary"
// part, which SMTP cannot carry without BINARYMIME, which Postie does not
// use.
//
// # Long lines
//
// Copy re-encodes a part whose body has a line longer than 998 octets,
// which changes its transport encoding but not its content, so the reader
// decodes the same text:
//   - A text/* or message/* leaf (other than message/rfc822, message/global,
//     message/partial and message/external-body) with 7bit, 8bit or binary
//     transfer encoding, or none, is re-encoded as quoted-printable
//     (mime/quotedprintable, 76 columns). A leaf with any other media type is
//     re-encoded as base64 (76 columns): quoted-printable line breaks are
//     decoded to the local newline by some readers, which would corrupt
//     binary data.
//   - Only the Content-Transfer-Encoding field changes: the first one is
//     replaced where it stands, any others are removed, and if there was
//     none, one is added at the end of the header. Every other field keeps
//     its bytes and its place.
//   - A message (top-level, or the body of a message/rfc822 part) that is
//     re-encoded and lacks MIME-Version gets "MIME-Version: 1.0"; one that
//     also lacks Content-Type gets "Content-Type: text/plain; charset=C",
//     where C is us-ascii if the message is 7-bit, utf-8 if it is 8-bit and
//     valid UTF-8, and unknown-8bit (RFC 1428) otherwise: it declares that
//     the octets are 8-bit text in a charset nobody recorded, which is what
//     a reader assumed before, and readers fall back to their own guess
//     (sendmail labels unlabeled 8-bit text the same way). Guessing
//     ISO-8859-1 instead would show UTF-8 that is merely truncated, or any
//     other charset, as mojibake.
//     Facts describe the whole message, so an 8-bit header makes the
//     charset of a 7-bit body utf-8 or unknown-8bit; both read 7-bit text
//     correctly. A MIME part without Content-Type keeps the default of
//     RFC 2046 (text/plain; charset=us-ascii) and gets no new fields.
//   - Multipart entities are walked recursively (to a depth of 32): the
//     boundaries, the preamble and the epilogue are kept byte for byte, and
//     only the parts that need it change. A message/rfc822 or message/global
//     part is walked as a message. Parts of multipart/digest default to
//     message/rfc822.
//   - A part already in base64 or quoted-printable is left alone. If it
//     still has a line over 998 octets (which its encoding forbids), the
//     line is re-wrapped losslessly: base64 decoders ignore line breaks, and
//     a quoted-printable line gets soft line breaks, never inside an =XX
//     escape.
//   - Copy decides whether a leaf needs re-encoding by reading ahead up to
//     1 MiB of its body. A leaf whose body is longer than that is re-encoded
//     if the message has long lines at all (Facts.LongLines), because its
//     header has to be written before the rest of the body is seen.
//   - A quoted-printable line that the encoder makes could, in theory,
//     match an enclosing boundary; its leading "-" is then written as =2D.
//
// Header lines over 998 octets were folded at enqueue. Copy folds any that
// remain (in MIME part headers, say) at white space, which unfolding undoes,
// if that makes every line 998 octets or shorter. A header line folding
// cannot fix (no white space where it is needed) is left as it is, since
// breaking it would change the field's value; it is the only kind of line
// over 998 octets Copy writes.
//
// What cannot be re-encoded is split the way Postfix's smtp_line_length_limit
// splits it: CRLF and a space are inserted after 998 octets, which keeps
// every octet (adding a space at each break) and makes a long header line a
// folded one. This applies to the preamble and epilogue of a multipart
// (which readers do not show), a part with an unknown transfer encoding
// (RFC 2045 section 6.4 makes it opaque data), a multipart without a
// boundary, message/partial and message/external-body (which must be 7-bit
// as they are), and, header and body alike, an entity nested deeper than
// 32 or whose header cannot be parsed or is larger than 1 MiB. A multipart
// in base64 or quoted-printable (which RFC 2045 forbids, but happens) is
// treated like any base64 or quoted-printable part.
//
// A multipart message without MIME-Version is treated as MIME, as mail
// readers do, and MIME-Version is not added to it. Boundaries are found as
// RFC 2046 section 5.1.1 defines them: "--" boundary, an optional "--",
// optional white space, at the start of a line.
//
// # Memory
//
// Copy holds at most one line chunk (64 KiB), one header section (1 MiB),
// and one read-ahead (1 MiB) at a time, whatever the size of the message.
package conform
