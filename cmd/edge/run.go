package main

import (
	"context"
	"flag"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/google/uuid"

	"github.com/flowedge/flowedge/internal/config"
	"github.com/flowedge/flowedge/internal/server"
)

// cmdRun is `edge run -config F`: serve until SIGTERM/SIGINT, then drain and
// exit 0 within [server] shutdown_timeout.
func cmdRun(args []string) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	path := fs.String("config", "edge.toml", "edge configuration file (TOML)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, ok := loadConfig(os.Stderr, *path)
	if !ok {
		return exitConfig
	}
	log := newLogger(os.Stderr, cfg.Log)
	tuneRuntime(log)
	// Delivery ids (UUIDv7) draw their random bits from a pooled buffer
	// instead of one crypto/rand read per request.
	uuid.EnableRandPool()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	e, err := server.Start(ctx, cfg, log, version)
	if err != nil {
		log.Error("cannot start", "err", err)
		return 1
	}
	code := 0
	select {
	case <-ctx.Done():
		log.Info("signal received: draining", "timeout", cfg.Server.ShutdownTimeout.Duration)
	case err := <-e.Err():
		log.Error("listener failed", "err", err)
		code = 1
	}
	stop()
	sctx, cancel := context.WithTimeout(context.Background(), cfg.Server.ShutdownTimeout.Duration)
	defer cancel()
	if err := e.Shutdown(sctx); err != nil {
		log.Error("shutdown", "err", err)
		code = 1
	}
	return code
}

// exitConfig is EX_CONFIG from sysexits.h, as `vector validate` uses.
const exitConfig = 78

func newLogger(w io.Writer, c config.Log) *slog.Logger {
	opts := &slog.HandlerOptions{Level: c.SlogLevel()}
	if strings.ToLower(c.Format) == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}
