package api_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"testing"

	"github.com/flowedge/flowedge/internal/api"
)

// batchPart is one request inside an edge batch.
type batchPart struct {
	method, target, pid, requestID, key, body string
}

// postBatch sends parts as the edge does and returns the answers in order.
func postBatch(t *testing.T, e *env, parts []batchPart) []*http.Response {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for _, p := range parts {
		pw, err := mw.CreatePart(textproto.MIMEHeader{"Content-Type": {"application/http"}})
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(pw, "%s %s HTTP/1.1\r\nHost: api\r\nX-Process-ID: %s\r\nX-Request-ID: %s\r\nX-Edge-Attempt: 1\r\n", p.method, p.target, p.pid, p.requestID)
		if p.key != "" {
			fmt.Fprintf(pw, "Authorization: Bearer %s\r\n", p.key)
		}
		fmt.Fprintf(pw, "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(p.body), p.body)
	}
	mw.Close()
	resp, err := e.client.Post(e.ts.URL+api.BatchPath, "multipart/mixed; boundary="+mw.Boundary(), &buf)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("batch: %d %s", resp.StatusCode, b)
	}
	if resp.ContentLength <= 0 {
		t.Errorf("batch answer sent without its length (Content-Length %d, Transfer-Encoding %v)", resp.ContentLength, resp.TransferEncoding)
	}
	_, params, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if err != nil {
		t.Fatal(err)
	}
	mr := multipart.NewReader(resp.Body, params["boundary"])
	var out []*http.Response
	for range parts {
		part, err := mr.NextPart()
		if err != nil {
			t.Fatalf("answer part %d: %v", len(out)+1, err)
		}
		r, err := http.ReadResponse(bufio.NewReader(part), nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(b))
		out = append(out, r)
	}
	if _, err := mr.NextPart(); err != io.EOF {
		t.Fatalf("answer has more parts than the batch: %v", err)
	}
	return out
}

func eventCount(t *testing.T, e *env, pid string) int {
	t.Helper()
	r := e.do(req{method: "GET", path: "/api/v1/processes/" + pid + "/events", key: adminKey})
	var v struct {
		Items []json.RawMessage `json:"items"`
	}
	r.json(t, &v)
	return len(v.Items)
}

// TestEdgeBatch: each part runs through the whole API as if it came alone —
// auth per part (the envelope has no credentials), 421 for a process of
// another partition, idempotency by X-Request-ID — and the answers come
// back in part order. A batch sent again (the edge retrying after a cut
// connection) applies nothing twice.
func TestEdgeBatch(t *testing.T) {
	e := newEnv(t, func(o *api.Options) { o.Partitions = 2 })
	own, other := oaPID("proc-a", 0), oaPID("proc-b", 1)
	own2 := oaPID("proc-c", 0)
	parts := []batchPart{
		{"POST", "/api/v1/processes/" + own + "/events", own, "11111111-1111-4111-8111-111111111111", adminKey, `{"n":1}`},
		{"POST", "/api/v1/processes/" + own2 + "/events", own2, "22222222-2222-4222-8222-222222222222", "", `{"n":2}`},
		{"POST", "/api/v1/processes/" + other + "/events", other, "33333333-3333-4333-8333-333333333333", adminKey, `{"n":3}`},
		{"POST", "/api/v1/processes/" + own2 + "/events", own2, "44444444-4444-4444-8444-444444444444", adminKey, `{"n":4}`},
	}
	answers := postBatch(t, e, parts)
	want := []int{http.StatusCreated, http.StatusUnauthorized, http.StatusMisdirectedRequest, http.StatusCreated}
	for i, a := range answers {
		if a.StatusCode != want[i] {
			b, _ := io.ReadAll(a.Body)
			t.Errorf("part %d: %d %s, want %d", i+1, a.StatusCode, b, want[i])
		}
	}
	var ev struct {
		Seq uint64 `json:"seq"`
	}
	if ct := answers[0].Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("part 1 Content-Type %q, want application/json", ct)
	}
	if err := json.NewDecoder(answers[0].Body).Decode(&ev); err != nil || ev.Seq != 1 {
		t.Errorf("part 1 body: %+v %v, want the event with seq 1", ev, err)
	}
	if n := eventCount(t, e, own); n != 1 {
		t.Errorf("%s has %d events, want 1", own, n)
	}
	if n := eventCount(t, e, own2); n != 1 {
		t.Errorf("%s has %d events, want 1 (the unauthenticated part applied?)", own2, n)
	}

	// The same batch again: the first answers, nothing applied twice.
	again := postBatch(t, e, parts)
	for i, a := range again {
		if a.StatusCode != want[i] {
			t.Errorf("repeat part %d: %d, want %d", i+1, a.StatusCode, want[i])
		}
	}
	if a := again[0]; a.Header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("repeated part 1 not answered as a replay: %v", a.Header)
	}
	if n := eventCount(t, e, own); n != 1 {
		t.Errorf("after a repeated batch %s has %d events, want 1 (exactly once)", own, n)
	}
}

// TestEdgeBatchRefused: a body that is not multipart/mixed is 415 and
// applies nothing; a batch inside a batch is refused in its part.
func TestEdgeBatchRefused(t *testing.T) {
	e := newEnv(t)
	resp, err := e.client.Post(e.ts.URL+api.BatchPath, "application/json", bytes.NewReader([]byte(`{}`)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnsupportedMediaType {
		t.Errorf("JSON body: %d, want 415", resp.StatusCode)
	}
	answers := postBatch(t, e, []batchPart{{"POST", api.BatchPath, "p", "55555555-5555-4555-8555-555555555555", adminKey, ""}})
	if answers[0].StatusCode != http.StatusBadRequest {
		t.Errorf("nested batch: %d, want 400", answers[0].StatusCode)
	}
}

// TestBatchKeysPerBatch: a batch's parts share the API key verdicts of that
// batch only. Parts with the same key pass, a part with an unknown key in
// the same batch is refused, and a key deleted after one batch is refused
// in the next (the verdicts cached for a batch must not outlive it).
func TestBatchKeysPerBatch(t *testing.T) {
	e := newEnv(t)
	var k struct {
		ID  string `json:"id"`
		Key string `json:"key"`
	}
	must(t, e.do(req{method: "POST", path: "/api/v1/keys", key: adminKey, body: map[string]any{"name": "batch", "role": "admin"}}), 201).json(t, &k)
	ev := func(pid, rid, key string) batchPart {
		return batchPart{"POST", "/api/v1/processes/" + pid + "/events", pid, rid, key, `{"n":1}`}
	}
	answers := postBatch(t, e, []batchPart{
		ev("proc-k1", "a1111111-1111-4111-8111-111111111111", k.Key),
		ev("proc-k2", "a2222222-2222-4222-8222-222222222222", k.Key),
		ev("proc-k3", "a3333333-3333-4333-8333-333333333333", "fe_not_a_key"),
	})
	for i, want := range []int{http.StatusCreated, http.StatusCreated, http.StatusUnauthorized} {
		if answers[i].StatusCode != want {
			t.Errorf("part %d: %d, want %d", i+1, answers[i].StatusCode, want)
		}
	}
	must(t, e.do(req{method: "DELETE", path: "/api/v1/keys/" + k.ID, key: adminKey}), 204)
	answers = postBatch(t, e, []batchPart{ev("proc-k4", "a4444444-4444-4444-8444-444444444444", k.Key)})
	if answers[0].StatusCode != http.StatusUnauthorized {
		t.Errorf("deleted key in the next batch: %d, want 401", answers[0].StatusCode)
	}
}
