// Throwaway experiment: the enqueue path of sendmail -t -i without the
// delivery packages linked in. Not part of the repository.
package main

import (
	"fmt"
	"os"
	"time"

	"github.com/postie-mail/postie/internal/address"
	"github.com/postie-mail/postie/internal/cmdline"
	"github.com/postie-mail/postie/internal/config"
	"github.com/postie-mail/postie/internal/enqueue"
	"github.com/postie-mail/postie/internal/ratelimit"
	"github.com/postie-mail/postie/internal/spool"
	"github.com/postie-mail/postie/internal/sysuser"
)

func main() {
	args, err := cmdline.Parse(os.Args)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(64)
	}
	cfg, err := config.Load(args.Config, true)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(78)
	}
	al, _ := address.NewAliases(cfg.Aliases)
	sp := spool.New(cfg.SpoolDir)
	if sp.Ready() != nil {
		sp.Init()
	}
	c := sysuser.Current()
	env := &enqueue.Env{Hostname: cfg.Hostname, Resolver: &address.Resolver{Aliases: al, Hostname: cfg.Hostname}, Spool: sp,
		MaxSize: cfg.MaxMessageSize, Caller: enqueue.Caller{UID: c.UID, User: c.User, FullName: c.FullName, Cwd: c.Cwd, Exe: c.Exe}, Now: time.Now}
	if os.Getenv("EXP_LIMITS") != "" {
		env.Admit = func(n int) (string, error) {
			ratelimit.Check(cfg.SpoolDir, c.UID, n, ratelimit.Limits{}, time.Now())
			return "", nil
		}
	}
	_, err = enqueue.Enqueue(env, &enqueue.Request{Sender: args.Sender, Recipients: args.Recipients, FromHeader: args.ExtractRecipients, DotEnds: !args.IgnoreDots}, os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(75)
	}
}
