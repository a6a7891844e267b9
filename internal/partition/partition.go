// Package partition maps a partition key (the X-Process-ID of a request) to one of
// n partitions. The edge uses it to pick the backend that owns a process and the
// api-flow backend uses it to refuse keys it does not own, so both must agree
// forever: the mapping is pinned by golden tests.
//
// The key's bytes are hashed with xxhash64 and the hash is placed with Jump
// Consistent Hash (Lamping & Veach, 2014). Growing from n to n+1 partitions moves
// only about 1/(n+1) of the keys, all of them to the new partition.
package partition

import "github.com/cespare/xxhash/v2"

// Of returns the partition in [0, n) that owns key. n must be at least 1; for
// n < 1 Of returns 0 so callers never index out of range.
func Of(key []byte, n int) int {
	if n < 1 {
		return 0
	}
	return jump(xxhash.Sum64(key), n)
}

// OfString is Of for a string key without a copy.
func OfString(key string, n int) int {
	if n < 1 {
		return 0
	}
	return jump(xxhash.Sum64String(key), n)
}

// jump is Jump Consistent Hash: it maps a 64-bit key to a bucket in [0, n).
func jump(key uint64, n int) int {
	var b, j int64 = -1, 0
	for j < int64(n) {
		b = j
		key = key*2862933555777941757 + 1
		j = int64(float64(b+1) * (float64(int64(1)<<31) / float64((key>>33)+1)))
	}
	return int(b)
}
