package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/flowedge/flowedge/internal/buffer"
)

const bufferUsage = `usage: edge buffer check  -path DIR [-json]
       edge buffer export -path DIR [-o FILE]

check   verifies the durable queue offline: counts per partition, oldest
        record, corrupt records (quarantined and counted; counters that
        disagree with the records are rewritten). Exit 0 if all is well,
        1 if corrupt records were found or the check failed.
export  writes the queued requests as NDJSON (one JSON object per record:
        id, partition, seq, key, method, path, query, headers, body in
        base64, received_at, attempts, ...). Exit 1 if records were skipped
        as corrupt or the export failed.

The edge must not be running on DIR (the store is locked while it runs).
`

// cmdBuffer is `edge buffer check|export -path DIR`.
func cmdBuffer(args []string) int {
	return runBuffer(args, os.Stdout, os.Stderr)
}

// runBuffer is cmdBuffer with its output streams: exit 0 ok, 1 corrupt
// records or failure, 2 usage error.
func runBuffer(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, bufferUsage)
		return 2
	}
	sub := args[0]
	fs := flag.NewFlagSet("buffer "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, bufferUsage) }
	path := fs.String("path", "", "directory of the queue ([buffer] path)")
	var (
		asJSON *bool
		out    *string
	)
	switch sub {
	case "check":
		asJSON = fs.Bool("json", false, "print the report as JSON")
	case "export":
		out = fs.String("o", "-", "output file, - for standard output")
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, bufferUsage)
		return 0
	default:
		fmt.Fprintf(stderr, "edge buffer: unknown subcommand %q\n\n%s", sub, bufferUsage)
		return 2
	}
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *path == "" || fs.NArg() > 0 {
		fmt.Fprintf(stderr, "edge buffer %s: -path is required and takes no arguments\n\n%s", sub, bufferUsage)
		return 2
	}
	if sub == "check" {
		return bufferCheck(*path, *asJSON, stdout, stderr)
	}
	return bufferExport(*path, *out, stdout, stderr)
}

func bufferCheck(path string, asJSON bool, stdout, stderr io.Writer) int {
	rep, err := buffer.Check(path)
	if err != nil {
		fmt.Fprintf(stderr, "edge buffer check: %v\n", err)
		return 1
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(newCheckJSON(rep)); err != nil {
			fmt.Fprintf(stderr, "edge buffer check: %v\n", err)
			return 1
		}
	} else {
		printCheck(stdout, rep, time.Now())
	}
	if rep.Corrupt > 0 {
		return 1
	}
	return 0
}

func printCheck(w io.Writer, rep buffer.CheckReport, now time.Time) {
	fmt.Fprintf(w, "buffer %s\n\n", rep.Path)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "partition\trecords\tbytes\tdead\tparked\tfirst seq\tlast seq\tnext seq\toldest age\tcorrupt\t")
	for _, p := range rep.Partitions {
		fmt.Fprintf(tw, "%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%s\t%d\t\n",
			p.Partition, p.Records, p.Bytes, p.DeadLetters, p.Parked, p.FirstSeq, p.LastSeq, p.NextSeq,
			age(p.Oldest, now), p.Corrupt)
	}
	_ = tw.Flush()
	fmt.Fprintf(w, "\nrecords      %d (%d bytes)\n", rep.Records, rep.Bytes)
	fmt.Fprintf(w, "dead letters %d (%d parked keys)\n", rep.DeadLetters, rep.Parked)
	fmt.Fprintf(w, "outcomes     %d\n", rep.Outcomes)
	if rep.Oldest.IsZero() {
		fmt.Fprintln(w, "oldest       -")
	} else {
		fmt.Fprintf(w, "oldest       %s (%s ago)\n", rep.Oldest.UTC().Format(time.RFC3339), age(rep.Oldest, now))
	}
	fmt.Fprintf(w, "corrupt      %d found now (quarantined), %d in quarantine in all\n", rep.Corrupt, rep.Quarantined)
	for _, p := range rep.Problems {
		fmt.Fprintf(w, "problem      %s\n", p)
	}
	if rep.Corrupt == 0 {
		fmt.Fprintln(w, "\nOK")
	} else {
		fmt.Fprintln(w, "\nCORRUPT RECORDS FOUND")
	}
}

func age(t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return now.Sub(t).Round(time.Second).String()
}

func bufferExport(path, out string, stdout, stderr io.Writer) int {
	w := stdout
	var f *os.File
	if out != "-" {
		var err error
		f, err = os.Create(out)
		if err != nil {
			fmt.Fprintf(stderr, "edge buffer export: %v\n", err)
			return 1
		}
		w = f
	}
	bw := bufio.NewWriter(w)
	err := buffer.Export(path, bw)
	if ferr := bw.Flush(); err == nil && ferr != nil {
		err = fmt.Errorf("write: %w", ferr)
	}
	if f != nil {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("write %s: %w", out, cerr)
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "edge buffer export: %v\n", err)
		return 1
	}
	return 0
}
