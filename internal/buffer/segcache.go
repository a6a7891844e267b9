package buffer

// Segment cache.
//
// Badger copies every value an iterator is positioned on, and a segment is
// one value holding a whole group commit of a partition. A reader taking a
// few records at a time from a deep backlog (the delivery loop refilling
// its window as records are acknowledged) would copy the same big segment
// on every Read. So Read and Stats keep, per partition, copies of the last
// segments they loaded and start from such a copy when it holds the first
// Seq asked for.
//
// A segment is never rewritten; it is only deleted, once all its records
// are final. Every place that deletes segments of a live queue (the
// committer, rehoming, reclaiming an empty partition) drops the
// partition's copies and bumps its generation after its Badger commit; a
// reader stores a copy only if the generation it saw before opening its
// Badger view is unchanged, so a copy never outlives its segment.

const (
	// segCacheWays is how many segments a partition keeps (Read and
	// Stats usually stand in different ones).
	segCacheWays = 2
	// segCacheMin is the fewest records a segment needs to be kept.
	segCacheMin = 2
	// segCacheBytes bounds the copies of all partitions together; storing
	// past it first drops every copy.
	segCacheBytes = 32 << 20
)

// segCache is one partition's copies, most recently stored first. Guarded
// by queue.mu.
type segCache struct {
	gen  uint64 // bumped each time segments of the partition may have been deleted
	ways [segCacheWays]*cachedSeg
}

// segCached returns partition p's copy holding seq (nil if none) and the
// function that keeps a segment loaded by the scan about to run.
func (q *queue) segCached(p int, seq uint64) (hit *cachedSeg, keep func(*cachedSeg)) {
	q.mu.Lock()
	defer q.mu.Unlock()
	c := &q.segs[p]
	for _, w := range c.ways {
		if w.holds(seq) {
			hit = w
			break
		}
	}
	gen := c.gen
	return hit, func(s *cachedSeg) { q.keepSeg(p, gen, s) }
}

// keepSeg stores s as partition p's newest copy if no segment of p was
// deleted since generation gen was seen.
func (q *queue) keepSeg(p int, gen uint64, s *cachedSeg) {
	if len(s.recs) < segCacheMin || s.size > segCacheBytes/4 {
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	c := &q.segs[p]
	if c.gen != gen || q.closed.Load() {
		return
	}
	for _, w := range c.ways {
		if w != nil && w.first == s.first {
			return
		}
	}
	if q.segsBytes+s.size > segCacheBytes {
		for i := range q.segs {
			q.segs[i].clear(&q.segsBytes)
		}
	}
	if old := c.ways[segCacheWays-1]; old != nil {
		q.segsBytes -= old.size
	}
	copy(c.ways[1:], c.ways[:segCacheWays-1])
	c.ways[0] = s
	q.segsBytes += s.size
}

// dropSegsLocked forgets partition p's copies; called with q.mu held, after
// a Badger commit that may have deleted segments of p.
func (q *queue) dropSegsLocked(p int) {
	if p < 0 || p >= len(q.segs) {
		return
	}
	q.segs[p].gen++
	q.segs[p].clear(&q.segsBytes)
}

func (c *segCache) clear(total *int) {
	for i, w := range c.ways {
		if w != nil {
			*total -= w.size
			c.ways[i] = nil
		}
	}
}
