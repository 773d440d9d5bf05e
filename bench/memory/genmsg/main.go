// Command genmsg writes a test message of about -size octets to standard
// output for the memory benchmark (bench/memory/run.sh); see package
// msggen for what it looks like.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/postie-mail/postie/bench/memory/msggen"
)

func main() {
	size := flag.Int("size", 60<<20, "approximate size in octets")
	from := flag.String("from", "Reports <reports@example.com>", "From field")
	to := flag.String("to", "someone@example.net", "To field")
	flag.Parse()
	if err := msggen.Write(os.Stdout, *size, *from, *to); err != nil {
		fmt.Fprintf(os.Stderr, "genmsg: %v\n", err)
		os.Exit(1)
	}
}
