package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"time"

	"github.com/flowedge/flowedge/internal/api"
	"github.com/flowedge/flowedge/internal/api/store/pgstore"
)

// openStore opens PostgreSQL when databaseURL is set (migrations applied),
// else the embedded Badger store in dataDir.
func openStore(ctx context.Context, dataDir, databaseURL string, log *slog.Logger) (api.Store, error) {
	if databaseURL == "" {
		return api.OpenBadger(dataDir, api.BadgerOptions{Logger: log})
	}
	octx, cancel := context.WithTimeout(ctx, 3*time.Minute) // migrations may wait for another pod's
	defer cancel()
	return pgstore.Open(octx, databaseURL, pgstore.Options{Logger: log})
}

// runPartitions is "api partitions [show | set N]": it shows or changes the
// partition count that every backend sharing DATABASE_URL obeys. Setting a
// new count gives it the next epoch; backends read it within seconds and
// then serve only the processes they own under it.
func runPartitions(ctx context.Context, args []string, getenv func(string) string, out io.Writer) int {
	usage := func() int {
		fmt.Fprintln(out, "usage: api partitions [show | set N]   (DATABASE_URL names the database)")
		return exitUsage
	}
	if len(args) == 0 {
		args = []string{"show"}
	}
	var count int
	switch {
	case args[0] == "show" && len(args) == 1:
	case args[0] == "set" && len(args) == 2:
		n, err := strconv.Atoi(args[1])
		if err != nil || n < 1 {
			fmt.Fprintf(out, "api partitions set: want a count of at least 1, got %q\n", args[1])
			return exitUsage
		}
		count = n
	default:
		return usage()
	}
	url := getenv("DATABASE_URL")
	if url == "" {
		fmt.Fprintln(out, "api partitions: DATABASE_URL is not set (an embedded store's count is its -partitions flag)")
		return exitConfig
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	st, err := pgstore.Open(ctx, url, pgstore.Options{})
	if err != nil {
		fmt.Fprintln(out, "api partitions:", err)
		return exitFail
	}
	defer st.Close()
	var p api.Partitioning
	if count > 0 {
		p, err = st.SetPartitioning(ctx, count)
	} else {
		err = st.View(ctx, func(tx api.Tx) error {
			var err error
			p, err = tx.Partitioning()
			return err
		})
	}
	if err != nil {
		fmt.Fprintln(out, "api partitions:", err)
		return exitFail
	}
	if p.Count == 0 {
		fmt.Fprintln(out, "no partition count stored yet (the first backend to start stores its -partitions)")
		return exitOK
	}
	fmt.Fprintf(out, "partitions %d epoch %d\n", p.Count, p.Epoch)
	return exitOK
}
