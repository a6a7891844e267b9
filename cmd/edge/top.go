package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/flowedge/flowedge/internal/top"
)

// cmdTop is `edge top [-admin URL] [-token T] [-interval D]`: the live
// terminal view of a running edge (internal/top).
func cmdTop(args []string) int {
	fs := flag.NewFlagSet("top", flag.ContinueOnError)
	admin := fs.String("admin", "http://127.0.0.1:8686", "admin listener URL of the edge")
	token := fs.String("token", os.Getenv("EDGE_ADMIN_TOKEN"), "admin bearer token (default $EDGE_ADMIN_TOKEN)")
	interval := fs.Duration("interval", 0, "refresh interval (default 2s)")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: edge top [-admin URL] [-token T] [-interval D]\n\nA live view of a running edge's partitions; q quits.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "edge top: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	if err := top.Run(ctx, top.Options{Admin: *admin, Token: *token, Interval: *interval}); err != nil {
		fmt.Fprintln(os.Stderr, "edge top:", err)
		return 1
	}
	return 0
}
