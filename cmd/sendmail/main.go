// Command sendmail queues a message from stdin for delivery through the
// smarthost; see sendmail(8). Installed also as newaliases, and it acts as
// mailq when invoked by that name.
package main

import (
	"os"

	"github.com/postie-mail/postie/internal/sendmailcmd"
)

func main() {
	os.Exit(sendmailcmd.Main(os.Args, sendmailcmd.IO{In: os.Stdin, Out: os.Stdout, Err: os.Stderr}))
}
