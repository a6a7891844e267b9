package ratelimit

import (
	"context"
	"fmt"
	"time"

	"github.com/go-redis/redis_rate/v10"
)

// RedisTimeout bounds one Redis round trip of Allow; past it (or on any
// Redis error) the in-memory bucket decides.
const RedisTimeout = 250 * time.Millisecond

// redisKeyPrefix starts every bucket key in Redis (after redis_rate's own
// "rate:"), so the limiter shares a database with other data safely.
const redisKeyPrefix = "flow:"

// Allow draws one request of key's class and says whether it may go on.
// With Limits.Redis set the bucket lives in Redis (GCRA, by
// github.com/go-redis/redis_rate, on the Redis server's clock), so every
// process sharing that Redis shares the limit: 100/min means 100 per key,
// not per process. When Redis fails or is slower than RedisTimeout, the
// process's own in-memory bucket decides (fail open to per-process limits
// rather than refuse or stall every request) and Limits.OnRedisError is told.
func (l *Limiter) Allow(ctx context.Context, key string, class Class) Verdict {
	if l.redis == nil {
		return l.Take(key, class)
	}
	v, err := l.allowRedis(ctx, key, class)
	if err != nil {
		if l.onRedisError != nil {
			l.onRedisError(err)
		}
		return l.Take(key, class)
	}
	return v
}

func (l *Limiter) allowRedis(ctx context.Context, key string, class Class) (Verdict, error) {
	r := l.rates[class]
	ctx, cancel := context.WithTimeout(ctx, RedisTimeout)
	defer cancel()
	res, err := l.redis.Allow(ctx, fmt.Sprintf("%s%d:%s", redisKeyPrefix, class, key),
		redis_rate.Limit{Rate: r.Count, Burst: r.Count, Period: r.Per})
	if err != nil {
		return Verdict{}, fmt.Errorf("ratelimit: redis: %w", err)
	}
	v := Verdict{
		Allowed:   res.Allowed > 0,
		Limit:     r.Count,
		Remaining: max(res.Remaining, 0),
		Reset:     max(res.ResetAfter, 0),
		Period:    r.Per,
	}
	if !v.Allowed {
		v.RetryAfter = max(res.RetryAfter, 0)
	}
	return v, nil
}
