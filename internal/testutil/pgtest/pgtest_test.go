package pgtest_test

import (
	"context"
	"testing"

	"github.com/flowedge/flowedge/internal/testutil/pgtest"
	"github.com/jackc/pgx/v5"
)

// TestStart: the server answers on its URL and each NewDatabase is a
// separate, empty database.
func TestStart(t *testing.T) {
	s := pgtest.Start(t)
	ctx := context.Background()
	a, b := s.NewDatabase(t), s.NewDatabase(t)
	if a == b {
		t.Fatalf("same database twice: %s", a)
	}
	conn, err := pgx.Connect(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var one int
	if err := conn.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil || one != 1 {
		t.Fatalf("SELECT 1: %d %v", one, err)
	}
}
