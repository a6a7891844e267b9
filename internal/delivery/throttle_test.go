package delivery

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/flowedge/flowedge/internal/buffer"
)

// slowDrop is the real queue with the ack that drops a throttled record
// held until release is closed: the drop's sync taking its time.
type slowDrop struct {
	buffer.Queue
	once     sync.Once
	entered  chan struct{}
	released chan struct{}
}

func (q *slowDrop) Ack(ctx context.Context, rec *buffer.Record, out buffer.Outcome) error {
	if out.ResponseStatus == http.StatusTooManyRequests {
		q.once.Do(func() { close(q.entered) })
		<-q.released
	}
	return q.Queue.Ack(ctx, rec, out)
}

// TestThrottledAnswerAfterDrop: a 429 relayed to a waiting client drops the
// record; neither that client nor a repeat of the request (same
// idempotency scope) hears the 429 before the drop is stored, and both do
// once it is.
//
// Regression: the loop made the 429 its final outcome before the drop was
// written, so a repeat that came meanwhile read it at once; a power cut
// then brought the record back to be delivered, though that client had
// been told nothing was applied.
func TestThrottledAnswerAfterDrop(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusTooManyRequests)
	}))
	defer srv.Close()
	q := &slowDrop{Queue: openQueue(t, t.TempDir(), 1), entered: make(chan struct{}), released: make(chan struct{})}
	e := startEngine(t, q, 1, srv, nil)
	var release sync.Once
	t.Cleanup(func() { release.Do(func() { close(q.released) }) }) // before the engine stops
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	first := testRecord("k", 1, "body")
	first.IdempotencyKey, first.IdempotencyScope = "idem", "scope-of-idem"
	tk1, err := e.Submit(ctx, first)
	if err != nil {
		t.Fatal(err)
	}
	got1 := make(chan Result, 1)
	go func() {
		r, _ := tk1.Wait(ctx)
		got1 <- r
	}()
	select {
	case <-q.entered:
	case <-ctx.Done():
		t.Fatal("the throttled record was never dropped")
	}

	repeat := testRecord("k", 1, "body")
	repeat.IdempotencyKey, repeat.IdempotencyScope = "idem", "scope-of-idem"
	tk2, err := e.Submit(ctx, repeat)
	if err != nil {
		t.Fatal(err)
	}
	if !tk2.Duplicate || tk2.ID != first.ID {
		t.Fatalf("the repeat is not a duplicate of %s: %+v", first.ID, tk2)
	}
	select {
	case r := <-tk2.ch:
		t.Fatalf("the repeat heard %d before the drop was stored", r.StatusCode)
	case r := <-got1:
		t.Fatalf("the client heard %d before the drop was stored", r.StatusCode)
	default:
	}

	release.Do(func() { close(q.released) })
	for _, ch := range []<-chan Result{got1, tk2.ch} {
		select {
		case r := <-ch:
			if r.StatusCode != http.StatusTooManyRequests || r.Unsure != nil {
				t.Errorf("answer %d (unsure %v), want the 429", r.StatusCode, r.Unsure)
			}
		case <-ctx.Done():
			t.Fatal("no answer after the drop was stored")
		}
	}
}
