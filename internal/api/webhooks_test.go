package api_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flowedge/flowedge/internal/api"
	"github.com/flowedge/flowedge/internal/api/webhook"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
)

// createdHook is the answer to a webhook creation.
type createdHook struct {
	api.Webhook
	Secret string `json:"secret"`
}

// hook creates a webhook and returns it with its secret.
func (e *env) hook(url string, events ...string) createdHook {
	e.t.Helper()
	var h createdHook
	must(e.t, e.do(req{method: "POST", path: "/api/v1/webhooks", key: adminKey,
		body: map[string]any{"url": url, "events": events}}), 201).json(e.t, &h)
	if h.Secret == "" || h.ID == "" {
		e.t.Fatalf("created webhook without id or secret: %+v", h)
	}
	return h
}

// finishJob runs a job of a one-step workflow to the end: it raises
// job.succeeded.
func (e *env) finishJob(pid string) api.Job {
	e.t.Helper()
	j := e.submit(pid, e.workflow(delay(0)), map[string]any{"n": 1})
	return e.waitJob(j.ID, api.JobSucceeded)
}

// metric reads the value of the series of family name with labels (a
// counter or a gauge) from reg; ok is false if there is none.
func metric(t testing.TB, reg *prometheus.Registry, name string, labels map[string]string) (v float64, ok bool) {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
	series:
		for _, m := range f.GetMetric() {
			for _, lp := range m.GetLabel() {
				if want, ok := labels[lp.GetName()]; ok && want != lp.GetValue() {
					continue series
				}
			}
			if c := m.GetCounter(); c != nil {
				return c.GetValue(), true
			}
			return m.GetGauge().GetValue(), true
		}
	}
	return 0, false
}

// deliveries returns flow_webhook_deliveries_total{result}.
func (e *env) deliveries(result string) float64 {
	e.t.Helper()
	v, _ := metric(e.t, e.opts.Registry, "flow_webhook_deliveries_total", map[string]string{"result": result})
	return v
}

// waitDeliveries waits until flow_webhook_deliveries_total{result} is n.
func (e *env) waitDeliveries(result string, n float64) {
	e.t.Helper()
	waitFor(e.t, result+" deliveries = "+strconv.FormatFloat(n, 'f', -1, 64), func() bool {
		got := e.deliveries(result)
		if got > n {
			e.t.Fatalf("%v %s deliveries, want %v", got, result, n)
		}
		return got == n
	})
}

// waitWebhooksIdle waits until e's webhook journal is empty: every
// delivery emitted so far has ended (made, failed, or skipped because its
// webhook is gone), so each request it made has reached its receiver. Not
// for Webhooks.InMemory.
func (e *env) waitWebhooksIdle() {
	e.t.Helper()
	j := webhook.StoreJournal{Store: e.store, Partition: e.opts.Partition}
	waitFor(e.t, "every webhook delivery to end", func() bool {
		recs, err := j.Pending(context.Background(), 1)
		if err != nil {
			e.t.Fatal(err)
		}
		return len(recs) == 0
	})
}

// gotJobEvent reports whether rc received an event about job id.
func (rc *receiver) gotJobEvent(id string) bool {
	for _, r := range rc.requests() {
		var env struct {
			Data struct {
				ID string `json:"id"`
			} `json:"data"`
		}
		if json.Unmarshal(r.body, &env) == nil && env.Data.ID == id {
			return true
		}
	}
	return false
}

// received is a request a receiver got.
type received struct {
	header http.Header
	body   []byte
}

// receiver is a webhook target. Its answer is status (0 means 204), or
// what answer returns if it was given one.
type receiver struct {
	*httptest.Server
	hits   atomic.Int32
	mu     sync.Mutex
	got    []received
	status atomic.Int32
}

func newReceiver(t *testing.T, tls bool, answer ...func(hit int32) int) *receiver {
	rc := &receiver{}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		rc.mu.Lock()
		rc.got = append(rc.got, received{header: r.Header.Clone(), body: b})
		rc.mu.Unlock()
		hit := rc.hits.Add(1)
		code := int(rc.status.Load())
		if len(answer) > 0 && code == 0 {
			code = answer[0](hit)
		}
		if code == 0 {
			code = http.StatusNoContent
		}
		w.WriteHeader(code)
	})
	if tls {
		rc.Server = httptest.NewTLSServer(h)
	} else {
		rc.Server = httptest.NewServer(h)
	}
	t.Cleanup(rc.Close)
	return rc
}

func (rc *receiver) requests() []received {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]received(nil), rc.got...)
}

// fakeResolver answers from a table; a host's answers are used in turn,
// the last one again once they run out.
type fakeResolver struct {
	mu      sync.Mutex
	answers map[string][]string
	calls   map[string]int
}

func newResolver(answers map[string][]string) *fakeResolver {
	return &fakeResolver{answers: answers, calls: map[string]int{}}
}

func (f *fakeResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	seq, ok := f.answers[host]
	if !ok {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	i := min(f.calls[host], len(seq)-1)
	f.calls[host]++
	return []netip.Addr{netip.MustParseAddr(seq[i])}, nil
}

func (f *fakeResolver) count(host string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[host]
}

// quick are webhook options for tests: short waits between attempts.
func quick(o *api.Options) {
	o.Webhooks.RetryWaitMin = time.Millisecond
	o.Webhooks.RetryWaitMax = 5 * time.Millisecond
}

// TestWebhookCRUD: the secret is shown once (not on GET, list, or a
// repeat of the creating request); lists page; bad input is a 400; the
// audit log records create and delete; the delivery counter is exported
// at 0 from the start.
func TestWebhookCRUD(t *testing.T) {
	e := newEnv(t)
	metrics := e.metrics()
	for _, r := range []string{"success", "failure", "breaker_open", "dropped"} {
		if want := `flow_webhook_deliveries_total{result="` + r + `"} 0`; !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	body := map[string]any{"url": "https://hooks.example.com/flow?token=abc", "events": []string{"job.succeeded", "post.created"}}
	r := must(t, e.do(req{method: "POST", path: "/api/v1/webhooks", key: adminKey, body: body,
		header: map[string]string{"Idempotency-Key": "hook-1"}}), 201)
	var h createdHook
	r.json(t, &h)
	if !strings.HasPrefix(h.Secret, "whsec_") || len(h.Secret) < 40 || h.URL != body["url"] ||
		strings.Join(h.Events, ",") != "job.succeeded,post.created" || r.header.Get("Location") != "/api/v1/webhooks/"+h.ID {
		t.Fatalf("created %+v (Location %q)", h, r.header.Get("Location"))
	}
	// A repeat does not show the secret again.
	rep := e.do(req{method: "POST", path: "/api/v1/webhooks", key: adminKey, body: body,
		header: map[string]string{"Idempotency-Key": "hook-1"}})
	must(t, rep, 409)
	var p map[string]any
	rep.json(t, &p)
	if p["webhook_id"] != h.ID || strings.Contains(string(rep.body), h.Secret) || rep.header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("repeat: %s", rep.body)
	}

	got := must(t, e.do(req{method: "GET", path: "/api/v1/webhooks/" + h.ID, key: adminKey}), 200)
	h2 := e.hook("http://127.0.0.1:1/x", "*")
	list := must(t, e.do(req{method: "GET", path: "/api/v1/webhooks", key: adminKey}), 200)
	for _, b := range [][]byte{got.body, list.body} {
		if strings.Contains(string(b), h.Secret) || strings.Contains(string(b), h2.Secret) || strings.Contains(string(b), "secret") {
			t.Fatalf("GET shows a secret: %s", b)
		}
	}
	var l struct {
		Items      []api.Webhook `json:"items"`
		NextCursor string        `json:"next_cursor"`
	}
	must(t, e.do(req{method: "GET", path: "/api/v1/webhooks?limit=1", key: adminKey}), 200).json(t, &l)
	if len(l.Items) != 1 || l.Items[0].ID != h.ID || l.NextCursor != h.ID {
		t.Fatalf("page 1: %+v", l)
	}
	cursor := l.NextCursor
	l.Items, l.NextCursor = nil, ""
	must(t, e.do(req{method: "GET", path: "/api/v1/webhooks?limit=1&cursor=" + cursor, key: adminKey}), 200).json(t, &l)
	if len(l.Items) != 1 || l.Items[0].ID != h2.ID || l.NextCursor != "" {
		t.Fatalf("page 2: %+v", l)
	}

	for _, b := range []any{
		map[string]any{"url": "https://example.com/h"},
		map[string]any{"url": "https://example.com/h", "events": []string{}},
		map[string]any{"url": "https://example.com/h", "events": []string{"nope"}},
		map[string]any{"url": "https://example.com/h", "events": []string{"*", "job.failed"}},
		map[string]any{"url": "https://example.com/h", "events": []string{"job.failed", "job.failed"}},
		map[string]any{"url": "ftp://example.com/h", "events": []string{"*"}},
		map[string]any{"url": "/relative", "events": []string{"*"}},
		map[string]any{"url": "https://user:pw@example.com/h", "events": []string{"*"}},
		map[string]any{"url": "https://example.com/" + strings.Repeat("a", 2048), "events": []string{"*"}},
		map[string]any{"url": "https://example.com/h", "events": []string{"*"}, "secret": "mine"},
		map[string]any{"events": []string{"*"}},
	} {
		checkProblem(t, e.do(req{method: "POST", path: "/api/v1/webhooks", key: adminKey, body: b}), 400)
	}

	// A member key may manage webhooks too.
	var k struct {
		Key string `json:"key"`
	}
	must(t, e.do(req{method: "POST", path: "/api/v1/keys", key: adminKey, body: map[string]any{"name": "m"}}), 201).json(t, &k)
	must(t, e.do(req{method: "GET", path: "/api/v1/webhooks", key: k.Key}), 200)

	must(t, e.do(req{method: "DELETE", path: "/api/v1/webhooks/" + h.ID, key: adminKey}), 204)
	checkProblem(t, e.do(req{method: "GET", path: "/api/v1/webhooks/" + h.ID, key: adminKey}), 404)
	checkProblem(t, e.do(req{method: "DELETE", path: "/api/v1/webhooks/" + h.ID, key: adminKey}), 404)
	checkProblem(t, e.do(req{method: "GET", path: "/api/v1/webhooks/not-a-uuid", key: adminKey}), 400)

	// The audit log has the creations and the deletion, with the resource.
	var audit struct {
		Items []api.AuditEntry `json:"items"`
	}
	must(t, e.do(req{method: "GET", path: "/api/v1/audit", key: adminKey}), 200).json(t, &audit)
	seen := map[string]int{}
	for _, a := range audit.Items {
		if a.ResourceID == h.ID || a.ResourceID == h2.ID {
			seen[a.Action+" "+a.ResourceID]++
			if a.KeyID == "" || a.RequestID == "" || a.IP == "" {
				t.Errorf("audit entry without key, request id or IP: %+v", a)
			}
		}
	}
	for _, want := range []string{"webhook.create " + h.ID, "webhook.create " + h2.ID, "webhook.delete " + h.ID} {
		if seen[want] != 1 {
			t.Errorf("audit: %q recorded %d times, want once (%+v)", want, seen[want], audit.Items)
		}
	}
}

// TestWebhookURLRulesProduction: in production a webhook must be HTTPS and
// its host public, as written and as resolved; development allows http
// and local receivers.
func TestWebhookURLRulesProduction(t *testing.T) {
	res := newResolver(map[string][]string{
		"hooks.example.test":    {"93.184.216.34"},
		"internal.example.test": {"10.1.2.3"},
		"meta.example.test":     {"169.254.169.254"},
		"v6.example.test":       {"fd00:ec2::254"},
		"nat64.example.test":    {"64:ff9b::7f00:1"},
	})
	e := newEnv(t, func(o *api.Options) { o.Production = true; o.Resolver = res })
	for _, c := range []struct {
		url    string
		status int
	}{
		{"http://hooks.example.test/h", 400},
		{"https://127.0.0.1/h", 400},
		{"https://10.0.0.1/h", 400},
		{"https://169.254.169.254/latest/meta-data", 400},
		{"https://[::1]/h", 400},
		{"https://[fd00:ec2::254]/h", 400},
		{"https://[::ffff:127.0.0.1]/h", 400},
		{"https://0.0.0.0/h", 400},
		{"https://100.64.0.1/h", 400},
		{"https://224.0.0.1/h", 400},
		{"https://localhost/h", 400},
		{"https://127.1/h", 400},
		{"https://2130706433/h", 400},
		{"https://internal.example.test/h", 422},
		{"https://meta.example.test/h", 422},
		{"https://v6.example.test/h", 422},
		{"https://nat64.example.test/h", 422},
		{"https://nxdomain.example.test/h", 422},
	} {
		r := e.do(req{method: "POST", path: "/api/v1/webhooks", key: adminKey, body: map[string]any{"url": c.url, "events": []string{"*"}}})
		checkProblem(t, r, c.status)
	}
	e.hook("https://hooks.example.test/h", "*")
	e.hook("https://93.184.216.34/h", "*")

	dev := newEnv(t)
	rc := newReceiver(t, false)
	dev.hook(rc.URL+"/h", "job.succeeded")
	dev.finishJob("p-dev")
	dev.waitDeliveries("success", 1)
	if rc.hits.Load() != 1 {
		t.Fatalf("local receiver got %d requests, want 1", rc.hits.Load())
	}
}

// TestWebhookDNSRebinding: a host that resolved to a public address when
// the webhook was created and to loopback when the delivery dials is never
// connected to; the delivery counts as a failure and is not retried.
func TestWebhookDNSRebinding(t *testing.T) {
	rc := newReceiver(t, true)
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(rc.URL, "https://"))
	res := newResolver(map[string][]string{"rebind.example.test": {"93.184.216.34", "127.0.0.1"}})
	e := newEnv(t, quick, func(o *api.Options) { o.Production = true; o.Resolver = res })
	e.hook("https://rebind.example.test:"+port+"/h", "job.succeeded")
	if n := res.count("rebind.example.test"); n != 1 {
		t.Fatalf("creation resolved the host %d times, want 1", n)
	}
	e.finishJob("p-rebind")
	e.waitDeliveries("failure", 1)
	if n := rc.hits.Load(); n != 0 {
		t.Fatalf("the receiver on loopback got %d requests", n)
	}
	if n := res.count("rebind.example.test"); n != 2 {
		t.Fatalf("the host was resolved %d times, want 2 (creation, one dial: a refused address is not retried)", n)
	}
	if e.deliveries("success") != 0 {
		t.Fatal("a success was counted")
	}
}

// verify checks a received delivery as a receiver written from the docs
// would: HMAC-SHA256 over "<timestamp>.<body>" with the secret.
func verify(t *testing.T, secret string, r received) {
	t.Helper()
	ts := r.header.Get("X-Flow-Timestamp")
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(ts + "." + string(r.body)))
	want := "sha256=" + hex.EncodeToString(mac.Sum(nil))
	if got := r.header.Get("X-Flow-Signature"); !hmac.Equal([]byte(got), []byte(want)) {
		t.Fatalf("signature %q, want %q", got, want)
	}
	if err := api.VerifyWebhook(secret, ts, r.header.Get("X-Flow-Signature"), r.body, time.Now(), 0); err != nil {
		t.Fatalf("VerifyWebhook: %v", err)
	}
	n, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || time.Since(time.Unix(n, 0)).Abs() > time.Minute {
		t.Fatalf("X-Flow-Timestamp %q is not now", ts)
	}
}

// TestWebhookDelivery: a job's end reaches the webhooks subscribed to its
// event, signed with the secret shown at creation; a tampered body fails
// verification; a deleted webhook gets nothing more.
func TestWebhookDelivery(t *testing.T) {
	e := newEnv(t)
	rc := newReceiver(t, false)
	all := e.hook(rc.URL+"/all", "*")
	ok := e.hook(rc.URL+"/ok", "job.succeeded")
	e.hook(rc.URL+"/failed", "job.failed")
	j := e.finishJob("p-deliver")
	e.waitDeliveries("success", 2)

	got := rc.requests()
	if len(got) != 2 {
		t.Fatalf("%d deliveries, want 2", len(got))
	}
	var eventID string
	for _, r := range got {
		secret := all.Secret
		if r.header.Get("X-Flow-Webhook-ID") == ok.ID {
			secret = ok.Secret
		}
		verify(t, secret, r)
		if ev := r.header.Get("X-Flow-Event"); ev != "job.succeeded" {
			t.Fatalf("X-Flow-Event %q", ev)
		}
		if _, err := uuid.Parse(r.header.Get("X-Flow-Delivery")); err != nil {
			t.Fatalf("X-Flow-Delivery %q: %v", r.header.Get("X-Flow-Delivery"), err)
		}
		if ct := r.header.Get("Content-Type"); ct != "application/json" {
			t.Fatalf("Content-Type %q", ct)
		}
		var env struct {
			ID        string    `json:"id"`
			Event     string    `json:"event"`
			CreatedAt time.Time `json:"created_at"`
			Data      api.Job   `json:"data"`
		}
		if err := json.Unmarshal(r.body, &env); err != nil {
			t.Fatalf("body %s: %v", r.body, err)
		}
		if env.Event != "job.succeeded" || env.Data.ID != j.ID || env.Data.Status != api.JobSucceeded || env.CreatedAt.IsZero() {
			t.Fatalf("body %s", r.body)
		}
		if eventID != "" && env.ID != eventID {
			t.Fatalf("one event, two ids: %s, %s", eventID, env.ID)
		}
		eventID = env.ID

		// Tampering with the body (or using another secret) fails.
		tampered := append([]byte(nil), r.body...)
		tampered[len(tampered)-2] ^= 1
		if err := api.VerifyWebhook(secret, r.header.Get("X-Flow-Timestamp"), r.header.Get("X-Flow-Signature"), tampered, time.Now(), 0); !errors.Is(err, api.ErrWebhookSignature) {
			t.Fatalf("tampered body: %v", err)
		}
	}
	if got[0].header.Get("X-Flow-Delivery") == got[1].header.Get("X-Flow-Delivery") {
		t.Fatal("two webhooks, one delivery id")
	}

	// A deleted webhook gets nothing; the others still do.
	must(t, e.do(req{method: "DELETE", path: "/api/v1/webhooks/" + all.ID, key: adminKey}), 204)
	e.finishJob("p-deliver")
	e.waitDeliveries("success", 3)
	for _, r := range rc.requests()[2:] {
		if r.header.Get("X-Flow-Webhook-ID") != ok.ID {
			t.Fatalf("delivery to %s after its deletion", r.header.Get("X-Flow-Webhook-ID"))
		}
	}
}

// TestWebhookJobEvents: failed and cancelled jobs raise their events.
func TestWebhookJobEvents(t *testing.T) {
	e := newEnv(t)
	rc := newReceiver(t, false)
	e.hook(rc.URL+"/h", "job.failed", "job.cancelled")
	bad := newReceiver(t, false)
	bad.status.Store(400)
	j := e.submit("p-ev", e.workflow(map[string]any{"type": "http", "url": bad.URL}), nil)
	e.waitJob(j.ID, api.JobFailed)
	j = e.submit("p-ev", e.workflow(delay(60_000)), nil)
	must(t, e.do(req{method: "POST", path: "/jobs/" + j.ID + "/cancel", key: adminKey}), 200)
	e.waitDeliveries("success", 2)
	var events []string
	for _, r := range rc.requests() {
		events = append(events, r.header.Get("X-Flow-Event"))
	}
	slices.Sort(events)
	if strings.Join(events, ",") != "job.cancelled,job.failed" {
		t.Fatalf("events %v", events)
	}
}

// TestWebhookRetries: 5xx answers are retried (same delivery id, fresh
// signature each time) until a 2xx; a 4xx is final at once.
func TestWebhookRetries(t *testing.T) {
	e := newEnv(t, quick)
	rc := newReceiver(t, false, func(hit int32) int {
		if hit <= 2 {
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	})
	h := e.hook(rc.URL+"/h", "job.succeeded")
	e.finishJob("p-retry")
	e.waitDeliveries("success", 1)
	got := rc.requests()
	if len(got) != 3 {
		t.Fatalf("%d attempts, want 3", len(got))
	}
	for _, r := range got {
		verify(t, h.Secret, r)
		if r.header.Get("X-Flow-Delivery") != got[0].header.Get("X-Flow-Delivery") {
			t.Fatal("the delivery id changed between attempts")
		}
	}

	rc.status.Store(http.StatusBadRequest)
	e.finishJob("p-retry")
	e.waitDeliveries("failure", 1)
	if n := rc.hits.Load(); n != 4 {
		t.Fatalf("%d requests, want 4: a 400 is not retried", n)
	}
}

// TestWebhookBreaker: five failed deliveries to a host open its breaker:
// the sixth is not sent (breaker_open, the gauge says 1); after the
// cooldown one probe goes through and closes it.
func TestWebhookBreaker(t *testing.T) {
	// Long enough that a loaded machine (the whole suite in parallel) sees
	// the sixth delivery refused before the breaker half-opens; the test
	// waits it out once.
	const cooldown = 5 * time.Second
	e := newEnv(t, quick, func(o *api.Options) {
		o.Webhooks.MaxAttempts = 1
		o.Webhooks.BreakerCooldown = cooldown
	})
	rc := newReceiver(t, false)
	rc.status.Store(http.StatusInternalServerError)
	u, _ := url.Parse(rc.URL)
	host := map[string]string{"host": u.Host}
	e.hook(rc.URL+"/h", "job.succeeded")
	for i := 1; i <= 4; i++ {
		e.finishJob("p-breaker")
		e.waitDeliveries("failure", float64(i))
	}
	if v, _ := metric(t, e.opts.Registry, "flow_breaker_open", host); v != 0 {
		t.Fatalf("flow_breaker_open %v after 4 failures", v)
	}
	opened := time.Now()
	e.finishJob("p-breaker")
	e.waitDeliveries("failure", 5)
	e.finishJob("p-breaker")
	e.waitDeliveries("breaker_open", 1)
	if time.Since(opened) >= cooldown {
		t.Skip("the machine is too slow to see the breaker open within its cooldown")
	}
	if n := rc.hits.Load(); n != 5 {
		t.Fatalf("the receiver got %d requests, want 5: the 6th must not be sent", n)
	}
	if v, ok := metric(t, e.opts.Registry, "flow_breaker_open", host); !ok || v != 1 {
		t.Fatalf("flow_breaker_open%v = %v (exported %v), want 1", host, v, ok)
	}

	rc.status.Store(http.StatusOK)
	waitFor(t, "the breaker to leave the open state", func() bool {
		v, _ := metric(t, e.opts.Registry, "flow_breaker_open", host)
		return v == 0
	})
	e.finishJob("p-breaker")
	e.waitDeliveries("success", 1)
	if n := rc.hits.Load(); n != 6 {
		t.Fatalf("the receiver got %d requests, want 6 (the half-open probe)", n)
	}
	e.finishJob("p-breaker")
	e.waitDeliveries("success", 2)
}

// TestHTTPStepBreaker: workflow http steps share the per-host breaker: after
// five failed calls the sixth job's step fails without a request.
func TestHTTPStepBreaker(t *testing.T) {
	e := newEnv(t)
	rc := newReceiver(t, false)
	rc.status.Store(http.StatusBadGateway)
	wf := e.workflow(map[string]any{"type": "http", "url": rc.URL + "/step"})
	for range 5 {
		e.waitJob(e.submit("p-step", wf, nil).ID, api.JobFailed)
	}
	j := e.waitJob(e.submit("p-step", wf, nil).ID, api.JobFailed)
	if n := rc.hits.Load(); n != 5 || !strings.Contains(j.Error, "circuit breaker open") {
		t.Fatalf("%d calls, job error %q; want 5 calls and an open breaker", n, j.Error)
	}
}

// TestWebhookQueueFull: in memory only (Webhooks.InMemory), when the
// bounded queue is full, deliveries are dropped and counted, and the
// events' sources are not held up.
func TestWebhookQueueFull(t *testing.T) {
	e := newEnv(t, func(o *api.Options) { o.Webhooks.Workers = 1; o.Webhooks.QueueSize = 1; o.Webhooks.InMemory = true })
	release := make(chan struct{})
	var hits atomic.Int32
	rc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		<-release
	}))
	defer rc.Close()
	defer close(release) // before the server stops (deferred calls run before cleanups)
	e.hook(rc.URL+"/h", "job.succeeded")
	for range 4 {
		e.finishJob("p-full")
	}
	waitFor(t, "a dropped delivery", func() bool { return e.deliveries("dropped") >= 1 })
	waitFor(t, "the first delivery under way", func() bool { return hits.Load() >= 1 })
	if got := hits.Load(); got != 1 {
		t.Fatalf("%d requests under way, want 1 (one worker)", got)
	}
}

// TestWebhookQueueBytes: the queue is bounded in bytes as well as in
// deliveries. An event's body can be a job with a 1 MiB input, so 1024 of
// them waiting on a slow receiver would hold a gigabyte; past
// MaxQueueBytes deliveries are dropped, though the queue has room for more.
func TestWebhookQueueBytes(t *testing.T) {
	e := newEnv(t, func(o *api.Options) {
		o.Webhooks.Workers = 1
		o.Webhooks.MaxQueueBytes = 100 << 10
		o.Webhooks.InMemory = true
	})
	release := make(chan struct{})
	var hits atomic.Int32
	rc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1); <-release }))
	defer rc.Close()
	defer close(release)
	e.hook(rc.URL+"/h", "job.succeeded")
	wf := e.workflow(delay(0))
	big := strings.Repeat("x", 40<<10)
	for i := range 5 {
		j := e.submit("p-bytes", wf, map[string]any{"blob": big})
		e.waitJob(j.ID, api.JobSucceeded)
		if i == 0 {
			// Flake: a worker that had not taken the first delivery off the
			// queue before the third was emitted left three dropped.
			waitFor(t, "the first delivery under way", func() bool { return hits.Load() == 1 })
		}
	}
	// One delivery under way, two waiting (80 KiB), two dropped.
	waitFor(t, "dropped deliveries", func() bool { return e.deliveries("dropped") >= 2 })
	if got := e.deliveries("dropped"); got != 2 {
		t.Fatalf("%v deliveries dropped, want 2", got)
	}
}

// TestWebhookQueueFullJournal: with the journal (the default), a full
// queue delays deliveries instead of dropping them: all are made once the
// receiver answers, none dropped.
func TestWebhookQueueFullJournal(t *testing.T) {
	e := newEnv(t, func(o *api.Options) { o.Webhooks.Workers = 1; o.Webhooks.QueueSize = 1 })
	release := make(chan struct{})
	var hits atomic.Int32
	ids := sync.Map{}
	rc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		ids.Store(r.Header.Get("X-Flow-Delivery"), true)
		<-release
	}))
	defer rc.Close()
	e.hook(rc.URL+"/h", "job.succeeded")
	for range 4 {
		e.finishJob("p-full")
	}
	waitFor(t, "the first delivery under way", func() bool { return hits.Load() >= 1 })
	close(release)
	waitFor(t, "4 deliveries", func() bool { return e.deliveries("success") >= 4 })
	n := 0
	ids.Range(func(any, any) bool { n++; return true })
	if n != 4 || e.deliveries("dropped") != 0 {
		t.Fatalf("%d distinct deliveries, %v dropped; want 4 and 0", n, e.deliveries("dropped"))
	}
}

// TestVerifyWebhook: the receiver-side check.
func TestVerifyWebhook(t *testing.T) {
	const secret = "whsec_test"
	body := []byte(`{"id":"1","event":"job.succeeded","created_at":"2025-01-01T00:00:00Z","data":{}}`)
	now := time.Unix(1_750_000_000, 0)
	ts := strconv.FormatInt(now.Unix(), 10)
	sig := api.SignWebhook(secret, now.Unix(), body)
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(ts + "." + string(body)))
	if want := "sha256=" + hex.EncodeToString(mac.Sum(nil)); sig != want {
		t.Fatalf("SignWebhook = %s, want %s", sig, want)
	}
	if err := api.VerifyWebhook(secret, ts, sig, body, now.Add(time.Minute), 0); err != nil {
		t.Fatalf("valid delivery: %v", err)
	}
	tampered := []byte(strings.Replace(string(body), "succeeded", "failed", 1))
	for _, c := range []struct {
		name            string
		secret, ts, sig string
		body            []byte
		now             time.Time
		want            error
	}{
		{"tampered body", secret, ts, sig, tampered, now, api.ErrWebhookSignature},
		{"other secret", "whsec_other", ts, sig, body, now, api.ErrWebhookSignature},
		{"bare hex", secret, ts, strings.TrimPrefix(sig, "sha256="), body, now, api.ErrWebhookSignature},
		{"empty signature", secret, ts, "", body, now, api.ErrWebhookSignature},
		{"other timestamp", secret, strconv.FormatInt(now.Unix()+1, 10), sig, body, now, api.ErrWebhookSignature},
		{"stale", secret, ts, sig, body, now.Add(6 * time.Minute), api.ErrWebhookTimestamp},
		{"future", secret, ts, sig, body, now.Add(-6 * time.Minute), api.ErrWebhookTimestamp},
		{"no timestamp", secret, "", sig, body, now, api.ErrWebhookTimestamp},
		{"bad timestamp", secret, "12a", sig, body, now, api.ErrWebhookTimestamp},
	} {
		if err := api.VerifyWebhook(c.secret, c.ts, c.sig, c.body, c.now, 0); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
}

// TestWebhookPostCreated: a new post reaches the webhooks subscribed to
// post.created, once, also when its request is repeated.
func TestWebhookPostCreated(t *testing.T) {
	e := newEnv(t)
	rc := newReceiver(t, false)
	h := e.hook(rc.URL+"/posts", "post.created")
	var ch struct {
		ID string `json:"id"`
	}
	must(t, e.do(req{method: "POST", path: "/api/v1/channels", key: adminKey, body: map[string]any{"name": "news"}}), 201).json(t, &ch)
	post := req{method: "POST", path: "/api/v1/channels/" + ch.ID + "/posts", key: adminKey,
		body: map[string]any{"content": "hello"}, header: map[string]string{"Idempotency-Key": "post-1"}}
	must(t, e.do(post), 201)
	must(t, e.do(post), 201) // a replay: no second event
	e.waitDeliveries("success", 1)
	e.finishJob("p-posts") // not subscribed: nothing more
	got := rc.requests()
	if len(got) != 1 || got[0].header.Get("X-Flow-Event") != "post.created" || !strings.Contains(string(got[0].body), "hello") {
		t.Fatalf("deliveries %v", got)
	}
	verify(t, h.Secret, got[0])
}

// TestWebhookOwnerScope: a webhook belongs to the user of the key that
// created it, as a channel does. Another member's key cannot see, list or
// delete it (404), and a member's webhook gets post.created only for
// posts in channels that user may read: another user's private posts do
// not leak through a webhook. Admin webhooks get every post; job events
// go, like the jobs, only to their owner's webhooks and admin ones.
func TestWebhookOwnerScope(t *testing.T) {
	e := newEnv(t)
	alice, _ := e.newKey("alice", "", "alice")
	bob, _ := e.newKey("bob", "", "bob")
	create := func(key, url string, events ...string) createdHook {
		var h createdHook
		must(t, e.do(req{method: "POST", path: "/api/v1/webhooks", key: key,
			body: map[string]any{"url": url, "events": events}}), 201).json(t, &h)
		return h
	}
	rcAlice, rcBob, rcAdmin := newReceiver(t, false), newReceiver(t, false), newReceiver(t, false)
	hAlice := create(alice, rcAlice.URL, "*")
	hBob := create(bob, rcBob.URL, "*")
	create(adminKey, rcAdmin.URL, "post.created")

	// Bob sees only his own webhook; the admin sees all.
	var l struct {
		Items []api.Webhook `json:"items"`
	}
	must(t, e.do(req{method: "GET", path: "/api/v1/webhooks", key: bob}), 200).json(t, &l)
	if len(l.Items) != 1 || l.Items[0].ID != hBob.ID {
		t.Fatalf("bob lists %+v", l.Items)
	}
	l.Items = nil
	must(t, e.do(req{method: "GET", path: "/api/v1/webhooks", key: adminKey}), 200).json(t, &l)
	if len(l.Items) != 3 {
		t.Fatalf("admin lists %+v", l.Items)
	}
	checkProblem(t, e.do(req{method: "GET", path: "/api/v1/webhooks/" + hAlice.ID, key: bob}), 404)
	checkProblem(t, e.do(req{method: "DELETE", path: "/api/v1/webhooks/" + hAlice.ID, key: bob}), 404)
	must(t, e.do(req{method: "GET", path: "/api/v1/webhooks/" + hAlice.ID, key: alice}), 200)

	// Alice's private post reaches her webhook and the admin's, not Bob's;
	// so does her job's end (the admin's webhook takes only posts).
	ch := e.channel(alice, "private")
	must(t, e.do(req{method: "POST", path: "/api/v1/channels/" + ch.ID + "/posts", key: alice,
		body: map[string]any{"content": "alice's secret plan"}}), 201)
	var wf api.Workflow
	must(t, e.do(req{method: "POST", path: "/api/v1/workflows", key: alice,
		body: map[string]any{"name": "wf", "steps": []any{delay(0)}}}), 201).json(t, &wf)
	var j api.Job
	must(t, e.do(req{method: "POST", path: "/jobs", key: alice, header: map[string]string{"X-Process-ID": "p-scope"},
		body: map[string]any{"workflow_id": wf.ID}}), 201).json(t, &j)
	e.waitJob(j.ID, api.JobSucceeded)
	e.waitDeliveries("success", 3)
	// A stray delivery would be in the events' journal batch with these
	// three: once the journal is empty it has reached its receiver (this
	// waited on a 100 ms sleep, which a loaded machine can outlast).
	e.waitWebhooksIdle()
	if got := e.deliveries("success"); got != 3 {
		t.Fatalf("%v deliveries, want 3", got)
	}
	for _, r := range rcBob.requests() {
		t.Fatalf("bob's webhook got %s: %s", r.header.Get("X-Flow-Event"), r.body)
	}
	if n := len(rcAdmin.requests()); n != 1 {
		t.Fatalf("admin's webhook got %d deliveries, want 1", n)
	}
	if n := len(rcAlice.requests()); n != 2 {
		t.Fatalf("alice's webhook got %d deliveries, want 2", n)
	}
	must(t, e.do(req{method: "DELETE", path: "/api/v1/webhooks/" + hAlice.ID, key: alice}), 204)
}

// serverResolver is a fakeResolver whose failures name the DNS server,
// as the system resolver's do ("lookup h on 10.0.0.10:53: no such host").
type serverResolver struct{ *fakeResolver }

func (r serverResolver) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	addrs, err := r.fakeResolver.LookupNetIP(ctx, network, host)
	var de *net.DNSError
	if errors.As(err, &de) {
		de.Server = "10.0.0.10:53"
	}
	return addrs, err
}

// TestWebhookCreateHidesInternals: refusing a host that resolves inside
// (or does not resolve) does not tell the caller which internal address
// the name has, nor the address of the cluster's DNS server: the API is
// not a probe of the internal network.
func TestWebhookCreateHidesInternals(t *testing.T) {
	res := serverResolver{newResolver(map[string][]string{"db.internal.test": {"10.1.2.3"}})}
	e := newEnv(t, func(o *api.Options) { o.Production = true; o.Resolver = res })
	for _, host := range []string{"db.internal.test", "nxdomain.internal.test"} {
		r := e.do(req{method: "POST", path: "/api/v1/webhooks", key: adminKey,
			body: map[string]any{"url": "https://" + host + "/h", "events": []string{"*"}}})
		p := checkProblem(t, r, 422)
		if d, _ := p["detail"].(string); strings.Contains(d, "10.1.2.3") || strings.Contains(d, "10.0.0.10") || d == "" {
			t.Errorf("%s: detail %q names an internal address", host, d)
		}
	}
}
