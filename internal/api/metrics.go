package api

import (
	"strconv"

	"github.com/flowedge/flowedge/internal/api/webhook"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are the flow_ metrics. Queue depths are read at scrape time, so they never drift from the truth.
type metrics struct {
	requests      *prometheus.CounterVec   // flow_http_requests_total{route,method,code}
	duration      *prometheus.HistogramVec // flow_http_request_duration_seconds{route,method}
	events        prometheus.Counter       // flow_events_appended_total
	replays       prometheus.Counter       // flow_idempotent_replays_total
	jobsFinished  *prometheus.CounterVec   // flow_jobs_finished_total{status}
	jobDuration   prometheus.Histogram     // flow_job_duration_seconds
	checkFailures *prometheus.CounterVec   // flow_health_check_failures_total{check}
	// webhookDeliveries is flow_webhook_deliveries_total{result}:
	// success|failure|breaker_open|dropped, one per delivery.
	webhookDeliveries *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer, s *Server) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flow_http_requests_total",
			Help: "HTTP requests answered, by route pattern, method and status code.",
		}, []string{"route", "method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "flow_http_request_duration_seconds",
			Help:    "Time to answer HTTP requests, by route pattern and method.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"route", "method"}),
		events: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flow_events_appended_total",
			Help: "Events appended to process logs (by requests and by job steps).",
		}),
		replays: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flow_idempotent_replays_total",
			Help: "Requests answered with a stored answer because their X-Request-ID or Idempotency-Key was seen before.",
		}),
		jobsFinished: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flow_jobs_finished_total",
			Help: "Jobs that reached a final status (succeeded, failed, cancelled).",
		}, []string{"status"}),
		jobDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "flow_job_duration_seconds",
			Help:    "Time from a job's first start to its end.",
			Buckets: prometheus.ExponentialBuckets(0.005, 4, 10),
		}),
		checkFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flow_health_check_failures_total",
			Help: "Health checks that failed or timed out, by check.",
		}, []string{"check"}),
		webhookDeliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flow_webhook_deliveries_total",
			Help: "Webhook deliveries by result: success (2xx), failure (final error or non-2xx answer), breaker_open (the host's circuit breaker refused it), dropped (queue full or server stopping).",
		}, []string{"result"}),
	}
	for _, r := range webhook.Results {
		m.webhookDeliveries.WithLabelValues(r) // exported at 0 from the start
	}
	queued := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "flow_job_queue_depth",
		Help: "Jobs waiting to run (the job queue depth).",
	}, func() float64 { q, _ := s.runner.Depth(); return float64(q) })
	running := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "flow_jobs_running",
		Help: "Jobs running now.",
	}, func() float64 { _, r := s.runner.Depth(); return float64(r) })
	info := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "flow_build_info",
		Help:        "Always 1; labels name the version and the partition this backend serves.",
		ConstLabels: prometheus.Labels{"version": s.opts.Version, "partition": itoa(s.opts.Partition), "partitions": itoa(s.opts.Partitions)},
	})
	info.Set(1)
	reg.MustRegister(m.requests, m.duration, m.events, m.replays, m.jobsFinished, m.jobDuration, m.checkFailures,
		m.webhookDeliveries, s.breakers, // flow_breaker_open{host}: package outbound
		queued, running, info,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func itoa(n int) string { return strconv.Itoa(n) }
