package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/flowedge/flowedge/internal/api/store/badgerstore"
	"github.com/flowedge/flowedge/internal/objstore"
	"gocloud.dev/blob"
)

// backupPrefix is where a partition's backups live in the meta bucket:
// backups/partition-<N>/<UTC time>.badger, so names sort by time.
func backupPrefix(partition int) string {
	return "backups/partition-" + strconv.Itoa(partition) + "/"
}

// runTool runs `api backup` or `api restore` with the same flags and
// variables as the server (-data-dir, -partition, STORAGE_PROVIDER, …).
//
// backup writes a full backup of the embedded store in -data-dir to the
// meta bucket and prints its object key. The store must not be open in
// another process (stop the api first, e.g. a Job on the pod's volume):
// Badger holds a directory lock.
//
// restore [-from KEY] loads a backup (the newest of this partition unless
// -from names one) into -data-dir, which must be empty or missing.
func runTool(ctx context.Context, tool string, args []string, getenv func(string) string, logw io.Writer) int {
	from := ""
	if tool == "restore" {
		var err error
		if from, args, err = cutFlag(args, "from"); err != nil {
			fmt.Fprintln(logw, "api restore:", err)
			return exitUsage
		}
	}
	cfg, code := configOrExit(args, getenv, logw)
	if code >= 0 {
		return code
	}
	if getenv("DATABASE_URL") != "" {
		fmt.Fprintf(logw, "api %s: DATABASE_URL is set: the state is in that database; back it up with the database's own tools\n", tool)
		return exitConfig
	}
	level, _ := parseLevel(cfg.LogLevel)
	log := slog.New(slog.NewJSONHandler(logw, &slog.HandlerOptions{Level: level}))
	octx, cancel := context.WithTimeout(ctx, 30*time.Second)
	objects, err := objstore.Open(octx, cfg.storage)
	cancel()
	if err != nil {
		log.Error("cannot open the object storage", "storage", cfg.storage.Describe(), "err", err)
		return exitFail
	}
	defer objects.Close()
	switch tool {
	case "backup":
		key, n, err := backup(ctx, cfg, objects.Meta)
		if err != nil {
			log.Error("backup failed", "data_dir", cfg.DataDir, "err", err)
			return exitFail
		}
		log.Info("backup written", "key", key, "bytes", n, "storage", cfg.storage.Describe())
		fmt.Println(key)
	case "restore":
		key, err := restore(ctx, cfg, objects.Meta, from)
		if err != nil {
			log.Error("restore failed", "data_dir", cfg.DataDir, "err", err)
			return exitFail
		}
		log.Info("restored", "key", key, "data_dir", cfg.DataDir)
	}
	return exitOK
}

// backup streams the store's backup into a new object of bucket; the
// object exists only if the whole stream was written.
func backup(ctx context.Context, cfg config, bucket *blob.Bucket) (string, int64, error) {
	st, err := badgerstore.Open(cfg.DataDir, badgerstore.Options{})
	if err != nil {
		return "", 0, fmt.Errorf("%w (is the api still running on it?)", err)
	}
	defer st.Close()
	key := backupPrefix(cfg.Partition) + time.Now().UTC().Format("20060102T150405.000000000Z") + ".badger"
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w, err := bucket.NewWriter(wctx, key, &blob.WriterOptions{ContentType: "application/octet-stream"})
	if err != nil {
		return "", 0, err
	}
	cw := &countingWriter{w: w}
	if err := st.(badgerstore.Backuper).Backup(ctx, cw); err != nil {
		cancel() // a cancelled writer leaves no object
		_ = w.Close()
		return "", 0, err
	}
	if err := w.Close(); err != nil {
		return "", 0, fmt.Errorf("write %s: %w", key, err)
	}
	return key, cw.n, nil
}

// restore loads backup key (the newest of the partition if "") into the
// data directory.
func restore(ctx context.Context, cfg config, bucket *blob.Bucket, key string) (string, error) {
	if key == "" {
		it := bucket.List(&blob.ListOptions{Prefix: backupPrefix(cfg.Partition)})
		for {
			obj, err := it.Next(ctx)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return "", fmt.Errorf("list backups: %w", err)
			}
			if strings.HasSuffix(obj.Key, ".badger") && obj.Key > key {
				key = obj.Key
			}
		}
		if key == "" {
			return "", fmt.Errorf("no backup of partition %d under %s", cfg.Partition, backupPrefix(cfg.Partition))
		}
	}
	r, err := bucket.NewReader(ctx, key, nil)
	if err != nil {
		return "", fmt.Errorf("read %s: %w", key, err)
	}
	defer r.Close()
	if err := badgerstore.Restore(cfg.DataDir, r); err != nil {
		return "", err
	}
	return path.Clean(key), nil
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// cutFlag removes -name VALUE / -name=VALUE (one or two dashes) from args.
func cutFlag(args []string, name string) (string, []string, error) {
	var rest []string
	value := ""
	for i := 0; i < len(args); i++ {
		a := strings.TrimPrefix(strings.TrimPrefix(args[i], "-"), "-")
		switch {
		case a == name:
			if i+1 >= len(args) {
				return "", nil, fmt.Errorf("flag -%s needs a value", name)
			}
			value = args[i+1]
			i++
		case strings.HasPrefix(a, name+"="):
			value = strings.TrimPrefix(a, name+"=")
		default:
			rest = append(rest, args[i])
		}
	}
	return value, rest, nil
}
