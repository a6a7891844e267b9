package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/flowedge/flowedge/internal/partition"
)

// cmdRoute is `edge route -config F KEY...`: for each KEY it prints
// "key=KEY partition=P backend=URL", the partition and backend the edge
// sends that key's requests to. A key with spaces, quotes or control
// characters (or an empty one) is printed Go-quoted. Invalid config: 78.
func cmdRoute(args []string) int {
	return routeMain(args, os.Stdout, os.Stderr)
}

func routeMain(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("route", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "edge.toml", "edge configuration file (TOML)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: edge route -config FILE KEY...")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() == 0 {
		fmt.Fprintln(stderr, "edge route: no KEY given")
		fs.Usage()
		return 2
	}
	cfg, ok := loadConfig(stderr, *path)
	if !ok {
		return exitConfig
	}
	for _, key := range fs.Args() {
		p := partition.OfString(key, cfg.Partition.Count)
		fmt.Fprintf(stdout, "key=%s partition=%d backend=%s\n", printableKey(key), p, cfg.BackendURL(p))
	}
	return 0
}

// printableKey keeps one key on one output line and unambiguous.
func printableKey(k string) string {
	if k == "" || strings.ContainsFunc(k, func(r rune) bool {
		return r <= ' ' || r == '"' || r == '\\' || r == 0x7f || !strconv.IsPrint(r)
	}) {
		return strconv.Quote(k)
	}
	return k
}
