package buffer

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net/http"
	"reflect"
	"testing"
	"time"
)

func TestRecordRoundTrip(t *testing.T) {
	cases := []*Record{
		{ID: "a"},
		{
			ID: "0190b1c2-7d3e-7f00-8000-000000000001", Key: "proc-42", IdempotencyKey: "idem",
			Method: "POST", Path: "/api/v1/processes/proc-42/events", RawQuery: "x=1&y=2",
			Header:     http.Header{"Content-Type": {"application/json"}, "X-Multi": {"a", "", "c"}},
			Body:       []byte(`{"event":"x"}`),
			ReceivedAt: time.Unix(1700000000, 123456789),
			Attempts:   7, NextAttemptAt: time.Unix(1700000100, 5), LastError: "dial tcp: refused",
		},
	}
	for _, r := range cases {
		v := encodeRecord(r)
		if len(v) > recordSize(r) {
			t.Fatalf("encoded %d bytes, bound %d", len(v), recordSize(r))
		}
		got, err := decodeRecord(v, 3, 99, true)
		if err != nil {
			t.Fatalf("decode: %v", err)
		}
		want := *r
		want.Partition, want.Seq = 3, 99
		if !reflect.DeepEqual(normal(got), normal(&want)) {
			t.Fatalf("round trip:\n got %+v\nwant %+v", got, &want)
		}
		// Replacing the mutable section keeps the rest.
		nv, err := withMutable(v, 1, time.Time{}, "")
		if err != nil {
			t.Fatal(err)
		}
		got, err = decodeRecord(nv, 3, 99, true)
		if err != nil {
			t.Fatalf("decode after withMutable: %v", err)
		}
		want.Attempts, want.NextAttemptAt, want.LastError = 1, time.Time{}, ""
		if !reflect.DeepEqual(normal(got), normal(&want)) {
			t.Fatalf("withMutable:\n got %+v\nwant %+v", got, &want)
		}
		if id, ok := recordID(nv); !ok || id != r.ID {
			t.Fatalf("recordID = %q, %v", id, ok)
		}
	}
}

// normal makes times and empty values comparable with DeepEqual.
func normal(r *Record) *Record {
	c := *r
	c.ReceivedAt = time.Unix(0, unixNano(r.ReceivedAt))
	c.NextAttemptAt = time.Unix(0, unixNano(r.NextAttemptAt))
	if len(c.Body) == 0 {
		c.Body = nil
	}
	if len(c.Header) == 0 {
		c.Header = nil
	}
	return &c
}

func TestOutcomeRoundTrip(t *testing.T) {
	o := &Outcome{
		ID: "id", Partition: 2, Key: "k", Status: StatusRejected, Attempts: 3, ResponseStatus: 409,
		ResponseHeader: http.Header{"Content-Type": {"application/problem+json"}},
		ResponseBody:   []byte(`{"title":"conflict"}`), LastError: "",
		ReceivedAt: time.Unix(5, 0), FinishedAt: time.Unix(6, 0),
	}
	got, err := decodeOutcome(encodeOutcome(o, 1<<20))
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != o.ID || got.Partition != 2 || got.Status != o.Status || got.ResponseStatus != 409 ||
		!bytes.Equal(got.ResponseBody, o.ResponseBody) || !got.FinishedAt.Equal(o.FinishedAt) ||
		got.ResponseHeader.Get("Content-Type") != "application/problem+json" {
		t.Fatalf("outcome: %+v", got)
	}
}

func TestDecodeRejectsDamage(t *testing.T) {
	v := encodeRecord(newRecord(0, "k", 50))
	for i := range len(v) {
		if _, err := decodeRecord(v[:i], 0, 1, true); err == nil {
			t.Fatalf("truncated to %d bytes: decoded", i)
		}
		w := bytes.Clone(v)
		w[i] ^= 0x40
		if _, err := decodeRecord(w, 0, 1, true); err == nil {
			t.Fatalf("bit flipped at %d: decoded", i)
		}
	}
}

// FuzzDecodeRecord feeds the record decoder (and the other decoders) with
// arbitrary bytes: they must never panic, and what decodes must re-encode
// to a value that decodes the same.
func FuzzDecodeRecord(f *testing.F) {
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 16 {
		r := newRecord(0, fmt.Sprintf("key-%d", i), rng.IntN(200))
		r.Attempts = rng.IntN(10)
		v := encodeRecord(r)
		f.Add(v)
		f.Add(v[:rng.IntN(len(v))])
		// Bytes after the version byte, with a valid CRC: the decoder's
		// bounds checks are reached, not just the checksum.
		g := []byte{recordV1}
		for range rng.IntN(40) {
			g = append(g, byte(rng.IntN(256)))
		}
		f.Add(appendCRC(g))
	}
	f.Add([]byte{})
	f.Add(appendCRC([]byte{recordV1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}))
	f.Fuzz(func(t *testing.T, v []byte) {
		r, err := decodeRecord(v, 1, 2, true)
		if err == nil {
			again, err := decodeRecord(encodeRecord(r), 1, 2, true)
			if err != nil {
				t.Fatalf("re-encoded record does not decode: %v", err)
			}
			if !reflect.DeepEqual(normal(again), normal(r)) {
				t.Fatalf("re-encoded record differs:\n%+v\n%+v", again, r)
			}
			if _, err := withMutable(v, 1, time.Now(), "e"); err != nil {
				t.Fatalf("withMutable on a valid record: %v", err)
			}
		}
		_, _ = recordID(v)
		_, _ = withMutable(v, 1, time.Time{}, "")
		_, _ = decodeOutcome(v)
		_, _, _ = decodeDead(v, 0, 1, true)
		_, _ = decodePartMeta(v)
		_, _ = decodeGlobalMeta(v)
		_, _, _, _ = decodeIndex(v)
	})
}
