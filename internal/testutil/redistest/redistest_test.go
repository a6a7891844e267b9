package redistest

import (
	"context"
	"testing"
	"time"
)

func TestStartPingStop(t *testing.T) {
	s := Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := ping(ctx, s.Addr); err != nil {
		t.Fatalf("ping: %v", err)
	}
	s.Stop()
	if err := ping(ctx, s.Addr); err == nil {
		t.Fatal("server still answers after Stop")
	}
	s.Stop() // twice is fine
}
