// Command api is the api-flow backend: the Flow API (processes, events,
// workflows, jobs, apps, API keys) and its health checks, one process per
// partition behind the edge. State lives in an embedded Badger store under
// -data-dir, or, when DATABASE_URL is set, in PostgreSQL (or CockroachDB),
// shared by all backends. REDIS_URL shares the rate limits and holds the
// webhook delivery journal; STORAGE_PROVIDER (s3, aws, r2, gcp, azure)
// holds media and backups, else a directory under -data-dir. /metrics is
// served on -metrics-listen only (default :9090).
//
// Usage:
//
//	api [-listen :8080] [-metrics-listen :9090] [-partition N] [-partitions M] [-data-dir DIR] [-env development|production] [-config api.toml]
//	api partitions [show | set N]     (with DATABASE_URL: the shared partition count)
//	api backup [flags]                (the embedded store to the meta bucket; prints the key)
//	api restore [flags] [-from KEY]   (the newest backup, or KEY, into an empty -data-dir)
//
// Every flag is also read from FLOW_<NAME> (FLOW_DATA_DIR for -data-dir);
// flags win over the environment, which wins over the -config file. With
// no -partition, the ordinal comes from HOSTNAME api-flow-N.
// FLOW_BOOTSTRAP_KEY creates an admin API key with that secret at start.
//
// Exit status: 0 after a clean shutdown (SIGTERM, SIGINT), 2 for bad
// command-line syntax, 78 (EX_CONFIG) for bad configuration values, 1 when
// the store or the listener cannot be opened.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/flowedge/flowedge/internal/api"
	"github.com/flowedge/flowedge/internal/objstore"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// version is set at build time: -ldflags "-X main.version=1.2.3".
var version = ""

// Exit statuses.
const (
	exitOK     = 0
	exitFail   = 1
	exitUsage  = 2
	exitConfig = 78 // EX_CONFIG, as `edge validate` and `vector validate`
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Getenv, os.Stderr))
}

// run is the whole process: configuration, wiring, serving until ctx ends
// (a signal), then a graceful shutdown. Logs go to logw as JSON lines.
func run(ctx context.Context, args []string, getenv func(string) string, logw io.Writer) int {
	if len(args) > 0 && args[0] == "partitions" {
		return runPartitions(ctx, args[1:], getenv, logw)
	}
	if len(args) > 0 && (args[0] == "backup" || args[0] == "restore") {
		return runTool(ctx, args[0], args[1:], getenv, logw)
	}
	cfg, code := configOrExit(args, getenv, logw)
	if code >= 0 {
		return code
	}
	level, _ := parseLevel(cfg.LogLevel)
	log := slog.New(slog.NewJSONHandler(logw, &slog.HandlerOptions{Level: level}))

	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		log.Error("cannot create the data directory", "data_dir", cfg.DataDir, "err", err)
		return exitFail
	}
	store, err := openStore(ctx, cfg.DataDir, getenv("DATABASE_URL"), log)
	if err != nil {
		log.Error("cannot open the store", "data_dir", cfg.DataDir, "database", getenv("DATABASE_URL") != "", "err", err)
		return exitFail
	}
	defer store.Close()

	// The production components, each only when its variable is set.
	var rdb *redis.Client
	if cfg.redisURL != "" {
		opt, _ := redis.ParseURL(cfg.redisURL) // validated by loadConfig
		rdb = redis.NewClient(opt)
		defer rdb.Close()
	}
	octx, ocancel := context.WithTimeout(ctx, 30*time.Second)
	objects, err := objstore.Open(octx, cfg.storage)
	ocancel()
	if err != nil {
		log.Error("cannot open the object storage", "storage", cfg.storage.Describe(), "err", err)
		return exitFail
	}
	defer objects.Close()

	origins, _ := cfg.origins() // validated by loadConfig
	proxies, _ := cfg.proxies() // validated by loadConfig
	srv, err := api.New(api.Options{
		Store:          store,
		Partition:      cfg.Partition,
		Partitions:     cfg.Partitions,
		Production:     cfg.Env == "production",
		Version:        buildVersion(),
		Logger:         log,
		Registry:       prometheus.NewRegistry(),
		Workers:        cfg.Workers,
		IdempotencyTTL: time.Duration(cfg.IdempotencyTTL),
		AuditRetention: time.Duration(cfg.AuditRetention),
		BootstrapKey:   cfg.bootstrapKey,
		DataDir:        cfg.DataDir,
		AppURLs:        origins,
		TrustedProxies: proxies,
		Redis:          redisOption(rdb),
		Objects:        objects,
		RateLimits: api.RateLimits{
			Default:  cfg.RateLimits.Default,
			Posts:    cfg.RateLimits.Posts,
			Webhooks: cfg.RateLimits.Webhooks,
			Keys:     cfg.RateLimits.Keys,
		},
	})
	if err != nil {
		log.Error("cannot start the API", "err", err)
		return exitFail
	}
	shutdownTimeout := time.Duration(cfg.ShutdownTimeout)
	closeSrv := func() {
		sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
		defer cancel()
		if err := srv.Close(sctx); err != nil {
			log.Error("job workers did not stop in time", "err", err)
		}
	}

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		log.Error("cannot listen", "listen", cfg.Listen, "err", err)
		closeSrv()
		return exitFail
	}
	hs := &http.Server{
		Handler:           srv.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	// /metrics on its own listener, so nothing operational is reachable
	// through the edge's public port.
	mln, err := net.Listen("tcp", cfg.MetricsListen)
	if err != nil {
		log.Error("cannot listen", "metrics_listen", cfg.MetricsListen, "err", err)
		ln.Close()
		closeSrv()
		return exitFail
	}
	mmux := http.NewServeMux()
	mmux.Handle("GET /metrics", srv.MetricsHandler())
	ms := &http.Server{Handler: mmux, ReadHeaderTimeout: 10 * time.Second, WriteTimeout: time.Minute,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	serveErr := make(chan error, 2)
	go func() { serveErr <- hs.Serve(ln) }()
	go func() { serveErr <- ms.Serve(mln) }()
	defer ms.Close()
	log.Info("listening", "addr", ln.Addr().String(), "metrics_addr", mln.Addr().String(), "partition", cfg.Partition, "partitions", cfg.Partitions,
		"partition_from", cfg.partitionSource, "data_dir", cfg.DataDir, "env", cfg.Env, "version", buildVersion(),
		"redis", rdb != nil, "storage", cfg.storage.Describe())

	select {
	case <-ctx.Done():
		log.Info("shutting down", "timeout", shutdownTimeout.String())
	case err := <-serveErr:
		log.Error("server failed", "err", err)
		closeSrv()
		return exitFail
	}
	// Readiness turns 503 first, then the listener closes and in-flight
	// requests finish, then jobs stop (a running job resumes at the next
	// start), then the store closes (deferred).
	srv.Drain()
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		log.Warn("requests still open at the shutdown timeout", "err", err)
	}
	closeSrv()
	if err := store.Close(); err != nil {
		log.Error("closing the store", "err", err)
		return exitFail
	}
	log.Info("stopped")
	return exitOK
}

// configOrExit loads the configuration; on a problem it reports it and
// returns the exit code, else -1.
func configOrExit(args []string, getenv func(string) string, logw io.Writer) (config, int) {
	cfg, err := loadConfig(args, getenv, logw)
	switch {
	case errors.Is(err, flag.ErrHelp):
		return cfg, exitOK
	case errors.Is(err, errUsage):
		fmt.Fprintln(logw, "api:", err)
		return cfg, exitUsage
	case err != nil:
		fmt.Fprintln(logw, "api: bad configuration:")
		for _, line := range splitJoined(err) {
			fmt.Fprintln(logw, "  "+line)
		}
		return cfg, exitConfig
	}
	return cfg, -1
}

// redisOption is rdb as an Options.Redis: nil stays a nil interface.
func redisOption(rdb *redis.Client) redis.UniversalClient {
	if rdb == nil {
		return nil
	}
	return rdb
}

// buildVersion is the -X version, else the module version, else "dev".
func buildVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

// splitJoined lists the errors of an errors.Join.
func splitJoined(err error) []string {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []string
		for _, e := range j.Unwrap() {
			out = append(out, splitJoined(e)...)
		}
		return out
	}
	return []string{err.Error()}
}
