// Command mailq lists, flushes and administers Postie's queue; see mailq(8).
package main

import (
	"os"

	"github.com/postie-mail/postie/internal/mailqcmd"
)

func main() {
	os.Exit(mailqcmd.Main(os.Args, mailqcmd.IO{In: os.Stdin, Out: os.Stdout, Err: os.Stderr}))
}
