package top

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/flowedge/flowedge/internal/admin"
)

func TestSparkline(t *testing.T) {
	if got := Sparkline([]float64{0, 1, 2, 4, 8}, 4); got != "▁▂▄█" {
		t.Errorf("Sparkline = %q, want the last 4 values scaled to their maximum", got)
	}
	if got := Sparkline([]float64{0, 0}, 10); got != "▁▁" {
		t.Errorf("all-zero Sparkline = %q", got)
	}
}

// TestRenderStates: a partition not ready, one misconfigured, the rate from
// the last history sample, totals, and an error shown above the table.
func TestRenderStates(t *testing.T) {
	s := Snapshot{At: time.Unix(0, 0), Health: "degraded", Partitions: []Partition{
		{Partition: 0, Backend: "http://a", Ready: true, Breaker: "closed", Queued: 3},
		{Partition: 1, Backend: "http://b", Breaker: "open", Queued: 4, OldestAgeSeconds: 90},
		{Partition: 2, Backend: "http://c", Misconfigured: true, Breaker: "closed"},
	}, History: []admin.HistorySample{{Partitions: []admin.HistoryPartition{{Partition: 0, DeliveredPerSecond: 12.5}}}}}
	out := Render("http://edge", s, true, errors.New("boom"), 0)
	for _, want := range []string{"error: boom", "NOT READY", "misconfigured", "12.5", "1.5m", "degraded"} {
		if !strings.Contains(out, want) {
			t.Errorf("view lacks %q:\n%s", want, out)
		}
	}
	if !strings.Contains(out, "all") || !strings.Contains(out, "       7") {
		t.Errorf("view lacks the total of 7 queued:\n%s", out)
	}
	for _, l := range strings.Split(Render("http://edge", s, true, nil, 40), "\n") {
		if len([]rune(l)) > 40 {
			t.Errorf("line wider than 40: %q", l)
		}
	}
}
