package api

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"time"

	"github.com/flowedge/flowedge/internal/ratelimit"
)

// Rate and RateLimits are the rate limit options of the API (see package
// ratelimit).
type (
	Rate       = ratelimit.Rate
	RateLimits = ratelimit.Limits
)

// ParseRate parses "<count>/<unit>" (see ratelimit.ParseRate).
func ParseRate(s string) (Rate, error) { return ratelimit.ParseRate(s) }

// typeRateLimited is the problem type of a 429.
const typeRateLimited = "urn:flowedge:problem:rate-limited"

// limitClassOf is the class of a route pattern: the creation routes that
// the API's limits more tightly get their own; every other authenticated
// route draws from the default bucket. Keyed by pattern so a route gets its
// class wherever it is registered.
func limitClassOf(pattern string) ratelimit.Class {
	switch pattern {
	case "POST /api/v1/channels/{id}/posts":
		return ratelimit.ClassPosts
	case "POST /api/v1/webhooks":
		return ratelimit.ClassWebhooks
	case "POST /api/v1/keys":
		return ratelimit.ClassKeys
	}
	return ratelimit.ClassDefault
}

// limitKeyOf is the rate limit name of the key whose secret hashes to
// hash (hex SHA-256): a hash of that hash, so the name is the same on every
// pod but is not the store's lookup hash.
func limitKeyOf(hash string) string {
	sum := sha256.Sum256([]byte("flowedge-rate-limit:" + hash))
	return hex.EncodeToString(sum[:16])
}

// tooManyRequests is the 429 of a refused request.
func tooManyRequests(v ratelimit.Verdict) *Problem {
	p := problem(http.StatusTooManyRequests, typeRateLimited,
		"rate limit of %d requests per %v for this API key exceeded; retry in %s s", v.Limit, v.Period, ratelimit.Seconds(v.RetryAfter))
	p.Extra = map[string]any{"limit": v.Limit, "period_seconds": int64(v.Period / time.Second)}
	return p
}
