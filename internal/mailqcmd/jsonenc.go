package mailqcmd

import (
	"strconv"
	"unicode/utf8"
)

// appendEntryJSON appends j as json.MarshalIndent(j, "  ", "  ") would:
// the element of an array printed by a json.Encoder with
// SetIndent("", "  "). It exists because encoding/json's reflection and
// second pass to indent were a third of mailq --json over a large queue;
// TestEntryJSON holds it to encoding/json's bytes, including for a field
// added to jsonEntry and not here.
func appendEntryJSON(b []byte, j *jsonEntry) []byte {
	const field = ",\n    \""
	b = append(b, "{\n    \"id\": "...)
	b = appendJSONString(b, j.ID)
	b = append(b, field+`size": `...)
	b = strconv.AppendInt(b, j.Size, 10)
	b = append(b, field+`arrival": `...)
	b = appendJSONString(b, j.Arrival)
	b = append(b, field+`sender": `...)
	b = appendJSONString(b, j.Sender)
	b = append(b, field+`recipients": `...)
	b = appendJSONStrings(b, j.Recipients)
	b = append(b, field+`attempts": `...)
	b = strconv.AppendInt(b, int64(j.Attempts), 10)
	b = append(b, field+`next_attempt": `...)
	b = appendJSONOptional(b, j.NextAttempt)
	b = append(b, field+`last_error": `...)
	b = appendJSONOptional(b, j.LastError)
	b = append(b, field+`state": `...)
	b = appendJSONString(b, j.State)
	for _, f := range [...]struct{ key, val string }{{"held_reason", j.HeldReason}, {"message_id", j.MessageID}} {
		if f.val != "" {
			b = append(b, field...)
			b = append(b, f.key...)
			b = append(b, `": `...)
			b = appendJSONString(b, f.val)
		}
	}
	b = append(b, field+`uid": `...)
	b = strconv.AppendInt(b, int64(j.UID), 10)
	for _, f := range [...]struct{ key, val string }{{"user", j.User}, {"cwd", j.Cwd}, {"exe", j.Exe}} {
		if f.val != "" {
			b = append(b, field...)
			b = append(b, f.key...)
			b = append(b, `": `...)
			b = appendJSONString(b, f.val)
		}
	}
	if len(j.Delivered) > 0 {
		b = append(b, field+`delivered": `...)
		b = appendJSONStrings(b, j.Delivered)
	}
	if len(j.History) > 0 {
		b = append(b, field+`history": [`...)
		for i, t := range j.History {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, "\n      {\n        \"time\": "...)
			b = appendJSONString(b, t.Time)
			b = append(b, ",\n        \"status\": "...)
			b = appendJSONString(b, t.Status)
			if t.Relay != "" {
				b = append(b, ",\n        \"relay\": "...)
				b = appendJSONString(b, t.Relay)
			}
			if t.Reply != "" {
				b = append(b, ",\n        \"reply\": "...)
				b = appendJSONString(b, t.Reply)
			}
			b = append(b, "\n      }"...)
		}
		b = append(b, "\n    ]"...)
	}
	return append(b, "\n  }"...)
}

// appendJSONStrings appends a field's array of strings (null when nil).
func appendJSONStrings(b []byte, ss []string) []byte {
	switch {
	case ss == nil:
		return append(b, "null"...)
	case len(ss) == 0:
		return append(b, "[]"...)
	}
	b = append(b, '[')
	for i, s := range ss {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, "\n      "...)
		b = appendJSONString(b, s)
	}
	return append(b, "\n    ]"...)
}

func appendJSONOptional(b []byte, s *string) []byte {
	if s == nil {
		return append(b, "null"...)
	}
	return appendJSONString(b, *s)
}

// appendJSONString appends s quoted as encoding/json quotes it: "<", ">"
// and "&" escaped (HTML-safe, the default), control characters as \n, \t
// and so on or \u00XX, invalid UTF-8 as \ufffd, and U+2028 and U+2029
// escaped.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '\\', '"':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xf])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
