package e2e

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestDiskFills runs the real edge with its queue on a filesystem smaller
// than its max_bytes (a 160 MiB tmpfs; the edge keeps 128 MiB of it free for
// Badger) while every backend is down, and writes until the edge refuses.
// It must refuse with 503, Retry-After and a detail naming the disk, and
// stay alive; once the filesystem has room again it takes writes without a
// restart; once the backends are back, every acknowledged request takes
// effect exactly once.
//
// Regression: with the filesystem full, Badger's next write through a
// mapped file (a compaction's table) killed the edge with SIGBUS, and the
// edge died again at each restart until space was freed.
func TestDiskFills(t *testing.T) {
	if testing.Short() {
		t.Skip("the full-disk test builds the edge binary and mounts a tmpfs; it runs without -short (make test)")
	}
	if os.Geteuid() != 0 {
		t.Skip("skipping the full-disk test: mounting a tmpfs needs root")
	}
	bins := buildBinaries(t, t.TempDir())
	rec := newDeliveryRecorder()
	for n := range partitions {
		rec.down[n].Store(true)
	}
	pc := newPowerCutEdge(t, bins, rec, true, "accept")
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=160m", "tmpfs", pc.mnt).CombinedOutput(); err != nil {
		t.Skipf("skipping the full-disk test: mount tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", "-l", pc.mnt).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v %s", pc.mnt, err, out)
		}
	})
	pc.start()

	// 16 writers of 16 KiB events until the edge refuses (about 2,000 fit).
	var (
		mu      sync.Mutex
		acked   []string
		refusal string
		wg      sync.WaitGroup
	)
	for w := range 16 {
		wg.Go(func() {
			for i := 0; i < 10000; i++ {
				rid := fmt.Sprintf("fill-%d-%d", w, i)
				code, hdr, body, err := pc.tryPostEvent(fmt.Sprintf("fill-%d", w), rid, rid, 16<<10)
				mu.Lock()
				switch {
				case err != nil:
					refusal = err.Error()
				case code == http.StatusAccepted:
					acked = append(acked, rid)
					mu.Unlock()
					continue
				case code == http.StatusServiceUnavailable && hdr.Get("Retry-After") != "":
					refusal = body
				default:
					refusal = fmt.Sprintf("unexpected answer %d %s", code, body)
				}
				mu.Unlock()
				return
			}
		})
	}
	wg.Wait()
	if !strings.Contains(refusal, "disk is nearly full") {
		t.Fatalf("after %d acknowledged writes the edge answered: %s; want 503 naming the disk", len(acked), refusal)
	}
	if pc.edge.exited() {
		t.Fatal("the edge died with its filesystem full")
	}
	if code := pc.status("/health/liveness"); code != http.StatusOK {
		t.Errorf("GET /health/liveness with the filesystem full: %d, want 200 (nothing to restart)", code)
	}

	// Room again, without a restart.
	if out, err := exec.Command("mount", "-o", "remount,size=400m", pc.mnt).CombinedOutput(); err != nil {
		t.Fatalf("remount with room: %v %s", err, out)
	}
	waitFor(t, 10*time.Second, "a write taken once the filesystem has room", func() bool {
		rid := fmt.Sprintf("after-%d", time.Now().UnixNano())
		code, _, _ := pc.postEvent("after", rid, rid, 16<<10)
		if code == http.StatusAccepted {
			acked = append(acked, rid)
			return true
		}
		return false
	})

	for n := range partitions {
		rec.down[n].Store(false)
	}
	waitFor(t, drainTimeout, "the edge to drain its queue (GET /edge/v1/partitions: queued = in_flight = 0)", pc.settled)
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for _, rid := range acked {
		if n := len(rec.effects[rid]); n != 1 {
			t.Errorf("request %s took effect %d times, want once", rid, n)
		}
	}
	t.Logf("scenario=disk-fills acknowledged=%d refused_with=%q", len(acked), refusal)
}
