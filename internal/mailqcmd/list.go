package mailqcmd

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/postie-mail/postie/internal/config"
	"github.com/postie-mail/postie/internal/spool"
)

// List prints the queue (mailq, sendmail -bp).
func List(cfg *config.Config, asJSON bool, std IO) int {
	return ListFiltered(cfg, asJSON, nil, std)
}

// ListFiltered prints the messages that f selects (nil: all). It prints
// each message as the spool's Walk reads it, so that listing a large queue
// neither waits for the last file before printing the first nor holds the
// whole queue in memory.
func ListFiltered(cfg *config.Config, asJSON bool, f *Filter, std IO) int {
	sp := spool.New(cfg.SpoolDir)
	if _, err := os.Stat(sp.Dir); errors.Is(err, os.ErrNotExist) {
		if asJSON {
			fmt.Fprintln(std.Out, "[]")
		} else {
			fmt.Fprintln(std.Out, "Mail queue is empty")
		}
		return exOK
	}
	var p printer = newHumanPrinter(std.Out)
	if asJSON {
		p = newJSONPrinter(std.Out)
	}
	now := time.Now()
	err := sp.Walk(func(e spool.Entry) error {
		if !f.selects(e, now) {
			return nil
		}
		return p.add(e)
	})
	if err == nil {
		err = p.end()
	}
	if err != nil {
		fmt.Fprintf(std.Err, "mailq: %v\n", err)
		var werr *writeError
		if !errors.As(err, &werr) && errors.Is(err, os.ErrPermission) {
			return exNoPerm
		}
		return exTempFail
	}
	return exOK
}

// printer prints a listing one entry at a time; end completes it (the
// summary of the human layout, the closing bracket of JSON) and flushes.
type printer interface {
	add(e spool.Entry) error
	end() error
}

// writeError is a failure to write the listing, as opposed to reading
// the queue.
type writeError struct{ err error }

func (e *writeError) Error() string { return "write: " + e.err.Error() }
func (e *writeError) Unwrap() error { return e.err }

// listBufSize is the output buffer of a listing: a few system calls per
// thousand entries.
const listBufSize = 64 << 10

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

// jsonPrinter prints mailq --json one element at a time, byte for byte
// what a json.Encoder with SetIndent("", "  ") prints for the whole
// array (which is what mailq printed when it held the whole queue): each
// element is json.MarshalIndent(entry, "  ", "  ") between the array's
// brackets and commas.
type jsonPrinter struct {
	w *bufio.Writer
	n int
}

func newJSONPrinter(w io.Writer) *jsonPrinter {
	return &jsonPrinter{w: bufio.NewWriterSize(w, listBufSize)}
}

func (p *jsonPrinter) add(e spool.Entry) error {
	b, err := json.MarshalIndent(toJSON(e, false), "  ", "  ")
	if err != nil {
		return fmt.Errorf("encode %s: %w", e.Env.ID, err)
	}
	sep := ",\n  "
	if p.n == 0 {
		sep = "[\n  "
	}
	p.n++
	p.w.WriteString(sep)
	if _, err := p.w.Write(b); err != nil {
		return &writeError{err}
	}
	return nil
}

func (p *jsonPrinter) end() error {
	s := "\n]\n"
	if p.n == 0 {
		s = "[]\n"
	}
	p.w.WriteString(s)
	if err := p.w.Flush(); err != nil {
		return &writeError{err}
	}
	return nil
}

// humanPrinter prints the queue in the layout of Postfix's mailq, so that
// administrators' habits and scripts that grep it carry over:
//
//	-Queue ID-------- --Size-- ----Arrival Time----  -Sender/Recipient-------
//	0F3K2M7Q9A1BXYZW*     4321 Mon Nov 23 17:51:00  cron@web1.example.com
//	                                                admin@example.com
//
// A "*" after the ID marks a message being delivered, "!" a held one,
// "?" one whose delivery is uncertain; a deferred message shows its last
// error in parentheses.
type humanPrinter struct {
	w     *bufio.Writer
	n     int
	total int64
}

func newHumanPrinter(w io.Writer) *humanPrinter {
	return &humanPrinter{w: bufio.NewWriterSize(w, listBufSize)}
}

func (p *humanPrinter) add(e spool.Entry) error {
	w := p.w
	if p.n == 0 {
		fmt.Fprintf(w, "%-17s %8s %-20s  %s\n", "-Queue ID--------", "--Size--", "----Arrival Time----", "-Sender/Recipient-------")
	}
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
	// bufio.Writer keeps its first error: this write reports any.
	if _, err := w.WriteString("\n"); err != nil {
		return &writeError{err}
	}
	p.n++
	p.total += e.Env.Size
	return nil
}

func (p *humanPrinter) end() error {
	if p.n == 0 {
		p.w.WriteString("Mail queue is empty\n")
	} else {
		req := "Requests"
		if p.n == 1 {
			req = "Request"
		}
		fmt.Fprintf(p.w, "-- %d Kbytes in %d %s.\n", (p.total+1023)/1024, p.n, req)
	}
	if err := p.w.Flush(); err != nil {
		return &writeError{err}
	}
	return nil
}

func clip(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > n {
		return s[:n-3] + "..."
	}
	return s
}
