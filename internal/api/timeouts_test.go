package api

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

// TestUpdateAbandoned: an Update whose context ends while it waits behind
// a slow one returns the context's error, and its function never runs.
func TestUpdateAbandoned(t *testing.T) {
	s := openTestStore(t, t.TempDir())
	release, running := make(chan struct{}), make(chan struct{})
	slow := make(chan error, 1)
	go func() {
		slow <- s.Update(context.Background(), func(tx Tx) error {
			close(running)
			<-release // the committer is stuck here
			return tx.Set([]byte("slow"), []byte("1"), 0)
		})
	}()
	<-running
	var ran atomic.Bool
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := s.Update(ctx, func(tx Tx) error {
		ran.Store(true)
		return tx.Set([]byte("late"), []byte("1"), 0)
	})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("queued Update: %v, want DeadlineExceeded", err)
	}
	close(release)
	if err := <-slow; err != nil {
		t.Fatal(err)
	}
	// A later Update goes through the same committer after the abandoned one.
	if err := s.Update(context.Background(), func(tx Tx) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if ran.Load() {
		t.Fatal("the abandoned function ran")
	}
	err = s.View(context.Background(), func(tx Tx) error {
		if _, err := tx.Get([]byte("late")); !errors.Is(err, ErrNotFound) {
			return errors.New("the abandoned write is there")
		}
		_, err := tx.Get([]byte("slow"))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// deadlineProbe records whether every store call had a deadline within
// DatabaseTimeout.
type deadlineProbe struct {
	Store
	calls, bad atomic.Int64
}

func (p *deadlineProbe) check(ctx context.Context) {
	p.calls.Add(1)
	if d, ok := ctx.Deadline(); !ok || time.Until(d) > DatabaseTimeout {
		p.bad.Add(1)
	}
}

func (p *deadlineProbe) View(ctx context.Context, fn func(Tx) error) error {
	p.check(ctx)
	return p.Store.View(ctx, fn)
}

func (p *deadlineProbe) Update(ctx context.Context, fn func(Tx) error) error {
	p.check(ctx)
	return p.Store.Update(ctx, fn)
}

// TestStoreDeadlines: every store call of the server, from start-up,
// requests and the health check, carries a deadline of at most
// DatabaseTimeout.
func TestStoreDeadlines(t *testing.T) {
	probe := &deadlineProbe{Store: openTestStore(t, t.TempDir())}
	s, err := New(Options{Store: probe, BootstrapKey: "0123456789abcdef0123"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())
	if _, ok := s.store.(deadlineStore).Store.(*deadlineProbe); !ok {
		t.Fatal("the server does not wrap its store")
	}
	if err := s.store.Update(context.Background(), func(Tx) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if err := s.store.View(context.Background(), func(Tx) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if probe.calls.Load() < 3 || probe.bad.Load() != 0 {
		t.Fatalf("%d store calls, %d without a deadline", probe.calls.Load(), probe.bad.Load())
	}
}

func openTestStore(t *testing.T, dir string) Store {
	t.Helper()
	s, err := OpenBadger(dir, BadgerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}
