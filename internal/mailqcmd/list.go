package mailqcmd

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/postie-mail/postie/internal/spool"
)

// jsonEntry is one element of mailq --json. The field names are a
// contract (../shared/README.md): scripts depend on them.
type jsonEntry struct {
	ID          string    `json:"id"`
	Size        int64     `json:"size"`
	Arrival     string    `json:"arrival"`
	Sender      string    `json:"sender"`
	Recipients  []string  `json:"recipients"`
	Attempts    int       `json:"attempts"`
	NextAttempt *string   `json:"next_attempt"`
	LastError   *string   `json:"last_error"`
	State       string    `json:"state"`
	HeldReason  string    `json:"held_reason,omitempty"`
	MessageID   string    `json:"message_id,omitempty"`
	UID         int       `json:"uid"`
	User        string    `json:"user,omitempty"`
	Cwd         string    `json:"cwd,omitempty"`
	Exe         string    `json:"exe,omitempty"`
	Delivered   []string  `json:"delivered,omitempty"`
	History     []jsonTry `json:"history,omitempty"`
}

type jsonTry struct {
	Time   string `json:"time"`
	Status string `json:"status"`
	Relay  string `json:"relay,omitempty"`
	Reply  string `json:"reply,omitempty"`
}

func toJSON(e spool.Entry, history bool) jsonEntry {
	j := jsonEntry{
		ID:         e.Env.ID,
		Size:       e.Env.Size,
		Arrival:    e.Env.Arrival.Format(time.RFC3339),
		Sender:     e.Env.Sender,
		Recipients: e.State.Pending(e.Env),
		Attempts:   e.State.Attempts,
		State:      e.Status,
		HeldReason: e.State.Held,
		MessageID:  e.Env.MessageID,
		UID:        e.Env.UID,
		User:       e.Env.User,
		Cwd:        e.Env.Cwd,
		Exe:        e.Env.Exe,
		Delivered:  e.State.Done,
	}
	if j.Recipients == nil {
		j.Recipients = []string{}
	}
	if !e.State.NextAttempt.IsZero() && e.State.Attempts > 0 {
		s := e.State.NextAttempt.Format(time.RFC3339)
		j.NextAttempt = &s
	}
	if e.State.LastError != "" {
		s := e.State.LastError
		j.LastError = &s
	}
	if history {
		for _, a := range e.State.History {
			j.History = append(j.History, jsonTry{Time: a.Time.Format(time.RFC3339), Status: a.Status, Relay: a.Relay, Reply: a.Reply})
		}
	}
	return j
}

func writeJSON(w io.Writer, entries []spool.Entry) error {
	out := make([]jsonEntry, len(entries))
	for i, e := range entries {
		out[i] = toJSON(e, false)
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

// writeHuman prints the queue in the layout of Postfix's mailq, so that
// administrators' habits and scripts that grep it carry over:
//
//	-Queue ID-------- --Size-- ----Arrival Time---- -Sender/Recipient-------
//	0F3K2M7Q9A1BXYZW*     4321 Mon Nov 23 17:51:00  cron@web1.example.com
//	                                                admin@example.com
//
// A "*" after the ID marks a message being delivered, "!" a held one,
// "?" one whose delivery is uncertain; a deferred message shows its last
// error in parentheses.
func writeHuman(w io.Writer, entries []spool.Entry) {
	if len(entries) == 0 {
		fmt.Fprintln(w, "Mail queue is empty")
		return
	}
	fmt.Fprintf(w, "%-17s %8s %-20s  %s\n", "-Queue ID--------", "--Size--", "----Arrival Time----", "-Sender/Recipient-------")
	var total int64
	for _, e := range entries {
		mark := " "
		switch e.Status {
		case "sending":
			mark = "*"
		case "held":
			mark = "!"
		case "uncertain":
			mark = "?"
		}
		sender := e.Env.Sender
		if sender == "" {
			sender = "MAILER-DAEMON"
		}
		fmt.Fprintf(w, "%s%s %8d %-20s  %s\n", e.Env.ID, mark, e.Env.Size, e.Env.Arrival.Local().Format("Mon Jan _2 15:04:05"), sender)
		switch {
		case e.Status == "held":
			fmt.Fprintf(w, "%48s(held: %s)\n", "", e.State.Held)
		case e.Status == "uncertain":
			fmt.Fprintf(w, "%48s(delivery uncertain, message-id %s: %s)\n", "", e.Env.MessageID, clip(e.State.LastError, 200))
		case e.State.LastError != "":
			fmt.Fprintf(w, "%48s(%s)\n", "", clip(e.State.LastError, 200))
		}
		for _, r := range e.State.Pending(e.Env) {
			fmt.Fprintf(w, "%48s%s\n", "", r)
		}
		fmt.Fprintln(w)
		total += e.Env.Size
	}
	n := len(entries)
	req := "Requests"
	if n == 1 {
		req = "Request"
	}
	fmt.Fprintf(w, "-- %d Kbytes in %d %s.\n", (total+1023)/1024, n, req)
}

func clip(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > n {
		return s[:n-3] + "..."
	}
	return s
}
