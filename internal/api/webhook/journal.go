package webhook

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"

	"github.com/flowedge/flowedge/internal/api/store"
	"github.com/redis/go-redis/v9"
)

// Record is a delivery as a Journal keeps it: enough to make it again after
// a restart (the webhook's URL and secret are read again at delivery).
type Record struct {
	ID     string `json:"id"`      // X-Flow-Delivery, a UUIDv7: ids sort by creation
	HookID string `json:"hook_id"` // the webhook it goes to
	Event  string `json:"event"`
	Body   []byte `json:"body"` // the envelope, as sent
}

// Journal keeps deliveries durable from Emit until their final result, so
// a delivery survives a crash or restart of its process: what is still in
// it at the next start is delivered then (at least once: a delivery under
// way when the process died is made again, with the same X-Flow-Delivery).
// Each process (partition) has a journal of its own.
type Journal interface {
	// Push stores recs; when it returns nil they are durable.
	Push(ctx context.Context, recs []Record) error
	// Pending returns up to limit deliveries, oldest first.
	Pending(ctx context.Context, limit int) ([]Record, error)
	// Ack removes a delivery that reached its final result.
	Ack(ctx context.Context, id string) error
}

// StoreJournal keeps the journal in the API's store (Badger or
// PostgreSQL) under wq/<partition>/<id>: durable as the store is.
type StoreJournal struct {
	Store     store.Store
	Partition int
}

func (j StoreJournal) prefix() []byte {
	return []byte(store.PfxWebhookQ + strconv.Itoa(j.Partition) + "/")
}

// Push implements Journal: one transaction for all of recs.
func (j StoreJournal) Push(ctx context.Context, recs []Record) error {
	return j.Store.Update(ctx, func(tx store.Tx) error {
		for _, r := range recs {
			b, err := json.Marshal(r)
			if err != nil {
				return err
			}
			if err := tx.Set(append(j.prefix(), r.ID...), b, 0); err != nil {
				return err
			}
		}
		return nil
	})
}

// Pending implements Journal.
func (j StoreJournal) Pending(ctx context.Context, limit int) ([]Record, error) {
	var out []Record
	err := j.Store.View(ctx, func(tx store.Tx) error {
		out = out[:0]
		return tx.Scan(j.prefix(), nil, func(k, v []byte) (bool, error) {
			var r Record
			if err := json.Unmarshal(v, &r); err != nil {
				return false, fmt.Errorf("webhook journal: decode %q: %w", k, err)
			}
			out = append(out, r)
			return len(out) < limit, nil
		})
	})
	return out, err
}

// Ack implements Journal.
func (j StoreJournal) Ack(ctx context.Context, id string) error {
	return j.Store.Update(ctx, func(tx store.Tx) error {
		return tx.Delete(append(j.prefix(), id...))
	})
}

// RedisJournal keeps the journal in Redis, one hash per partition
// (flow:webhooks:<partition>, delivery id → record): durable as the Redis
// server is configured to be (AOF with appendfsync everysec or always).
type RedisJournal struct {
	Redis     redis.UniversalClient
	Partition int
}

func (j RedisJournal) key() string { return "flow:webhooks:" + strconv.Itoa(j.Partition) }

// Push implements Journal: one HSET for all of recs.
func (j RedisJournal) Push(ctx context.Context, recs []Record) error {
	if len(recs) == 0 {
		return nil
	}
	args := make([]any, 0, 2*len(recs))
	for _, r := range recs {
		b, err := json.Marshal(r)
		if err != nil {
			return err
		}
		args = append(args, r.ID, b)
	}
	if err := j.Redis.HSet(ctx, j.key(), args...).Err(); err != nil {
		return fmt.Errorf("webhook journal: redis: %w", err)
	}
	return nil
}

// Pending implements Journal. It reads the whole hash: the journal holds
// only deliveries not yet made, a small set unless receivers are down.
func (j RedisJournal) Pending(ctx context.Context, limit int) ([]Record, error) {
	m, err := j.Redis.HGetAll(ctx, j.key()).Result()
	if err != nil {
		return nil, fmt.Errorf("webhook journal: redis: %w", err)
	}
	ids := make([]string, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	var out []Record
	var errs []error
	for _, id := range ids[:min(limit, len(ids))] {
		var r Record
		if err := json.Unmarshal([]byte(m[id]), &r); err != nil {
			errs = append(errs, fmt.Errorf("webhook journal: decode %s: %w", id, err))
			continue
		}
		out = append(out, r)
	}
	return out, errors.Join(errs...)
}

// Ack implements Journal.
func (j RedisJournal) Ack(ctx context.Context, id string) error {
	if err := j.Redis.HDel(ctx, j.key(), id).Err(); err != nil {
		return fmt.Errorf("webhook journal: redis: %w", err)
	}
	return nil
}
