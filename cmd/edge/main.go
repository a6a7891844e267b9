// Command edge is the flowedge reliability edge: it accepts client writes
// once they are on disk, routes them by partition key to the backend that
// owns the key and delivers them with retries.
//
//	edge run -config F               serve (public and admin listeners)
//	edge validate -config F          check a configuration (exit 78 on problems)
//	edge route -config F KEY...      print the partition and backend of keys
//	edge buffer check|export -path DIR   inspect the durable queue offline
//	edge dlq list|replay|discard     dead letters of a running edge
//	edge top [-admin URL]            live terminal view of a running edge
//	edge version
//
// Exit codes: 0 success, 1 runtime failure, 2 usage error, 78 (EX_CONFIG)
// invalid or unreadable configuration.
package main

import (
	"fmt"
	"io"
	"os"
	"runtime"
)

// version is set at build time: -ldflags "-X main.version=v1.2.3".
var version = "dev"

const usageText = `usage: edge <command> [flags]

commands:
  run -config F                  serve: public and admin listeners, buffer, delivery
  validate -config F             check a configuration; exit 78 on problems
  route -config F KEY...         print the partition and backend of each KEY
  buffer check|export -path DIR  verify or export the durable queue offline
  dlq list|replay|discard ...    dead letters through a running edge's admin API
  top [-admin URL] [-token T]    live view of a running edge's partitions (q quits)
  version                        print the version

Run 'edge <command> -h' for the flags of a command.
`

func main() {
	os.Exit(dispatch(os.Args[1:]))
}

// dispatch runs the command named by args[0] with the rest of args and
// returns the process exit code.
func dispatch(args []string) int {
	if len(args) == 0 {
		printUsage(os.Stderr)
		return 2
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "run":
		return cmdRun(rest)
	case "validate":
		return cmdValidate(rest)
	case "route":
		return cmdRoute(rest)
	case "buffer":
		return cmdBuffer(rest)
	case "dlq":
		return cmdDLQ(rest)
	case "top":
		return cmdTop(rest)
	case "version", "-version", "--version":
		fmt.Printf("edge %s %s/%s %s\n", version, runtime.GOOS, runtime.GOARCH, runtime.Version())
		return 0
	case "help", "-h", "-help", "--help":
		printUsage(os.Stdout)
		return 0
	default:
		fmt.Fprintf(os.Stderr, "edge: unknown command %q\n\n", cmd)
		printUsage(os.Stderr)
		return 2
	}
}

func printUsage(w io.Writer) { fmt.Fprint(w, usageText) }
