package enqueue

import (
	"fmt"
	"strings"
	"time"

	"github.com/emersion/go-message/textproto"

	"github.com/postie-mail/postie/internal/address"
)

// addressFields hold addresses that are qualified ("root" becomes
// "root@hostname") and rewritten for local senders, as Postfix does for
// local submissions.
var addressFields = []string{"From", "Sender", "Reply-To", "To", "Cc", "Resent-From", "Resent-Sender", "Resent-To", "Resent-Cc"}

// fixHeader adds the fields a message must have, qualifies local names,
// applies rewriting, and folds overlong fields. It returns the
// Message-ID.
func fixHeader(env *Env, req *Request, h *textproto.Header, sender, id string, now time.Time) string {
	for _, k := range addressFields {
		fixAddressField(env, h, k)
	}
	if !h.Has("From") {
		name := req.FullName
		if name == "" {
			name = env.Caller.FullName
		}
		from := sender
		if from == "" {
			// The null sender cannot be a From; use the caller.
			from = env.Resolver.Qualify(env.Caller.User)
		}
		h.Add("From", address.Address{Name: name, Addr: from}.String())
	}
	if env.ForceFrom != "" {
		forceFrom(env, h)
	}
	msgID := h.Get("Message-Id")
	if msgID == "" {
		msgID = fmt.Sprintf("<%s@%s>", id, env.Hostname)
		h.AddRaw([]byte("Message-ID: " + msgID + "\r\n"))
	}
	if !h.Has("Date") {
		h.AddRaw([]byte("Date: " + now.Format(time.RFC1123Z) + "\r\n"))
	}
	foldLong(h)
	// Trace: who submitted it, from the kernel's word (real uid), so a
	// compromised site on a shared host can be found.
	user := env.Caller.User
	if user == "" {
		user = "unknown"
	}
	h.AddRaw([]byte(fmt.Sprintf("Received: by %s (Postie, from userid %d %s)\r\n\tid %s; %s\r\n",
		env.Hostname, env.Caller.UID, user, id, now.Format(time.RFC1123Z))))
	return msgID
}

// fixAddressField qualifies bare local names in field k and applies
// [rewrite] local. A field that does not parse is left as it is: a
// malformed From is no reason to lose the mail.
func fixAddressField(env *Env, h *textproto.Header, k string) {
	vals := h.Values(k)
	if len(vals) == 0 {
		return
	}
	changed := false
	var rewritten []string
	newVals := make([]string, len(vals))
	for i, v := range vals {
		l, err := address.ParseList(v)
		if err != nil || len(l) == 0 {
			newVals[i] = v
			continue
		}
		touched := false
		for j, a := range l {
			if to, ok := lookupRewrite(env, a.Addr); ok && (k == "From" || k == "To" || k == "Cc" || k == "Sender") {
				rewritten = append(rewritten, a.String())
				l[j].Addr = to
				touched = true
			} else if a.Local() {
				l[j].Addr = env.Resolver.Qualify(a.Addr)
				touched = true
			}
		}
		if !touched {
			newVals[i] = v
			continue
		}
		changed = true
		parts := make([]string, len(l))
		for j, a := range l {
			parts[j] = a.String()
		}
		newVals[i] = strings.Join(parts, ", ")
	}
	if !changed {
		return
	}
	h.Del(k)
	for i := len(newVals) - 1; i >= 0; i-- {
		h.Add(k, newVals[i])
	}
	if len(rewritten) > 0 {
		orig := "X-Original-To"
		if k == "From" || k == "Sender" {
			orig = "X-Original-From"
		}
		h.Add(orig, strings.Join(rewritten, ", "))
	}
}

// forceFrom replaces From with the forced address, keeping the display
// name, and keeps the author reachable in Reply-To.
func forceFrom(env *Env, h *textproto.Header) {
	orig := h.Get("From")
	l, err := address.ParseList(orig)
	name := ""
	if err == nil && len(l) == 1 {
		if strings.EqualFold(l[0].Addr, env.ForceFrom) {
			return
		}
		name = l[0].Name
	}
	if !h.Has("Reply-To") && err == nil && len(l) > 0 {
		h.Add("Reply-To", orig)
	}
	h.Add("X-Original-From", orig)
	h.Set("From", address.Address{Name: name, Addr: env.ForceFrom}.String())
}

// foldLong refolds fields longer than RFC 5322's 998-octet line limit
// (PHP applications put hundreds of recipients on one To: line). Setting
// the value again makes go-message fold it at white space.
func foldLong(h *textproto.Header) {
	type kv struct{ k, v string }
	var long []kv
	for f := h.Fields(); f.Next(); {
		raw, err := f.Raw()
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(raw), "\n") {
			if len(strings.TrimRight(line, "\r")) > 998 {
				long = append(long, kv{f.Key(), f.Value()})
				break
			}
		}
	}
	for _, f := range long {
		vals := h.Values(f.k)
		h.Del(f.k)
		for i := len(vals) - 1; i >= 0; i-- {
			h.Add(f.k, vals[i])
		}
	}
}
