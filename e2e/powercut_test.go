package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/flowedge/flowedge/internal/faultfs"
	"github.com/flowedge/flowedge/internal/partition"
)

// TestPowerCut runs the real edge with its queue on a faultfs mount (a
// filesystem that forgets what was not fsynced) under concurrent load in
// accept mode, cuts the power 5 times at random moments and restarts the
// edge on what survived each time. One of the three backends is down
// during the cuts, so that each cut hits a backlog of acknowledged
// requests as well as deliveries in flight. Every request whose client got a 2xx
// with X-Delivery-ID must reach the backends, which dedupe by
// X-Request-ID, exactly once.
//
// A cut is: freeze the filesystem (nothing more reaches the "disk"),
// SIGKILL the edge, abort the FUSE connection and put the durable state in
// place. Freezing first means the edge cannot make anything durable after
// the moment of the cut, however long the kill takes.
//
// The subtest fsync-off runs the same with `[buffer] fsync = false` and
// requires that acknowledged requests are lost: it proves the harness sees
// a broken sync. The subtests frozen-disk and throttled-at-cut stop the
// disk under a running edge (see runFrozenDisk and runThrottledAtCut).
func TestPowerCut(t *testing.T) {
	if testing.Short() {
		t.Skip("the power-cut test builds the edge binary and runs it on a FUSE mount for about half a minute; it runs without -short (make test)")
	}
	if err := faultfs.Available(); err != nil {
		t.Skipf("skipping the power-cut test: %v", err)
	}
	bins := buildBinaries(t, t.TempDir())
	t.Run("fsync-on", func(t *testing.T) {
		f := runPowerCuts(t, bins, true)
		f.requireIntact(t)
	})
	t.Run("frozen-disk", func(t *testing.T) { runFrozenDisk(t, bins) })
	t.Run("throttled-at-cut", func(t *testing.T) { runThrottledAtCut(t, bins) })
	t.Run("fsync-off", func(t *testing.T) {
		f := runPowerCuts(t, bins, false)
		if f.lost == 0 {
			t.Errorf("with fsync = false no acknowledged request was lost over %d power cuts: the harness cannot see a broken sync\n%s", powerCuts, f.line())
		}
	})
}

// powerCuts is how many times each run cuts the power.
const powerCuts = 5

// runPowerCuts runs the load against an edge on a faultfs mount, cuts the
// power powerCuts times, lets the last edge drain its queue and measures
// what the backends received.
func runPowerCuts(t *testing.T, bins binaries, fsync bool) figures {
	began := time.Now()
	rec := newDeliveryRecorder()
	pc := startPowerCutEdge(t, bins, rec, fsync, "accept")

	// Backend 1 is down during the cuts, so that at each cut a backlog of
	// acknowledged requests is queued (the others flow, with attempts in
	// flight); it comes back after the last restart.
	rec.down[1].Store(true)
	l := startLoad("http://"+pc.public, loadOptions{procs: processIDs("cut", 400), perProc: 1000, workers: 48})
	t.Cleanup(l.stopNow)
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 0))
	var at, queued []string
	for range powerCuts {
		// A random moment: after a random number (300–2,000) of further
		// acknowledgements, so every cut falls in the middle of the load.
		waitAcked(t, l, l.ackedCount()+300+rng.IntN(1700))
		queued = append(queued, strconv.Itoa(pc.queued())) // a moment before the cut
		pc.fs.Freeze()
		at = append(at, strconv.Itoa(l.ackedCount()))
		pc.cutAndRestart()
	}
	// The last edge serves on for a while, then the clients stop and it
	// drains.
	waitAcked(t, l, l.ackedCount()+500)
	l.stopAndWait()
	rec.down[1].Store(false)
	drainStart := time.Now()
	waitFor(t, drainTimeout, "the edge to drain its queue (GET /edge/v1/partitions: queued = in_flight = 0)", pc.settled)
	drain := time.Since(drainStart)

	name := "powercut-x5"
	if !fsync {
		name = "powercut-x5-fsync-off"
	}
	f := rec.measure(name, l)
	f.add("cuts_at_acked", strings.Join(at, ","))
	f.add("queued_before_cuts", strings.Join(queued, ","))
	f.add("fs_syncs", pc.syncs+pc.fs.Stats().Fsyncs)
	f.add("drain", drain.Round(10*time.Millisecond))
	f.add("duration", time.Since(began).Round(100*time.Millisecond))
	f.report(t)
	return f
}

// runFrozenDisk stops the disk under a running edge, as a failing disk
// does: from then on every write and sync fails. The edge goes on serving.
// The requests sent then must be refused with 503, none of them may reach a
// backend, and the edge's liveness must ask for a restart. After the cut
// and a restart, the clients' retries with the same Idempotency-Key are
// delivered exactly once each.
//
// Regression (fsync-on saw 4 requests stored twice in CI): the queue
// advanced its durable marks after a failed sync and delivered the records
// it had refused with 503; their clients' retries, stored again after the
// restart, reached the backends a second time.
func runFrozenDisk(t *testing.T, bins binaries) {
	rec := newDeliveryRecorder()
	pc := startPowerCutEdge(t, bins, rec, true, "accept")
	type event struct{ pid, rid string }
	events := make([]event, 20)
	for i := range events {
		events[i] = event{pid: fmt.Sprintf("frozen-%d", i), rid: fmt.Sprintf("frozen-rid-%d", i)}
	}
	send := func(ev event) (int, http.Header, string) {
		t.Helper()
		return pc.postEvent(ev.pid, ev.rid, ev.rid, 0)
	}
	effects := func(evs []event) int {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		n := 0
		for _, ev := range evs {
			n += len(rec.effects[ev.rid])
		}
		return n
	}
	before, during := events[:10], events[10:]
	for _, ev := range before {
		if code, _, body := send(ev); code != http.StatusAccepted {
			t.Fatalf("before the freeze: %d %s, want 202", code, body)
		}
	}
	waitFor(t, 30*time.Second, "the requests acknowledged before the freeze at the backends", func() bool {
		return effects(before) == len(before)
	})

	pc.fs.Freeze()
	for _, ev := range during {
		code, hdr, body := send(ev)
		if code != http.StatusServiceUnavailable || hdr.Get("Retry-After") == "" {
			t.Fatalf("sent while the disk was frozen: %d (Retry-After %q) %s, want 503 with Retry-After", code, hdr.Get("Retry-After"), body)
		}
	}
	waitFor(t, 10*time.Second, "GET /health/liveness to ask for a restart (503)", func() bool {
		return pc.status("/health/liveness") == http.StatusServiceUnavailable
	})
	if code := pc.status("/health/readiness"); code != http.StatusServiceUnavailable {
		t.Errorf("GET /health/readiness with the disk frozen: %d, want 503", code)
	}
	// That nothing comes can only be watched for a while: a second, in
	// which the edge delivers a stored record many times over.
	for end := time.Now().Add(time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if n := effects(during); n > 0 {
			t.Fatalf("%d of the requests refused with 503 reached a backend", n)
		}
	}

	pc.cutAndRestart()
	for _, ev := range during {
		if code, _, body := send(ev); code != http.StatusAccepted {
			t.Fatalf("retried after the restart: %d %s, want 202", code, body)
		}
	}
	waitFor(t, drainTimeout, "the edge to drain its queue (GET /edge/v1/partitions: queued = in_flight = 0)", pc.settled)
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for _, ev := range events {
		if n := len(rec.effects[ev.rid]); n != 1 {
			t.Errorf("request %s took effect %d times, want once", ev.rid, n)
		}
	}
}

// postEvent sends an event of the recorder's shape (with idemKey as its
// Idempotency-Key, none if empty; pad bytes of padding) and returns the
// answer.
func (pc *powerCutEdge) postEvent(pid, rid, idemKey string, pad int) (int, http.Header, string) {
	pc.t.Helper()
	code, hdr, body, err := pc.tryPostEvent(pid, rid, idemKey, pad)
	if err != nil {
		pc.t.Fatal(err)
	}
	return code, hdr, body
}

// tryPostEvent is postEvent returning the error instead of failing the
// test (for goroutines other than the test's).
func (pc *powerCutEdge) tryPostEvent(pid, rid, idemKey string, pad int) (int, http.Header, string, error) {
	body := fmt.Sprintf(`{"type":"e2e","pid":%q,"seq":1,"rid":%q,"pad":%q}`, pid, rid, strings.Repeat("x", pad))
	req, err := http.NewRequest(http.MethodPost, "http://"+pc.public+"/api/v1/processes/"+pid+"/events", strings.NewReader(body))
	if err != nil {
		return 0, nil, "", err
	}
	req.Header = http.Header{"Content-Type": {"application/json"}, "X-Process-Id": {pid}}
	if idemKey != "" {
		req.Header.Set("Idempotency-Key", idemKey)
	}
	resp, err := pc.client.Do(req)
	if err != nil {
		return 0, nil, "", fmt.Errorf("POST %s: %w", req.URL, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b), nil
}

// runThrottledAtCut: in relay mode a backend answers 429 to a request
// whose client waits, and the disk stops at that moment, before the edge
// can write that it dropped the record. The client must not be told 429
// (nothing applied) but 503 (it may still be delivered): after the cut and
// a restart the record is delivered, exactly once.
//
// Regression: the edge handed the 429 to the client first and wrote the
// drop without a sync, so a power cut brought the record back and it was
// delivered though its client had been told 429; a retry would then have
// applied it twice.
func runThrottledAtCut(t *testing.T, bins binaries) {
	rec := newDeliveryRecorder()
	var pc *powerCutEdge
	var throttled atomic.Bool
	rec.before = func(rid string) int {
		if rid == "throttled" && throttled.CompareAndSwap(false, true) {
			pc.fs.Freeze() // the cut comes before the edge hears the 429
			return http.StatusTooManyRequests
		}
		return 0
	}
	pc = startPowerCutEdge(t, bins, rec, true, "relay")
	code, hdr, body := pc.postEvent("throttled-pid", "throttled", "", 0)
	if !throttled.Load() {
		t.Fatalf("the backend never throttled the request (answer %d %s)", code, body)
	}
	if code == http.StatusTooManyRequests {
		t.Fatalf("the client was told 429 (nothing applied) though the drop could not be stored: %s", body)
	}
	if code != http.StatusServiceUnavailable || hdr.Get("Retry-After") == "" {
		t.Errorf("answer %d (Retry-After %q) %s, want 503 with Retry-After: the request may still be delivered", code, hdr.Get("Retry-After"), body)
	}
	pc.cutAndRestart()
	waitFor(t, drainTimeout, "the edge to drain its queue (GET /edge/v1/partitions: queued = in_flight = 0)", pc.settled)
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if n := len(rec.effects["throttled"]); n != 1 {
		t.Errorf("the request answered %d took effect %d times, want once", code, n)
	}
}

// cutAndRestart cuts the power: it freezes the disk (if the caller has
// not), SIGKILLs the edge, keeps only what was synced, then mounts what
// survived and starts a new edge on it.
func (pc *powerCutEdge) cutAndRestart() {
	pc.t.Helper()
	pc.fs.Freeze()
	pc.edge.signal(pc.t, syscall.SIGKILL)
	if err := pc.fs.Cut(); err != nil {
		pc.t.Fatal(err)
	}
	pc.edge.wait(pc.t, 10*time.Second)
	pc.mount()
	pc.start()
}

// status is the code of GET path on the edge's admin address.
func (pc *powerCutEdge) status(path string) int {
	pc.t.Helper()
	resp, err := pc.client.Get("http://" + pc.admin + path)
	if err != nil {
		pc.t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

// startPowerCutEdge starts the recorder's backends and an edge whose queue
// is on a faultfs mount.
func startPowerCutEdge(t *testing.T, bins binaries, rec *deliveryRecorder, fsync bool, respond string) *powerCutEdge {
	pc := newPowerCutEdge(t, bins, rec, fsync, respond)
	pc.mount()
	pc.start()
	return pc
}

// newPowerCutEdge starts the recorder's backends and readies an edge's
// directories (the queue goes under mnt), mounting and starting nothing.
func newPowerCutEdge(t *testing.T, bins binaries, rec *deliveryRecorder, fsync bool, respond string) *powerCutEdge {
	dir := t.TempDir()
	var urls []string
	for n := range partitions {
		srv := httptest.NewServer(rec.handler(n))
		t.Cleanup(srv.Close)
		urls = append(urls, strconv.Quote(srv.URL))
	}
	pc := &powerCutEdge{t: t, bins: bins, dir: dir, backing: filepath.Join(dir, "disk"), mnt: filepath.Join(dir, "mnt"),
		fsync: fsync, respond: respond, urls: strings.Join(urls, ", "), client: &http.Client{Timeout: 30 * time.Second}}
	for _, d := range []string{pc.backing, pc.mnt} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		if t.Failed() && pc.edge != nil {
			t.Logf("edge (last lines of %s):\n%s", pc.logPath(), pc.edge.logTail())
		}
	})
	return pc
}

// powerCutEdge is the edge process on a faultfs mount of a backing dir.
type powerCutEdge struct {
	t                       *testing.T
	bins                    binaries
	dir, backing, mnt, urls string
	fsync                   bool
	respond                 string // [server] respond
	fs                      *faultfs.FS
	edge                    *proc
	public, admin           string // fixed after the first start
	client                  *http.Client
	syncs                   int64 // FSYNC requests the edges made on the mounts before the current one
}

func (pc *powerCutEdge) logPath() string { return filepath.Join(pc.dir, "edge.log") }

// mount mounts the backing dir (what survived the last cut) on mnt.
func (pc *powerCutEdge) mount() {
	pc.t.Helper()
	if pc.fs != nil {
		pc.syncs += pc.fs.Stats().Fsyncs
	}
	f, err := faultfs.Mount(pc.backing, pc.mnt)
	if err != nil {
		pc.t.Fatal(err)
	}
	pc.t.Cleanup(func() {
		if err := f.Close(); err != nil {
			pc.t.Errorf("faultfs: %v", err)
		}
	})
	pc.fs = f
}

// start writes the edge's config (free ports the first time, the same
// ports after) and starts it.
func (pc *powerCutEdge) start() {
	pc.t.Helper()
	if pc.public == "" {
		pc.public, pc.admin = freeAddr(pc.t), freeAddr(pc.t)
	}
	cfg := fmt.Sprintf(`# written by the e2e power-cut test
[server]
address = %q
respond = %q
relay_timeout = "20s"
shutdown_timeout = "5s"

[admin]
address = %q

[partition]
count = %d

[backends]
urls = [%s]
probe_interval = "200ms"
timeout = "2s"
breaker_cooldown = "1s"

[buffer]
path = %q
fsync = %t

[retry]
initial_backoff = "50ms"
max_backoff = "500ms"

[log]
level = "info"
format = "json"
`, pc.public, pc.respond, pc.admin, partitions, pc.urls, filepath.Join(pc.mnt, "queue"), pc.fsync)
	path := filepath.Join(pc.dir, "edge.toml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		pc.t.Fatal(err)
	}
	var line struct{ Msg, Public, Admin string }
	ready := func(b []byte) bool { return json.Unmarshal(b, &line) == nil && line.Msg == "edge started" }
	pc.edge = startProc(pc.t, "edge", pc.logPath(), nil, ready, 30*time.Second, pc.bins.edge, "run", "-config", path)
	pc.public, pc.admin = line.Public, line.Admin
}

// settled tells whether the edge holds no record and has no attempt in
// flight.
func (pc *powerCutEdge) settled() bool {
	for _, p := range pc.partitions() {
		if p.Queued+p.InFlight > 0 {
			return false
		}
	}
	return true
}

// queued is the number of records the edge holds, those in flight
// included.
func (pc *powerCutEdge) queued() int {
	n := 0
	for _, p := range pc.partitions() {
		n += p.Queued
	}
	return n
}

func (pc *powerCutEdge) partitions() []partitionView {
	pc.t.Helper()
	resp, err := pc.client.Get("http://" + pc.admin + "/edge/v1/partitions")
	if err != nil {
		pc.t.Fatalf("GET /edge/v1/partitions: %v", err)
	}
	defer resp.Body.Close()
	var v struct {
		Partitions []partitionView `json:"partitions"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil || resp.StatusCode != http.StatusOK {
		pc.t.Fatalf("GET /edge/v1/partitions: %d %v", resp.StatusCode, err)
	}
	return v.Partitions
}

// deliveryRecorder is the backends' side: it dedupes deliveries by
// X-Request-ID (the edge's delivery id), as a backend with exactly-once
// effects does, and records each effect.
type deliveryRecorder struct {
	down [partitions]atomic.Bool // backend n answers 503 to everything, its readiness probe included
	// before, if set before the backends start, sees each delivery's rid
	// first: a status other than 0 is the answer, and nothing takes effect.
	before func(rid string) int

	mu       sync.Mutex
	seen     map[string]bool   // X-Request-IDs that took effect
	effects  map[string][]int  // the client's request id (the body's "rid") → backends where it took effect
	idOf     map[string]string // the client's request id → the X-Request-ID it took effect under
	order    map[string][]int  // process id → its events' seq, in effect order
	attempts int               // deliveries received, repeats included
}

func newDeliveryRecorder() *deliveryRecorder {
	return &deliveryRecorder{seen: map[string]bool{}, effects: map[string][]int{}, idOf: map[string]string{},
		order: map[string][]int{}}
}

// handler is backend n: 200 to the edge's readiness probe, 201 to a
// delivery.
func (rec *deliveryRecorder) handler(n int) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if rec.down[n].Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		if r.URL.Path == "/health/readiness" {
			w.WriteHeader(http.StatusOK)
			return
		}
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		var ev struct {
			PID string `json:"pid"`
			Seq int    `json:"seq"`
			RID string `json:"rid"`
		}
		if err := json.Unmarshal(body, &ev); err != nil || ev.RID == "" {
			http.Error(w, fmt.Sprintf("not an event of the load: %v %q", err, body), http.StatusBadRequest)
			return
		}
		if rec.before != nil {
			if code := rec.before(ev.RID); code != 0 {
				http.Error(w, "refused by the test", code)
				return
			}
		}
		id := r.Header.Get("X-Request-ID")
		rec.mu.Lock()
		rec.attempts++
		if id != "" && !rec.seen[id] {
			rec.seen[id] = true
			rec.effects[ev.RID] = append(rec.effects[ev.RID], n)
			rec.idOf[ev.RID] = id
			rec.order[ev.PID] = append(rec.order[ev.PID], ev.Seq)
		}
		rec.mu.Unlock()
		w.WriteHeader(http.StatusCreated)
	})
}

// measure compares what the clients were told with what took effect.
// Call it after the load is done and the edge has drained.
func (rec *deliveryRecorder) measure(name string, l *load) figures {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	st := l.stats()
	f := figures{scenario: name, sent: st.sent, acknowledged: st.acked}
	otherID := 0
	misplaced := map[string]bool{}
	l.mu.Lock()
	for _, p := range l.procs {
		owner := partition.OfString(p.pid, partitions)
		for _, r := range p.reqs {
			on := rec.effects[r.rid]
			if len(on) > 0 {
				f.delivered++
			}
			if len(on) > 1 {
				f.duplicates += len(on) - 1
			}
			for _, n := range on {
				if n != owner {
					misplaced[p.pid] = true
				}
			}
			if r.acked && len(on) == 0 {
				f.lost++
			}
			if r.acked && len(on) > 0 && rec.idOf[r.rid] != r.deliveryID {
				otherID++
			}
		}
		maxSeq := 0
		for _, seq := range rec.order[p.pid] {
			f.maxReorder = max(f.maxReorder, maxSeq-seq)
			maxSeq = max(maxSeq, seq)
		}
	}
	l.mu.Unlock()
	f.misplaced = len(misplaced)
	f.add("backend_attempts", rec.attempts)
	f.add("delivered_under_other_id", otherID)
	f.add("client_attempts", st.attempts)
	f.add("gave_up", st.gaveUp)
	return f
}
