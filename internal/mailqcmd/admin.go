package mailqcmd

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/postie-mail/postie/internal/config"
	"github.com/postie-mail/postie/internal/runner"
	"github.com/postie-mail/postie/internal/spool"
)

// deleteMessages removes messages. On a terminal it asks first, unless -y;
// off a terminal (scripts) it does not ask.
func deleteMessages(sp *spool.Spool, ids []string, yes bool, std IO) int {
	if !yes {
		if f, ok := std.In.(*os.File); ok && isTerminal(f) {
			fmt.Fprintf(std.Err, "Delete %d message(s) (%s)? [y/N] ", len(ids), strings.Join(ids, " "))
			line, _ := bufio.NewReader(std.In).ReadString('\n')
			if a := strings.ToLower(strings.TrimSpace(line)); a != "y" && a != "yes" {
				fmt.Fprintln(std.Err, "mailq: nothing deleted")
				return exOK
			}
		}
	}
	code := exOK
	for _, id := range ids {
		l, err := sp.Lock(id)
		if err != nil {
			fmt.Fprintf(std.Err, "mailq: %s: %v\n", id, describe(err))
			code = exTempFail
			continue
		}
		if err := l.Remove(); err != nil {
			fmt.Fprintf(std.Err, "mailq: %s: %v\n", id, err)
			code = exTempFail
			continue
		}
		fmt.Fprintf(std.Out, "%s: deleted\n", id)
	}
	if err := sp.SyncQueue(); err != nil {
		fmt.Fprintf(std.Err, "mailq: %v\n", err)
		return exTempFail
	}
	return code
}

func describe(err error) error {
	switch {
	case errors.Is(err, spool.ErrLocked):
		return errors.New("being delivered right now; try again in a moment")
	case errors.Is(err, os.ErrNotExist):
		return errors.New("no such message in the queue (delivered, deleted, or not yet picked up: run mailq -q)")
	}
	return err
}

// adminMessages holds, releases, or settles uncertain messages, each under
// the message's lock so that it cannot race a delivery.
func adminMessages(sp *spool.Spool, ids []string, hold, release, delivered bool, std IO) int {
	code := exOK
	for _, id := range ids {
		if delivered {
			l, err := sp.Lock(id)
			if err != nil {
				fmt.Fprintf(std.Err, "mailq: %s: %v\n", id, describe(err))
				code = exTempFail
				continue
			}
			if !l.State.Uncertain && !l.Sending() {
				l.Close()
				fmt.Fprintf(std.Err, "mailq: %s: not uncertain; use -d to delete it\n", id)
				code = exUsage
				continue
			}
			// The recipients the server had accepted are settled as
			// delivered; others of the same attempt (refused ones were
			// bounced, deferred ones are owed) stay.
			uncertain := map[string]bool{}
			for _, rc := range l.State.UncertainRcpts {
				uncertain[rc] = true
			}
			var owed []string
			for _, rc := range l.State.Pending(l.Env) {
				if len(uncertain) > 0 && !uncertain[rc] {
					owed = append(owed, rc)
				}
			}
			if len(owed) == 0 {
				if err := l.Remove(); err != nil {
					fmt.Fprintf(std.Err, "mailq: %s: %v\n", id, err)
					code = exTempFail
					continue
				}
				fmt.Fprintf(std.Out, "%s: marked delivered and removed\n", id)
				continue
			}
			st := &l.State
			st.Done = append(st.Done, st.UncertainRcpts...)
			st.Remaining, st.UncertainRcpts = owed, nil
			st.Held, st.Uncertain, st.NextAttempt = "", false, time.Time{}
			st.AddAttempt(spool.Attempt{Time: time.Now(), Status: "marked delivered"})
			l.ClearSending()
			err = l.SaveState()
			l.Close()
			if err != nil {
				fmt.Fprintf(std.Err, "mailq: %s: %v\n", id, err)
				code = exTempFail
				continue
			}
			fmt.Fprintf(std.Out, "%s: marked delivered; %d recipient(s) still owed\n", id, len(owed))
			continue
		}
		l, err := sp.Lock(id)
		if err != nil {
			fmt.Fprintf(std.Err, "mailq: %s: %v\n", id, describe(err))
			code = exTempFail
			continue
		}
		if hold {
			l.State.Held = "by administrator"
		} else {
			// Release, or retry an uncertain message: due now.
			l.State.Held = ""
			l.State.Uncertain = false
			l.State.NextAttempt = time.Time{}
			l.ClearSending()
		}
		err = l.SaveState()
		l.Close()
		if err != nil {
			fmt.Fprintf(std.Err, "mailq: %s: %v\n", id, err)
			code = exTempFail
			continue
		}
		if hold {
			fmt.Fprintf(std.Out, "%s: held\n", id)
		} else {
			fmt.Fprintf(std.Out, "%s: released\n", id)
		}
	}
	return code
}

// showMessages prints a message's envelope, delivery state and header.
func showMessages(sp *spool.Spool, ids []string, std IO) int {
	code := exOK
	for _, id := range ids {
		e, err := sp.Entry(id)
		if err != nil {
			fmt.Fprintf(std.Err, "mailq: %s: %v\n", id, describe(err))
			code = exNoInput
			continue
		}
		b, _ := json.MarshalIndent(toJSON(e, true), "", "  ")
		fmt.Fprintf(std.Out, "%s\n", b)
		q, err := spool.OpenFile(sp.QueuePath(id))
		if err != nil {
			continue
		}
		fmt.Fprintln(std.Out, "--- header ---")
		br := bufio.NewReader(q.Message())
		for {
			line, err := br.ReadBytes('\n')
			line = bytes.TrimRight(line, "\r\n")
			if len(line) == 0 || err != nil {
				break
			}
			fmt.Fprintf(std.Out, "%s\n", line)
		}
		q.Close()
	}
	return code
}

// printDKIM prints the DNS TXT record for each configured key.
func printDKIM(cfg *config.Config, std IO) int {
	if len(cfg.DKIM.Keys()) == 0 {
		fmt.Fprintln(std.Err, "mailq: no DKIM key configured ([dkim] in the config file)")
		return exConfig
	}
	signer, err := runner.LoadSigner(cfg)
	if err != nil {
		fmt.Fprintf(std.Err, "mailq: %v\n", err)
		return exConfig
	}
	for _, k := range signer.Keys() {
		fmt.Fprintln(std.Out, k.TXTRecord())
	}
	return exOK
}
