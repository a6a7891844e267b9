package server

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flowedge/flowedge/internal/partition"
)

// lockedBuffer is a log sink several goroutines write to.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestWrongBackendOrder: the backends are listed in the wrong order (the
// backend of partition 0 second, that of partition 1 first) and each says
// in its readiness answer which partition it serves (X-Partition). The
// edge takes the writes, delivers none of them (several probe rounds
// later neither backend got a request), shows both partitions as
// misconfigured with the claim, answers /health/health 503 unhealthy, and
// logs the misconfiguration once per partition. Started again with the
// right order on the same queue, it delivers every write to its owner.
func TestWrongBackendOrder(t *testing.T) {
	b0, b1 := newBackend(t, "b0"), newBackend(t, "b1")
	b0.setClaim("0/2")
	b1.setClaim("1/2")
	bs := []*backend{b0, b1}
	cfg := testConfig(t, b1, b0) // wrong order
	cfg.Server.RelayTimeout.Duration = 100 * time.Millisecond
	var logs lockedBuffer
	e, err := Start(context.Background(), cfg, slog.New(slog.NewJSONHandler(&logs, nil)), "test")
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			e.Shutdown(ctx)
		}
	}
	t.Cleanup(stop)

	misconfigured := func(e *Edge) []map[string]any {
		var out []map[string]any
		parts, _ := adminGet(t, e, "/edge/v1/partitions")["partitions"].([]any)
		for _, p := range parts {
			if m := p.(map[string]any); m["misconfigured"] == true {
				out = append(out, m)
			}
		}
		return out
	}
	eventually(t, 10*time.Second, "both partitions misconfigured", func() bool { return len(misconfigured(e)) == 2 })
	for _, p := range misconfigured(e) {
		want := fmt.Sprintf("%d/2", 1-int(p["partition"].(float64)))
		if p["ready"] != false || p["claim"] != want {
			t.Fatalf("misconfigured partition = %v, want ready false and claim %s", p, want)
		}
	}

	const writes = 20
	for i := range writes {
		key := fmt.Sprintf("key-%d", i)
		resp := send(t, e, "POST", "/e", key, key+":0", nil)
		if body := readBody(t, resp); resp.StatusCode != http.StatusAccepted {
			t.Fatalf("%s: %d %q, want 202 (queued)", key, resp.StatusCode, body)
		}
	}
	// Give the edge several probe rounds in which it could have delivered.
	p0, p1 := b0.probeCount(), b1.probeCount()
	eventually(t, 10*time.Second, "three more probes of each backend", func() bool {
		return b0.probeCount() >= p0+3 && b1.probeCount() >= p1+3
	})
	if n0, n1 := b0.hitCount(), b1.hitCount(); n0+n1 != 0 {
		t.Fatalf("misconfigured backends got requests: b0 %d, b1 %d", n0, n1)
	}
	queued := 0
	for _, p := range adminGet(t, e, "/edge/v1/partitions")["partitions"].([]any) {
		queued += int(p.(map[string]any)["queued"].(float64))
	}
	if queued != writes {
		t.Fatalf("queued %d, want %d", queued, writes)
	}

	resp, err := client.Get("http://" + e.AdminAddr + "/health/health")
	if err != nil {
		t.Fatal(err)
	}
	health := readBody(t, resp)
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(health, `"unhealthy"`) ||
		!strings.Contains(health, `"misconfigured"`) || !strings.Contains(health, "claims 1/2, the edge maps it to 0/2") {
		t.Fatalf("/health/health = %d %s, want 503 unhealthy naming the claim", resp.StatusCode, health)
	}
	if n := strings.Count(logs.String(), "backend misconfigured"); n != 2 {
		t.Fatalf("%d misconfiguration log lines, want one per partition:\n%s", n, logs.String())
	}
	if strings.Contains(logs.String(), "backend not ready") {
		t.Fatalf("a misconfigured backend was also logged as not ready:\n%s", logs.String())
	}

	// The order mended: the same queue, delivered to the owners.
	stop()
	cfg.Backends.URLs = []string{b0.url(), b1.url()}
	e2 := startEdge(t, cfg)
	eventually(t, 10*time.Second, "every write delivered", func() bool { return b0.effectCount()+b1.effectCount() == writes })
	for i := range writes {
		key := fmt.Sprintf("key-%d", i)
		b := bs[partition.OfString(key, 2)]
		b.mu.Lock()
		got := len(b.effects[key])
		b.mu.Unlock()
		if got != 1 {
			t.Fatalf("%s: %d effects on its owner %s", key, got, b.name)
		}
	}
	if m := misconfigured(e2); len(m) != 0 {
		t.Fatalf("still misconfigured: %v", m)
	}
	eventually(t, 15*time.Second, "healthy", func() bool {
		resp, err := client.Get("http://" + e2.AdminAddr + "/health/health")
		if err != nil {
			t.Fatal(err)
		}
		return strings.Contains(readBody(t, resp), `"status":"healthy"`)
	})
}

// TestClaimFixedAtTheBackend: a backend that claims another partition is
// held; once its claim agrees (the pod restarted with the right ordinal)
// the edge delivers what waited, logging one line each way. A backend that
// sends no claim is taken as it is.
func TestClaimFixedAtTheBackend(t *testing.T) {
	b0, b1 := newBackend(t, "b0"), newBackend(t, "b1")
	b0.setClaim("1/2") // b1 says nothing
	var logs lockedBuffer
	cfg := testConfig(t, b0, b1)
	cfg.Server.Respond = "accept"
	e, err := Start(context.Background(), cfg, slog.New(slog.NewJSONHandler(&logs, nil)), "test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		e.Shutdown(ctx)
	})
	eventually(t, 10*time.Second, "partition 0 misconfigured", func() bool {
		ps := adminGet(t, e, "/edge/v1/partitions")["partitions"].([]any)
		return ps[0].(map[string]any)["misconfigured"] == true && ps[1].(map[string]any)["ready"] == true
	})
	k0, k1 := keyOn(t, 0, 2), keyOn(t, 1, 2)
	readBody(t, send(t, e, "POST", "/e", k0, k0+":0", nil))
	readBody(t, send(t, e, "POST", "/e", k1, k1+":0", nil))
	eventually(t, 10*time.Second, "partition 1 delivered", func() bool { return b1.effectCount() == 1 })
	p0 := b0.probeCount()
	eventually(t, 10*time.Second, "three more probes", func() bool { return b0.probeCount() >= p0+3 })
	if n := b0.hitCount(); n != 0 {
		t.Fatalf("misconfigured backend got %d requests", n)
	}
	b0.setClaim("0/2")
	eventually(t, 10*time.Second, "partition 0 delivered", func() bool { return b0.effectCount() == 1 })
	l := logs.String()
	if strings.Count(l, "backend misconfigured") != 1 || strings.Count(l, "backend claim agrees again") != 1 {
		t.Fatalf("want one log line each way:\n%s", l)
	}
}

// keyOn returns a key that partition p of n owns.
func keyOn(t *testing.T, p, n int) string {
	t.Helper()
	for i := range 10000 {
		if k := fmt.Sprintf("key-%d", i); partition.OfString(k, n) == p {
			return k
		}
	}
	t.Fatalf("no key on partition %d", p)
	return ""
}
