// Package server wires the edge together: the queue, the delivery engine,
// the public and admin listeners, and their orderly shutdown.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flowedge/flowedge/internal/admin"
	"github.com/flowedge/flowedge/internal/buffer"
	"github.com/flowedge/flowedge/internal/config"
	"github.com/flowedge/flowedge/internal/delivery"
	"github.com/flowedge/flowedge/internal/ingress"
	"github.com/flowedge/flowedge/internal/metrics"
	"github.com/flowedge/flowedge/internal/partition"
)

// Edge is a running edge. Create it with Start; end it with Shutdown.
type Edge struct {
	cfg      config.Config
	log      *slog.Logger
	queue    buffer.Queue
	engine   *delivery.Engine
	ingress  *ingress.Handler
	admin    *admin.Handler
	public   *http.Server
	fresh    *freshConns // public connections with no request yet
	adminSrv *http.Server
	// stopAdmin ends the admin handler's history sampler.
	stopAdmin context.CancelFunc

	// PublicAddr and AdminAddr are the addresses the listeners bound
	// (useful when the config asked for port 0).
	PublicAddr, AdminAddr string

	serveErr chan error
	wg       sync.WaitGroup
	once     sync.Once
	shutErr  error
}

// Start opens the queue, starts delivery and binds both listeners. The edge
// serves until Shutdown; Err reports a listener that failed.
func Start(ctx context.Context, cfg config.Config, log *slog.Logger, version string) (*Edge, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	fsync := cfg.Buffer.FsyncEnabled()
	q, err := buffer.Open(buffer.Options{
		Path:            cfg.Buffer.Path,
		Partitions:      cfg.Partition.Count,
		MaxBytes:        cfg.Buffer.MaxBytes,
		Fsync:           &fsync,
		IdempotencyTTL:  cfg.Buffer.IdempotencyTTL.Duration,
		OutcomeTTL:      cfg.Buffer.OutcomeTTL.Duration,
		OutcomeMaxBytes: cfg.Buffer.OutcomeMaxBytes,
		Logger:          log, // the buffer names itself (component=buffer)
		Route:           partition.OfString,
	})
	if err != nil {
		return nil, fmt.Errorf("opening buffer %s: %w", cfg.Buffer.Path, err)
	}
	e := &Edge{cfg: cfg, log: log, queue: q, serveErr: make(chan error, 2)}
	fail := func(err error) (*Edge, error) {
		if e.engine != nil {
			e.engine.Stop(0)
		}
		_ = q.Close()
		return nil, err
	}

	reg := prometheus.NewRegistry()
	var eng *delivery.Engine
	m := metrics.New(reg, func() metrics.State { return eng.State() })
	eng, err = delivery.New(delivery.Options{
		Queue:           q,
		Partitions:      cfg.Partition.Count,
		BackendURL:      cfg.BackendURL,
		Ordering:        cfg.Delivery.Ordering,
		MaxInFlight:     cfg.Delivery.MaxInFlight,
		OnDead:          cfg.Delivery.OnDead,
		Timeout:         cfg.Backends.Timeout.Duration,
		ProbePath:       cfg.Backends.ProbePath,
		ProbeInterval:   cfg.Backends.ProbeInterval.Duration,
		BreakerFailures: cfg.Backends.BreakerFailures,
		BreakerCooldown: cfg.Backends.BreakerCooldown.Duration,
		InitialBackoff:  cfg.Retry.InitialBackoff.Duration,
		MaxBackoff:      cfg.Retry.MaxBackoff.Duration,
		MaxRetryAfter:   cfg.Retry.MaxRetryAfter.Duration,
		MaxDuration:     cfg.Retry.MaxDuration.Duration,
		MaxAttempts:     cfg.Retry.MaxAttempts,
		Protocol:        cfg.Delivery.Protocol,
		BatchPath:       cfg.Delivery.BatchPath,
		BatchMax:        cfg.Delivery.BatchMax,
		BatchBytes:      cfg.Delivery.BatchBytes,
		H2C:             cfg.Backends.H2C,
		Pipeline:        cfg.Backends.Pipeline,
		BlockWhenFull:   cfg.Buffer.WhenFull == "block",
		BlockTimeout:    cfg.Buffer.BlockTimeout.Duration,
		Metrics:         m,
		Logger:          log.With("component", "delivery"),
	})
	if err != nil {
		return fail(err)
	}
	e.engine = eng
	ing, err := ingress.New(ingress.Options{
		Deliveries:    eng,
		Partitions:    cfg.Partition.Count,
		BackendURL:    cfg.BackendURL,
		ModeFor:       cfg.ModeFor,
		KeyHeader:     cfg.Partition.KeyHeader,
		SpreadMissing: cfg.Partition.MissingKey == "spread",
		MaxBodyBytes:  cfg.Server.MaxBodyBytes,
		MaxBodyFor:    cfg.MaxBodyFor,
		MaxURLBytes:   cfg.Server.MaxURLBytes,
		MaxQueryBytes: cfg.Server.MaxQueryBytes,
		Accept:        cfg.Server.Respond == "accept",
		RelayTimeout:  cfg.Server.RelayTimeout.Duration,
		BatchPath:     cfg.Delivery.BatchPath,
		ProxyTimeout:  cfg.Backends.Timeout.Duration,
		Metrics:       m,
		Logger:        log.With("component", "ingress"),
	})
	if err != nil {
		return fail(err)
	}
	e.ingress = ing
	e.admin = admin.New(admin.Options{Deliveries: eng, Gatherer: reg, Token: cfg.Admin.Token, Version: version})

	pubLn, err := net.Listen("tcp", cfg.Server.Address)
	if err != nil {
		return fail(fmt.Errorf("public listener %s: %w", cfg.Server.Address, err))
	}
	admLn, err := net.Listen("tcp", cfg.Admin.Address)
	if err != nil {
		pubLn.Close()
		return fail(fmt.Errorf("admin listener %s: %w", cfg.Admin.Address, err))
	}
	e.PublicAddr, e.AdminAddr = pubLn.Addr().String(), admLn.Addr().String()
	errLog := slog.NewLogLogger(log.Handler(), slog.LevelWarn)
	e.fresh = newFreshConns()
	e.public = &http.Server{
		ConnState:         e.fresh.track,
		Handler:           intakeGuard(cfg, log, reg).Wrap(ing),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       cfg.Server.ReadTimeout.Duration,
		WriteTimeout:      cfg.Server.WriteTimeout.Duration,
		IdleTimeout:       cfg.Server.IdleTimeout.Duration,
		MaxHeaderBytes:    cfg.Server.MaxHeaderBytes,
		ErrorLog:          errLog,
	}
	e.adminSrv = &http.Server{Handler: e.admin, ReadHeaderTimeout: 10 * time.Second, ErrorLog: errLog}

	eng.Start(ctx)
	actx, acancel := context.WithCancel(ctx)
	e.stopAdmin = acancel
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		e.admin.Run(actx)
	}()
	for _, s := range []struct {
		srv *http.Server
		ln  net.Listener
	}{{e.public, pubLn}, {e.adminSrv, admLn}} {
		e.wg.Add(1)
		go func() {
			defer e.wg.Done()
			if err := s.srv.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				e.serveErr <- err
			}
		}()
	}
	log.Info("edge started", "public", e.PublicAddr, "admin", e.AdminAddr, "partitions", cfg.Partition.Count,
		"buffer", cfg.Buffer.Path, "respond", cfg.Server.Respond, "ordering", cfg.Delivery.Ordering, "protocol", cfg.Delivery.Protocol)
	return e, nil
}

// Err receives a listener's failure.
func (e *Edge) Err() <-chan error { return e.serveErr }

// Queue exposes the queue (for tests and tooling).
func (e *Edge) Queue() buffer.Queue { return e.queue }

// Shutdown drains the edge: readiness turns false, the public listener stops
// accepting and waits for its requests, the delivery engine finishes or
// hands back attempts under way, the admin listener closes and the queue is
// closed cleanly. It returns within ctx's deadline (what is not done by
// then is cut short; the queue still holds it). Safe to call twice.
func (e *Edge) Shutdown(ctx context.Context) error {
	e.once.Do(func() {
		e.admin.SetDraining()
		var errs []error
		shut := make(chan error, 1)
		go func() { shut <- e.public.Shutdown(ctx) }()
		// Shutdown has closed the listener once it polls; idle keep-alive
		// connections it closes itself, the ones with no request yet are
		// closed here (see freshConns).
		e.fresh.drain()
		if err := <-shut; err != nil {
			errs = append(errs, fmt.Errorf("public listener: %w", err))
			e.public.Close()
		}
		grace := 10 * time.Second
		if d, ok := ctx.Deadline(); ok {
			grace = time.Until(d) / 2
		}
		e.engine.Stop(max(grace, 0))
		e.ingress.Close()
		if err := e.adminSrv.Shutdown(ctx); err != nil {
			e.adminSrv.Close()
		}
		e.stopAdmin()
		e.wg.Wait()
		if err := e.queue.Close(); err != nil {
			errs = append(errs, fmt.Errorf("closing buffer: %w", err))
		}
		e.log.Info("edge stopped")
		e.shutErr = errors.Join(errs...)
	})
	return e.shutErr
}
