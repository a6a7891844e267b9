package main

import (
	"time"

	"github.com/flowedge/flowedge/internal/buffer"
)

// checkJSON is `edge buffer check -json`'s document: snake_case keys, and
// null (never a zero time) where there is no oldest record.
type checkJSON struct {
	Path        string          `json:"path"`
	Partitions  []partitionJSON `json:"partitions"`
	Records     int             `json:"records"`
	Bytes       int64           `json:"bytes"`
	DeadLetters int             `json:"dead_letters"`
	Parked      int             `json:"parked"`
	Outcomes    int             `json:"outcomes"`
	Oldest      *time.Time      `json:"oldest"`
	Corrupt     int             `json:"corrupt"`
	Quarantined int             `json:"quarantined"`
	Problems    []string        `json:"problems"`
}

type partitionJSON struct {
	Partition   int        `json:"partition"`
	Records     int        `json:"records"`
	Bytes       int64      `json:"bytes"`
	DeadLetters int        `json:"dead_letters"`
	Parked      int        `json:"parked"`
	FirstSeq    uint64     `json:"first_seq"`
	LastSeq     uint64     `json:"last_seq"`
	NextSeq     uint64     `json:"next_seq"`
	Oldest      *time.Time `json:"oldest"`
	Corrupt     int        `json:"corrupt"`
}

func newCheckJSON(r buffer.CheckReport) checkJSON {
	out := checkJSON{Path: r.Path, Partitions: make([]partitionJSON, 0, len(r.Partitions)), Records: r.Records,
		Bytes: r.Bytes, DeadLetters: r.DeadLetters, Parked: r.Parked, Outcomes: r.Outcomes, Oldest: timeOrNil(r.Oldest),
		Corrupt: r.Corrupt, Quarantined: r.Quarantined, Problems: r.Problems}
	if out.Problems == nil {
		out.Problems = []string{}
	}
	for _, p := range r.Partitions {
		out.Partitions = append(out.Partitions, partitionJSON{Partition: p.Partition, Records: p.Records, Bytes: p.Bytes,
			DeadLetters: p.DeadLetters, Parked: p.Parked, FirstSeq: p.FirstSeq, LastSeq: p.LastSeq, NextSeq: p.NextSeq,
			Oldest: timeOrNil(p.Oldest), Corrupt: p.Corrupt})
	}
	return out
}

func timeOrNil(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = t.UTC()
	return &t
}
