package ratelimit

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flowedge/flowedge/internal/testutil/redistest"
	"github.com/redis/go-redis/v9"
)

func redisClient(t *testing.T, url string) *redis.Client {
	t.Helper()
	opt, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(opt)
	t.Cleanup(func() { c.Close() })
	return c
}

// TestRedisShared: three limiters (three processes) on one Redis share a
// key's bucket: of 31 requests against 10/min spread over them, exactly 10
// pass, and the refused ones say when to retry.
func TestRedisShared(t *testing.T) {
	srv := redistest.Start(t)
	var lims []*Limiter
	for range 3 {
		l, err := New(Limits{Default: Rate{10, time.Minute}, Redis: redisClient(t, srv.URL),
			OnRedisError: func(err error) { t.Errorf("redis error: %v", err) }})
		if err != nil {
			t.Fatal(err)
		}
		lims = append(lims, l)
	}
	ctx := context.Background()
	allowed := 0
	for i := range 31 {
		v := lims[i%3].Allow(ctx, "key-1", ClassDefault)
		if v.Allowed {
			allowed++
			continue
		}
		if v.RetryAfter <= 0 || v.Remaining != 0 || v.Limit != 10 {
			t.Errorf("refusal %d: %+v", i, v)
		}
	}
	if allowed != 10 {
		t.Fatalf("%d of 31 allowed across 3 limiters, want 10 (the limit is per key, not per process)", allowed)
	}
	// Another key and another class have buckets of their own.
	if v := lims[0].Allow(ctx, "key-2", ClassDefault); !v.Allowed {
		t.Error("another key was refused")
	}
	if v := lims[0].Allow(ctx, "key-1", ClassPosts); !v.Allowed {
		t.Error("another class of the same key was refused")
	}
}

// TestRedisDownFallsBack: with Redis gone, the in-memory bucket decides and
// the error is reported, rather than every request failing or stalling.
func TestRedisDownFallsBack(t *testing.T) {
	srv := redistest.Start(t)
	var errs atomic.Int32
	l, err := New(Limits{Default: Rate{2, time.Minute}, Redis: redisClient(t, srv.URL),
		OnRedisError: func(error) { errs.Add(1) }})
	if err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	ctx := context.Background()
	got := []bool{}
	for range 3 {
		got = append(got, l.Allow(ctx, "k", ClassDefault).Allowed)
	}
	if !got[0] || !got[1] || got[2] {
		t.Fatalf("allowed = %v with Redis down, want the in-memory bucket's [true true false]", got)
	}
	if errs.Load() != 3 {
		t.Fatalf("OnRedisError called %d times, want 3", errs.Load())
	}
}
