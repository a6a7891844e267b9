package api

import (
	"testing"

	"github.com/flowedge/flowedge/internal/ratelimit"
)

// TestLimitClassOf: the tighter classes attach to their routes by pattern,
// so the webhook route gets its class wherever it is registered.
func TestLimitClassOf(t *testing.T) {
	for pattern, want := range map[string]ratelimit.Class{
		"POST /api/v1/keys":                ratelimit.ClassKeys,
		"POST /api/v1/webhooks":            ratelimit.ClassWebhooks,
		"POST /api/v1/channels/{id}/posts": ratelimit.ClassPosts,
		"GET /api/v1/channels/{id}/posts":  ratelimit.ClassDefault,
		"POST /api/v1/channels":            ratelimit.ClassDefault,
		"GET /api/v1/keys":                 ratelimit.ClassDefault,
		"DELETE /api/v1/webhooks/{id}":     ratelimit.ClassDefault,
	} {
		if got := limitClassOf(pattern); got != want {
			t.Errorf("%s: class %d, want %d", pattern, got, want)
		}
	}
}
