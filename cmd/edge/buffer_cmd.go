package main

import (
	"fmt"
	"os"
)

// cmdBuffer is `edge buffer check|export -path DIR`. Stub: replaced by the
// buffer tooling.
func cmdBuffer(args []string) int {
	fmt.Fprintln(os.Stderr, "edge buffer: not implemented")
	return 1
}
