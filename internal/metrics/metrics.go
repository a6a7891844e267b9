// Package metrics defines the edge's Prometheus metrics (names fixed by
// docs/edge.md) on a registry passed in, so every test gets a fresh one.
package metrics

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Edge holds the edge's counters and histograms. Gauges that describe state
// (queue depth, readiness, breakers) are read at scrape time through a
// StateFunc, so they can never drift from the truth.
type Edge struct {
	Requests        *prometheus.CounterVec   // edge_http_requests_total{code,method,mode}
	RequestDuration *prometheus.HistogramVec // edge_http_request_duration_seconds{mode}
	Attempts        *prometheus.CounterVec   // edge_delivery_attempts_total{partition,outcome}
	Deliveries      *prometheus.CounterVec   // edge_deliveries_total{partition,result}
	Latency         *prometheus.HistogramVec // edge_delivery_latency_seconds{partition}
}

// PartitionState is the scrape-time view of one partition.
type PartitionState struct {
	Records     int
	Oldest      time.Time // zero when empty
	DeadLetters int
	Ready       bool
	BreakerOpen bool
}

// State is the scrape-time view of the edge.
type State struct {
	BufferBytes int64
	DiskBytes   int64 // real size of the buffer directory (edge_disk_bytes)
	Partitions  []PartitionState
}

// StateFunc returns the current state; it is called on every scrape.
type StateFunc func() State

// Attempt outcomes, the values of edge_delivery_attempts_total's outcome label.
const (
	AttemptOK       = "ok"        // 2xx/3xx
	AttemptRejected = "rejected"  // final 4xx (or 501)
	AttemptRetry    = "retry"     // retryable status: 408, 429, 5xx but 501
	AttemptMisroute = "misrouted" // 421
	AttemptError    = "error"     // connection error or timeout
)

// New registers the edge metrics, the Go and process collectors and a
// collector for state on reg.
func New(reg prometheus.Registerer, state StateFunc) *Edge {
	m := &Edge{
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edge_http_requests_total",
			Help: "Client requests answered by the public listener, by status code, method and mode.",
		}, []string{"code", "method", "mode"}),
		RequestDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "edge_http_request_duration_seconds",
			Help:    "Time from a client request's arrival to its answer, by mode.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"mode"}),
		Attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edge_delivery_attempts_total",
			Help: "Delivery attempts to backends, by partition and outcome (ok, rejected, retry, misrouted, error).",
		}, []string{"partition", "outcome"}),
		Deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edge_deliveries_total",
			Help: "Deliveries that reached a final result (delivered, rejected, dead), by partition.",
		}, []string{"partition", "result"}),
		Latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "edge_delivery_latency_seconds",
			Help:    "Time from durable accept to final result, by partition.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600},
		}, []string{"partition"}),
	}
	reg.MustRegister(m.Requests, m.RequestDuration, m.Attempts, m.Deliveries, m.Latency,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		&stateCollector{state: state})
	return m
}

// Partition formats a partition number as a label value.
func Partition(p int) string { return strconv.Itoa(p) }

var (
	descRecords   = prometheus.NewDesc("edge_buffer_records", "Requests queued on disk, by partition.", []string{"partition"}, nil)
	descBytes     = prometheus.NewDesc("edge_buffer_bytes", "Bytes of queued requests (what [buffer] max_bytes bounds).", nil, nil)
	descDisk      = prometheus.NewDesc("edge_disk_bytes", "Real size of the buffer directory on disk (queued records, outcomes, idempotency keys, store overhead).", nil, nil)
	descOldest    = prometheus.NewDesc("edge_buffer_oldest_age_seconds", "Age of the oldest queued request, by partition (0 when empty).", []string{"partition"}, nil)
	descReady     = prometheus.NewDesc("edge_backend_ready", "1 when the partition's backend passes its readiness probe.", []string{"partition"}, nil)
	descBreaker   = prometheus.NewDesc("edge_breaker_open", "1 while the partition's circuit breaker is open.", []string{"partition"}, nil)
	descDeadCount = prometheus.NewDesc("edge_dead_letters", "Requests in the dead letters, by partition.", []string{"partition"}, nil)
)

type stateCollector struct{ state StateFunc }

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descRecords, descBytes, descDisk, descOldest, descReady, descBreaker, descDeadCount} {
		ch <- d
	}
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.state()
	ch <- prometheus.MustNewConstMetric(descBytes, prometheus.GaugeValue, float64(s.BufferBytes))
	ch <- prometheus.MustNewConstMetric(descDisk, prometheus.GaugeValue, float64(s.DiskBytes))
	now := time.Now()
	for i, p := range s.Partitions {
		l := Partition(i)
		age := 0.0
		if !p.Oldest.IsZero() {
			age = now.Sub(p.Oldest).Seconds()
		}
		ch <- prometheus.MustNewConstMetric(descRecords, prometheus.GaugeValue, float64(p.Records), l)
		ch <- prometheus.MustNewConstMetric(descOldest, prometheus.GaugeValue, age, l)
		ch <- prometheus.MustNewConstMetric(descReady, prometheus.GaugeValue, b2f(p.Ready), l)
		ch <- prometheus.MustNewConstMetric(descBreaker, prometheus.GaugeValue, b2f(p.BreakerOpen), l)
		ch <- prometheus.MustNewConstMetric(descDeadCount, prometheus.GaugeValue, float64(p.DeadLetters), l)
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
