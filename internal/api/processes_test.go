package api_test

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/flowedge/flowedge/internal/api"
	"github.com/flowedge/flowedge/internal/partition"
)

func appendReq(pid, rid string, body any) req {
	h := map[string]string{"X-Process-ID": pid}
	if rid != "" {
		h["X-Request-ID"] = rid
	}
	return req{method: "POST", path: "/api/v1/processes/" + pid + "/events", key: adminKey, body: body, header: h}
}

// TestConcurrentAppends: 200 concurrent appends to one process get
// sequence numbers 1..200 with no gap and no duplicate; replaying 50 of
// them (same X-Request-ID) returns the first answers and appends nothing,
// also after a restart.
func TestConcurrentAppends(t *testing.T) {
	e := newEnv(t)
	const n, pid = 200, "proc-concurrent"
	first := make([]resp, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := e.try(appendReq(pid, fmt.Sprintf("rid-%03d", i), map[string]any{"type": "tick", "i": i}))
			if err == nil && r.status != 201 {
				err = fmt.Errorf("append %d: %s", i, r)
			}
			first[i] = r
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	seen := make([]bool, n+1)
	for i, r := range first {
		var ev api.Event
		r.json(t, &ev)
		if ev.Seq < 1 || ev.Seq > n || seen[ev.Seq] {
			t.Fatalf("append %d got seq %d (out of range or duplicate)", i, ev.Seq)
		}
		seen[ev.Seq] = true
	}
	checkLog := func() {
		t.Helper()
		evs := e.events(pid)
		if len(evs) != n {
			t.Fatalf("%d events, want %d", len(evs), n)
		}
		for i, ev := range evs {
			if ev.Seq != uint64(i+1) {
				t.Fatalf("event %d has seq %d", i, ev.Seq)
			}
		}
		var p api.Process
		must(t, e.do(req{method: "GET", path: "/api/v1/processes/" + pid, key: adminKey}), 200).json(t, &p)
		if p.Events != n || p.LastSeq != n || p.LastEventType != "tick" {
			t.Fatalf("summary %+v", p)
		}
	}
	checkLog()

	replay := func() {
		t.Helper()
		var wg sync.WaitGroup
		errs := make(chan error, 50)
		for i := range 50 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r, err := e.try(appendReq(pid, fmt.Sprintf("rid-%03d", i), map[string]any{"type": "tick", "i": i}))
				switch {
				case err != nil:
				case r.status != first[i].status || !bytes.Equal(r.body, first[i].body):
					err = fmt.Errorf("replay %d: got %s, first answer was %s", i, r, first[i])
				case r.header.Get("Idempotent-Replayed") != "true":
					err = fmt.Errorf("replay %d: no Idempotent-Replayed header", i)
				}
				errs <- err
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	replay()
	checkLog()
	e.restart()
	replay()
	checkLog()
}

// TestIdempotencyKey: Idempotency-Key dedupes like X-Request-ID; reusing
// it for another body is a 422; keys are scoped to the API key.
func TestIdempotencyKey(t *testing.T) {
	e := newEnv(t)
	const pid = "proc-idem"
	r1 := appendReq(pid, "", map[string]any{"v": 1})
	r1.header["Idempotency-Key"] = "order-42"
	a := must(t, e.do(r1), 201)
	b := must(t, e.do(r1), 201)
	if !bytes.Equal(a.body, b.body) || b.header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("repeat answered %s, first %s", b, a)
	}
	// Edge retries carry both headers: a new X-Request-ID with a seen
	// Idempotency-Key is still a repeat.
	r1.header["X-Request-ID"] = "another-delivery"
	must(t, e.do(r1), 201)

	other := appendReq(pid, "", map[string]any{"v": 2})
	other.header["Idempotency-Key"] = "order-42"
	checkProblem(t, e.do(other), 422)

	// The same Idempotency-Key under another API key is another request.
	var k struct{ Key string }
	must(t, e.do(req{method: "POST", path: "/api/v1/keys", key: adminKey, body: map[string]any{"name": "second"}}), 201).json(t, &k)
	r2 := appendReq(pid, "", map[string]any{"v": 1})
	r2.key = k.Key
	r2.header["Idempotency-Key"] = "order-42"
	var ev api.Event
	must(t, e.do(r2), 201).json(t, &ev)
	if ev.Seq != 2 {
		t.Fatalf("seq %d, want 2", ev.Seq)
	}
	if n := len(e.events(pid)); n != 2 {
		t.Fatalf("%d events, want 2", n)
	}
	bad := appendReq(pid, "", map[string]any{"v": 3})
	bad.header["Idempotency-Key"] = "tab\there"
	checkProblem(t, e.do(bad), 400)
}

// TestEvents covers the event log's reads: paging, one event, the
// summary, 404s and body validation.
func TestEvents(t *testing.T) {
	e := newEnv(t)
	const pid = "proc-events"
	checkProblem(t, e.do(req{method: "GET", path: "/api/v1/processes/" + pid, key: adminKey}), 404)
	checkProblem(t, e.do(req{method: "GET", path: "/api/v1/processes/" + pid + "/events", key: adminKey}), 404)
	for i := range 5 {
		r := must(t, e.do(appendReq(pid, "", fmt.Sprintf(`{ "type": "n", "i": %d }`, i))), 201)
		if loc := r.header.Get("Location"); loc != "/api/v1/processes/"+pid+"/events/"+strconv.Itoa(i+1) {
			t.Fatalf("Location %q", loc)
		}
	}
	must(t, e.do(appendReq(pid, "", `[1,2,3]`)), 201) // any JSON document
	checkProblem(t, e.do(appendReq(pid, "", `{"broken"`)), 400)
	checkProblem(t, e.do(appendReq(pid, "", ``)), 400)

	var page struct {
		Items      []api.Event `json:"items"`
		NextCursor string      `json:"next_cursor"`
	}
	must(t, e.do(req{method: "GET", path: "/api/v1/processes/" + pid + "/events?limit=4", key: adminKey}), 200).json(t, &page)
	if len(page.Items) != 4 || page.NextCursor != "4" || page.Items[0].Seq != 1 {
		t.Fatalf("page 1: %+v", page)
	}
	page.NextCursor = ""
	must(t, e.do(req{method: "GET", path: "/api/v1/processes/" + pid + "/events?limit=4&cursor=4", key: adminKey}), 200).json(t, &page)
	if len(page.Items) != 2 || page.NextCursor != "" || page.Items[0].Seq != 5 || string(page.Items[1].Data) != "[1,2,3]" {
		t.Fatalf("page 2: %+v", page)
	}
	var ev api.Event
	must(t, e.do(req{method: "GET", path: "/api/v1/processes/" + pid + "/events/3", key: adminKey}), 200).json(t, &ev)
	if ev.Seq != 3 || ev.Type != "n" || string(ev.Data) != `{"type":"n","i":2}` {
		t.Fatalf("event 3: %+v", ev)
	}
	checkProblem(t, e.do(req{method: "GET", path: "/api/v1/processes/" + pid + "/events/99", key: adminKey}), 404)
	checkProblem(t, e.do(req{method: "GET", path: "/api/v1/processes/" + pid + "/events?limit=0", key: adminKey}), 400)

	var procs struct {
		Items []api.Process `json:"items"`
	}
	must(t, e.do(req{method: "GET", path: "/api/v1/processes", key: adminKey}), 200).json(t, &procs)
	if len(procs.Items) != 1 || procs.Items[0].ID != pid || procs.Items[0].Events != 6 {
		t.Fatalf("processes: %+v", procs)
	}
}

// ownedBy returns a process id that partition p of n owns.
func ownedBy(t *testing.T, p, n int) string {
	t.Helper()
	for i := range 10000 {
		k := fmt.Sprintf("proc-%d", i)
		if partition.OfString(k, n) == p {
			return k
		}
	}
	t.Fatalf("no key for partition %d", p)
	return ""
}

// TestOwnership: partition 1 of 3 answers 421 (naming the owner) for
// processes it does not own — by X-Process-ID, by path and by
// ?process_id= — and serves those it owns.
func TestOwnership(t *testing.T) {
	e := newEnv(t, func(o *api.Options) { o.Partition, o.Partitions = 1, 3 })
	mine, foreign := ownedBy(t, 1, 3), ownedBy(t, 2, 3)

	p := checkProblem(t, e.do(appendReq(foreign, "", map[string]any{"a": 1})), 421)
	if p["owner"] != float64(2) || p["partition"] != float64(1) || p["partitions"] != float64(3) || p["type"] != "urn:flowedge:problem:misdirected" {
		t.Fatalf("421 problem: %v", p)
	}
	// Refused before authentication: a misrouted request is a routing error.
	p = checkProblem(t, e.do(req{method: "GET", path: "/api/v1/apps", header: map[string]string{"X-Process-ID": foreign}}), 421)
	if p["owner"] != float64(2) {
		t.Fatalf("421 problem: %v", p)
	}
	checkProblem(t, e.do(req{method: "GET", path: "/api/v1/processes/" + foreign, key: adminKey}), 421)
	checkProblem(t, e.do(req{method: "GET", path: "/jobs?process_id=" + foreign, key: adminKey}), 421)

	must(t, e.do(appendReq(mine, "", map[string]any{"a": 1})), 201)
	must(t, e.do(req{method: "GET", path: "/api/v1/apps", key: adminKey, header: map[string]string{"X-Process-ID": mine}}), 200)

	// The path and X-Process-ID must agree.
	r := appendReq(mine, "", map[string]any{"a": 1})
	other := ownedBy(t, 1, 3)
	for i := 0; other == mine; i++ {
		other = fmt.Sprintf("%s-%d", mine, i)
		if partition.OfString(other, 3) != 1 {
			other = mine
		}
	}
	r.header["X-Process-ID"] = other
	checkProblem(t, e.do(r), 400)
	// Health and metrics never check ownership.
	ready := e.do(req{method: "GET", path: "/health/readiness", header: map[string]string{"X-Process-ID": foreign}})
	must(t, ready, 200)
	// The readiness answer claims the partition, so an edge can check its order.
	if got := ready.header.Get("X-Partition"); got != "1/3" {
		t.Fatalf("readiness X-Partition %q, want 1/3", got)
	}
}

// TestLargeEvents: events near the 1 MiB body limit, several at once (too
// big to share one transaction), are appended and replayed like small ones.
func TestLargeEvents(t *testing.T) {
	e := newEnv(t)
	big := `{"type":"blob","data":"` + strings.Repeat("z", api.MaxBodyBytes-100) + `"}`
	var wg sync.WaitGroup
	errs := make(chan error, 6)
	for i := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := e.try(appendReq("proc-big", fmt.Sprintf("big-%d", i), big))
			if err == nil && r.status != 201 {
				err = fmt.Errorf("append %d: %s", i, r.String()[:200])
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	r := must(t, e.do(appendReq("proc-big", "big-3", big)), 201)
	if r.header.Get("Idempotent-Replayed") != "true" {
		t.Fatal("no replay")
	}
	var p api.Process
	must(t, e.do(req{method: "GET", path: "/api/v1/processes/proc-big", key: adminKey}), 200).json(t, &p)
	if p.Events != 6 {
		t.Fatalf("%d events", p.Events)
	}
}
