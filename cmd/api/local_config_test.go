package main

import (
	"io"
	"testing"
)

// TestLocalStackConfig: configs/local/api.toml (the backends of `make run`)
// loads, and raises the per-key limits above the production defaults so a
// demo burst is not throttled.
func TestLocalStackConfig(t *testing.T) {
	cfg, err := loadConfig([]string{"-config", "../../configs/local/api.toml"}, envOf(), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.RateLimits.Default.Count < 10000 || cfg.RateLimits.Posts.Count < 1000 {
		t.Fatalf("local rate limits not raised: %+v", cfg.RateLimits)
	}
}
