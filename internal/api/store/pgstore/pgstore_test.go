package pgstore_test

import (
	"context"
	"testing"

	"github.com/flowedge/flowedge/internal/api/store"
	"github.com/flowedge/flowedge/internal/api/store/pgstore"
	"github.com/flowedge/flowedge/internal/api/store/storetest"
	"github.com/flowedge/flowedge/internal/testutil/pgtest"
)

// TestConformance runs the store suite on PostgreSQL, each test on a fresh
// database of one throwaway server.
func TestConformance(t *testing.T) {
	srv := pgtest.Start(t)
	storetest.Run(t, func(t *testing.T) func() store.Store {
		url := srv.NewDatabase(t)
		return func() store.Store {
			s, err := pgstore.Open(context.Background(), url, pgstore.Options{})
			if err != nil {
				t.Fatal(err)
			}
			return s
		}
	})
}

// BenchmarkAppend: appends/s on PostgreSQL (fsync and synchronous commit
// on), the same workload as badgerstore's.
func BenchmarkAppend(b *testing.B) {
	url := pgtest.DB(b, pgtest.Options{Durable: true})
	storetest.BenchmarkAppend(b, func() store.Store {
		s, err := pgstore.Open(context.Background(), url, pgstore.Options{})
		if err != nil {
			b.Fatal(err)
		}
		return s
	})
}
