package admin

import (
	"context"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// Defaults of the history the status page and `edge top` draw: a sample
// every 2 s, 150 of them (the last 5 minutes).
const (
	DefaultHistoryInterval = 2 * time.Second
	DefaultHistorySize     = 150
)

// The metric families the history is read from (their names are the
// edge's documented metrics, so the history needs nothing else of the
// engine than what /metrics shows).
const (
	metricQueued     = "edge_buffer_records"
	metricDeliveries = "edge_deliveries_total"
)

// HistoryPartition is one partition in one history sample.
type HistoryPartition struct {
	Partition int `json:"partition"`
	// Queued is the number of records waiting in the partition.
	Queued float64 `json:"queued"`
	// DeliveredPerSecond is the rate of deliveries with result "delivered"
	// since the previous sample (0 in the first sample).
	DeliveredPerSecond float64 `json:"delivered_per_second"`
}

// HistorySample is the state of every partition at one instant.
type HistorySample struct {
	At         time.Time          `json:"at"`
	Partitions []HistoryPartition `json:"partitions"`
}

// history is a bounded ring of samples taken from a Prometheus gatherer by
// the goroutine of run. Readers copy under mu.
type history struct {
	gatherer prometheus.Gatherer
	interval time.Duration
	size     int

	mu      sync.Mutex
	ring    []HistorySample // oldest first once len == size (rotated by start)
	start   int             // index of the oldest sample once the ring is full
	prevAt  time.Time
	prevDel map[int]float64 // partition → delivered counter at prevAt
	lastErr error
}

// newHistory returns a history sampling g every interval (zero:
// DefaultHistoryInterval), keeping size samples (zero: DefaultHistorySize).
// A nil gatherer keeps the history empty.
func newHistory(g prometheus.Gatherer, interval time.Duration, size int) *history {
	if interval <= 0 {
		interval = DefaultHistoryInterval
	}
	if size <= 0 {
		size = DefaultHistorySize
	}
	return &history{gatherer: g, interval: interval, size: size}
}

// run samples at once, then every interval until ctx ends.
func (h *history) run(ctx context.Context) {
	if h.gatherer == nil {
		return
	}
	t := time.NewTicker(h.interval)
	defer t.Stop()
	for {
		h.sample(time.Now())
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// sample gathers the metrics once and appends a sample taken at now.
func (h *history) sample(now time.Time) {
	fams, err := h.gatherer.Gather()
	queued := map[int]float64{}
	delivered := map[int]float64{}
	for _, f := range fams {
		switch f.GetName() {
		case metricQueued:
			for _, m := range f.GetMetric() {
				if p, ok := partitionLabel(m); ok {
					queued[p] = m.GetGauge().GetValue()
				}
			}
		case metricDeliveries:
			for _, m := range f.GetMetric() {
				p, ok := partitionLabel(m)
				if ok && label(m, "result") == "delivered" {
					delivered[p] += m.GetCounter().GetValue()
				}
			}
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.lastErr = err
	n := 0
	for p := range queued {
		n = max(n, p+1)
	}
	for p := range delivered {
		n = max(n, p+1)
	}
	s := HistorySample{At: now.UTC(), Partitions: make([]HistoryPartition, n)}
	dt := now.Sub(h.prevAt).Seconds()
	for p := range n {
		hp := HistoryPartition{Partition: p, Queued: queued[p]}
		if prev, ok := h.prevDel[p]; ok && dt > 0 && delivered[p] >= prev {
			hp.DeliveredPerSecond = (delivered[p] - prev) / dt
		}
		s.Partitions[p] = hp
	}
	h.prevAt, h.prevDel = now, delivered
	if len(h.ring) < h.size {
		h.ring = append(h.ring, s)
		return
	}
	h.ring[h.start] = s
	h.start = (h.start + 1) % h.size
}

// samples returns a copy of the history, oldest first.
func (h *history) samples() []HistorySample {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]HistorySample, 0, len(h.ring))
	out = append(out, h.ring[h.start:]...)
	return append(out, h.ring[:h.start]...)
}

func partitionLabel(m *dto.Metric) (int, bool) {
	p, err := strconv.Atoi(label(m, "partition"))
	return p, err == nil && p >= 0 && p < 1<<16
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}
