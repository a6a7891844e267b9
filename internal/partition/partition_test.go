package partition

import (
	"fmt"
	"testing"
)

// TestGolden pins the mapping. If this test fails, every process in every
// deployment would silently move to another backend: do not update the values,
// fix the code.
func TestGolden(t *testing.T) {
	golden := []struct {
		key               string
		n1, n3, n5, n1000 int
	}{
		{"", 0, 2, 2, 332},
		{"a", 0, 1, 1, 894},
		{"proc-1", 0, 0, 3, 476},
		{"proc-2", 0, 1, 1, 703},
		{"proc-42", 0, 0, 4, 852},
		{"order-123", 0, 2, 2, 831},
		{"00000000-0000-0000-0000-000000000000", 0, 1, 3, 916},
		{"user:alice", 0, 1, 1, 510},
		{"user:bob", 0, 1, 1, 402},
		{"X", 0, 0, 0, 864},
	}
	for _, g := range golden {
		for _, c := range []struct{ n, want int }{{1, g.n1}, {3, g.n3}, {5, g.n5}, {1000, g.n1000}} {
			if got := OfString(g.key, c.n); got != c.want {
				t.Errorf("OfString(%q, %d) = %d, want %d", g.key, c.n, got, c.want)
			}
			if got := Of([]byte(g.key), c.n); got != c.want {
				t.Errorf("Of(%q, %d) = %d, want %d", g.key, c.n, got, c.want)
			}
		}
	}
}

func TestRange(t *testing.T) {
	for _, n := range []int{-1, 0, 1, 2, 7, 64} {
		for i := 0; i < 1000; i++ {
			p := OfString(fmt.Sprintf("k%d", i), n)
			if p < 0 || (n >= 1 && p >= n) || (n < 1 && p != 0) {
				t.Fatalf("OfString(k%d, %d) = %d out of range", i, n, p)
			}
		}
	}
}

// TestResizeMovesFewKeys checks the consistent-hash promise: going from n to
// n+1 partitions moves at most 1/(n+1) + 1% of the keys, and only to the new
// partition.
func TestResizeMovesFewKeys(t *testing.T) {
	const keys = 100000
	for _, n := range []int{1, 2, 3, 4, 5, 8, 16} {
		moved := 0
		for i := 0; i < keys; i++ {
			k := fmt.Sprintf("process-%d", i)
			a, b := OfString(k, n), OfString(k, n+1)
			if a != b {
				moved++
				if b != n {
					t.Fatalf("n=%d: key %q moved from %d to %d, not to the new partition", n, k, a, b)
				}
			}
		}
		frac := float64(moved) / keys
		if limit := 1/float64(n+1) + 0.01; frac > limit {
			t.Errorf("n=%d→%d: %.4f of keys moved, want ≤ %.4f", n, n+1, frac, limit)
		}
	}
}

// TestBalance checks that keys spread evenly: no partition of 3 holds more than
// 36% of 100,000 keys.
func TestBalance(t *testing.T) {
	counts := make([]int, 3)
	for i := 0; i < 100000; i++ {
		counts[OfString(fmt.Sprintf("p-%d", i), 3)]++
	}
	for p, c := range counts {
		if c > 36000 || c < 30700 {
			t.Errorf("partition %d holds %d of 100000 keys", p, c)
		}
	}
}

func BenchmarkOf(b *testing.B) {
	key := []byte("0199a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b")
	for b.Loop() {
		Of(key, 3)
	}
}
