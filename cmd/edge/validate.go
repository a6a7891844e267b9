package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/flowedge/flowedge/internal/config"
)

// cmdValidate is `edge validate -config F`: it prints "config OK: F" and
// returns 0, or prints every problem as "F:LINE: KEY: MSG" on stderr and
// returns 78 (EX_CONFIG, as `vector validate`). An unreadable file is 78 too.
func cmdValidate(args []string) int {
	return validateMain(args, os.Stdout, os.Stderr)
}

func validateMain(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("validate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "edge.toml", "edge configuration file (TOML)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: edge validate -config FILE")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "edge validate: unexpected argument %q\n", fs.Arg(0))
		fs.Usage()
		return 2
	}
	if _, ok := loadConfig(stderr, *path); !ok {
		return exitConfig
	}
	fmt.Fprintf(stdout, "config OK: %s\n", *path)
	return 0
}

// loadConfig loads the configuration at path. On failure it writes why to w
// (every problem of an invalid file, one per line, "path:line: key: msg")
// and returns false; callers then exit with exitConfig.
func loadConfig(w io.Writer, path string) (config.Config, bool) {
	cfg, err := config.Load(path)
	if err != nil {
		reportConfigError(w, path, err)
		return config.Config{}, false
	}
	return cfg, true
}

// reportConfigError writes err from config.Load for an operator.
func reportConfigError(w io.Writer, path string, err error) {
	var ce *config.Error
	if !errors.As(err, &ce) {
		fmt.Fprintf(w, "edge: %v\n", err)
		return
	}
	for _, p := range ce.Problems {
		loc := path
		if p.Line > 0 {
			loc = fmt.Sprintf("%s:%d", path, p.Line)
		}
		if p.Key != "" {
			fmt.Fprintf(w, "%s: %s: %s\n", loc, p.Key, p.Msg)
		} else {
			fmt.Fprintf(w, "%s: %s\n", loc, p.Msg)
		}
	}
}
