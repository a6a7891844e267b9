package server

import (
	"log/slog"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flowedge/flowedge/internal/config"
	"github.com/flowedge/flowedge/internal/intake"
	"github.com/flowedge/flowedge/internal/partition"
)

// intakeGuard builds the intake guard of [auth] and [intake] (nil when both
// are off: Wrap then returns the handler as is). It guards only requests
// the edge stores (mode buffer); "{N}" in check_url is the partition of the
// request's key (0 when it has none).
func intakeGuard(cfg config.Config, log *slog.Logger, reg prometheus.Registerer) *intake.Guard {
	perSecond, _ := cfg.Intake.PerSecond() // validated before Start
	return intake.New(intake.Options{
		CheckURL:       cfg.Auth.CheckURL,
		CacheTTL:       cfg.Auth.CacheTTL.Duration,
		RejectWhenDown: cfg.Auth.WhenDown == config.WhenDownReject,
		CheckTimeout:   cfg.Auth.Timeout.Duration,
		Rate:           perSecond,
		Burst:          cfg.Intake.BurstSize(),
		Stored:         func(r *http.Request) bool { return cfg.ModeFor(r.Method, r.URL.Path) == config.ModeBuffer },
		Partition: func(r *http.Request) int {
			if key := r.Header.Get(cfg.Partition.KeyHeader); key != "" {
				return partition.OfString(key, cfg.Partition.Count)
			}
			return 0
		},
		Logger:     log.With("component", "intake"),
		Registerer: reg,
	})
}
