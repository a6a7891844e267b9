package e2e

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
)

// figures are one scenario's results, measured at the backends.
type figures struct {
	scenario string
	// sent: distinct requests the clients made (a repeat of a request with
	// the same Idempotency-Key is the same request).
	sent int
	// acknowledged: requests the edge answered 2xx (stored on its disk).
	acknowledged int
	// delivered: distinct requests found in the backends' event logs (may
	// exceed acknowledged by requests the edge stored but could not answer,
	// e.g. killed between its fsync and its answer).
	delivered int
	// duplicates: events stored more than once for one request (by the
	// body's "rid" = the request's Idempotency-Key and X-Request-ID).
	duplicates int
	// lost: acknowledged requests (plus those the scenario replayed from
	// the dead letters) missing from the owning backend's log once the
	// edge has drained.
	lost int
	// maxReorder: the largest number of sequence numbers by which an event
	// came after a later event of its process in the backend's log; 0 when
	// every process's log is in the order the edge accepted its requests.
	maxReorder int
	// misplaced: processes with events on a backend other than the one
	// `edge route` names.
	misplaced int
	extra     []string // "name=value", in order
}

func (f *figures) add(name string, value any) {
	f.extra = append(f.extra, fmt.Sprintf("%s=%v", name, value))
}

func (f figures) line() string {
	s := fmt.Sprintf("scenario=%s sent=%d acknowledged=%d delivered=%d duplicates=%d lost=%d max_reorder=%d misplaced=%d",
		f.scenario, f.sent, f.acknowledged, f.delivered, f.duplicates, f.lost, f.maxReorder, f.misplaced)
	if len(f.extra) > 0 {
		s += " " + strings.Join(f.extra, " ")
	}
	return s
}

// report logs the figures line and, with FLOWEDGE_E2E_REPORT set, appends
// it to that file.
func (f figures) report(t *testing.T) {
	t.Helper()
	t.Log(f.line())
	path := os.Getenv("FLOWEDGE_E2E_REPORT")
	if path == "" {
		return
	}
	file, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Errorf("FLOWEDGE_E2E_REPORT: %v", err)
		return
	}
	defer file.Close()
	if _, err := fmt.Fprintln(file, f.line()); err != nil {
		t.Errorf("FLOWEDGE_E2E_REPORT: %v", err)
	}
}

// requireIntact fails the test unless nothing acknowledged was lost,
// nothing took effect twice, every process kept its order and stayed on
// its backend.
func (f figures) requireIntact(t *testing.T) {
	t.Helper()
	if f.lost != 0 || f.duplicates != 0 || f.maxReorder != 0 || f.misplaced != 0 {
		t.Errorf("guarantee broken: lost=%d duplicates=%d max_reorder=%d misplaced=%d (want all 0)\n%s",
			f.lost, f.duplicates, f.maxReorder, f.misplaced, f.line())
	}
	if f.acknowledged == 0 {
		t.Errorf("nothing was acknowledged: the scenario tested nothing\n%s", f.line())
	}
}

// storedEvent is an event of api-flow's log, with the body the load sent.
type storedEvent struct {
	ProcessID string `json:"process_id"`
	Seq       uint64 `json:"seq"`
	Data      struct {
		PID string `json:"pid"`
		Seq int    `json:"seq"`
		RID string `json:"rid"`
	} `json:"data"`
}

// events reads process pid's whole event log from backend n, directly (not
// through the edge). A process the backend has never seen has none.
func (s *stack) events(n int, pid string) ([]storedEvent, error) {
	var all []storedEvent
	cursor := ""
	for range 1000 {
		u := s.backends[n].url() + "/api/v1/processes/" + url.PathEscape(pid) + "/events?limit=1000"
		if cursor != "" {
			u += "&cursor=" + cursor
		}
		var page struct {
			Items      []storedEvent `json:"items"`
			NextCursor string        `json:"next_cursor"`
		}
		code, err := s.fetchJSON(u, pid, &page)
		switch {
		case err != nil:
			return nil, err
		case code == 404:
			return all, nil
		case code != 200:
			return nil, fmt.Errorf("GET %s: %d", u, code)
		}
		all = append(all, page.Items...)
		if page.NextCursor == "" {
			return all, nil
		}
		cursor = page.NextCursor
	}
	return nil, fmt.Errorf("%s: more than 1000 pages of events", pid)
}

// processesOn lists the process ids backend n holds.
func (s *stack) processesOn(n int) []string {
	s.t.Helper()
	var ids []string
	cursor := ""
	for range 1000 {
		u := s.backends[n].url() + "/api/v1/processes?limit=1000"
		if cursor != "" {
			u += "&cursor=" + url.QueryEscape(cursor)
		}
		var page struct {
			Items []struct {
				ID string `json:"id"`
			} `json:"items"`
			NextCursor string `json:"next_cursor"`
		}
		if code := s.getJSON(u, "", &page); code != 200 {
			s.t.Fatalf("GET %s: %d", u, code)
		}
		for _, it := range page.Items {
			ids = append(ids, it.ID)
		}
		if page.NextCursor == "" {
			return ids
		}
		cursor = page.NextCursor
	}
	s.t.Fatal("more than 1000 pages of processes")
	return nil
}

// measure reads every process's log from its owning backend (as `edge
// route` names it) and compares it with what the clients sent and the edge
// acknowledged. alsoOwed are request ids that must be delivered although
// the client was not acknowledged (e.g. replayed dead letters). Call it
// after the load is done and the edge has drained.
func (s *stack) measure(name string, l *load, alsoOwed map[string]bool) figures {
	s.t.Helper()
	st := l.stats()
	f := figures{scenario: name, sent: st.sent, acknowledged: st.acked}
	pids := make([]string, len(l.procs))
	for i, p := range l.procs {
		pids[i] = p.pid
	}
	owner := s.route(pids)

	// Misplaced: a process of this load listed by a backend that does not own it.
	ours := make(map[string]bool, len(pids))
	for _, pid := range pids {
		ours[pid] = true
	}
	misplaced := map[string]bool{}
	for n := range s.backends {
		for _, pid := range s.processesOn(n) {
			if ours[pid] && owner[pid] != n {
				misplaced[pid] = true
			}
		}
	}
	f.misplaced = len(misplaced)

	// Read the logs, 8 at a time.
	logs := make([][]storedEvent, len(l.procs))
	errs := make([]error, len(l.procs))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i, p := range l.procs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			logs[i], errs[i] = s.events(owner[p.pid], p.pid)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		s.t.Fatalf("reading the event logs: %v", err)
	}

	perBackend := make([]string, len(s.backends))
	for n := range perBackend {
		count := 0
		for i, p := range l.procs {
			if owner[p.pid] == n {
				count += len(logs[i])
			}
		}
		perBackend[n] = fmt.Sprint(count)
	}
	var examples []string
	note := func(format string, args ...any) {
		if len(examples) < 10 {
			examples = append(examples, fmt.Sprintf(format, args...))
		}
	}
	for i, p := range l.procs {
		seen := map[string]int{}
		maxSeq := 0
		for _, ev := range logs[i] {
			if ev.ProcessID != p.pid || ev.Data.PID != p.pid {
				note("%s: event %d belongs to %q (body %q)", p.pid, ev.Seq, ev.ProcessID, ev.Data.PID)
				f.misplaced++
				continue
			}
			seen[ev.Data.RID]++
			if seen[ev.Data.RID] > 1 {
				f.duplicates++
				note("%s: request #%d (%s) stored %d times", p.pid, ev.Data.Seq, ev.Data.RID, seen[ev.Data.RID])
				continue
			}
			f.delivered++
			if d := maxSeq - ev.Data.Seq; d > 0 {
				f.maxReorder = max(f.maxReorder, d)
				note("%s: request #%d stored after #%d", p.pid, ev.Data.Seq, maxSeq)
			}
			maxSeq = max(maxSeq, ev.Data.Seq)
		}
		for _, r := range p.reqs {
			if (r.acked || alsoOwed[r.rid]) && seen[r.rid] == 0 {
				f.lost++
				note("%s: request #%d (%s, delivery %s, %d tries, last answer %d) acknowledged but not at api-flow-%d",
					p.pid, r.seq, r.rid, r.deliveryID, r.tries, r.lastCode, owner[p.pid])
			}
		}
	}
	for pid := range misplaced {
		note("%s: listed by a backend other than api-flow-%d", pid, owner[pid])
	}
	slices.Sort(examples)
	if len(examples) > 0 {
		s.t.Logf("%s: first findings:\n  %s", name, strings.Join(examples, "\n  "))
	}
	f.add("events_per_backend", strings.Join(perBackend, "/"))
	if st.replayed > 0 {
		f.add("replayed_answers", st.replayed)
	}
	f.add("edge_failed_attempts", s.failedAttempts())
	f.add("backend_dedupes", s.backendDedupes())
	f.add("attempts", st.attempts)
	for _, c := range []int{201, 202, 503} {
		if st.codes[c] > 0 {
			f.add(fmt.Sprintf("answers_%d", c), st.codes[c])
		}
	}
	if st.codes[0] > 0 {
		f.add("conn_errors", st.codes[0])
	}
	var others []string
	for c, n := range st.codes {
		if c != 0 && c != 201 && c != 202 && c != 503 {
			others = append(others, fmt.Sprintf("%d:%d", c, n))
		}
	}
	if len(others) > 0 {
		slices.Sort(others)
		f.add("other_answers", strings.Join(others, ","))
	}
	if st.gaveUp > 0 {
		f.add("gave_up", st.gaveUp)
	}
	return f
}
