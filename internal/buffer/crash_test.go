package buffer

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// helperEnv names the directory the helper process appends to.
const helperEnv = "FLOWEDGE_BUFFER_CRASH_DIR"

// TestHelperProcess is not a test: run by TestCrashDurability as a child
// process, it appends records from 16 goroutines until it is killed,
// printing the id of every record Append acknowledged.
func TestHelperProcess(t *testing.T) {
	dir := os.Getenv(helperEnv)
	if dir == "" {
		t.Skip("helper process for TestCrashDurability")
	}
	q, err := Open(Options{Path: dir, Partitions: 4})
	if err != nil {
		fmt.Fprintln(os.Stderr, "open:", err)
		os.Exit(3)
	}
	var mu sync.Mutex
	prefix := fmt.Sprintf("c%d-", os.Getpid())
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				r := newRecord((g+i)%4, fmt.Sprintf("k%d", g), 300)
				r.ID = fmt.Sprintf("%s%d-%d", prefix, g, i)
				if _, err := q.Append(context.Background(), []*Record{r}); err != nil {
					fmt.Fprintln(os.Stderr, "append:", err)
					os.Exit(4)
				}
				mu.Lock()
				// One write per line, unbuffered: once it returns, the parent
				// can read it even if this process is killed.
				_, _ = os.Stdout.WriteString(r.ID + "\n")
				mu.Unlock()
			}
		}()
	}
	// Never reached in the test: the parent kills this process. Bound it
	// anyway.
	time.Sleep(2 * time.Minute)
	os.Exit(5)
}

// TestCrashDurability kills (SIGKILL) a process that appends concurrently,
// three times over the same directory, and checks after each crash that
// every record whose Append returned nil is there.
func TestCrashDurability(t *testing.T) {
	if testing.Short() {
		t.Skip("re-executes the test binary")
	}
	dir := t.TempDir()
	acked := map[string]bool{}
	for round := range 3 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")
		cmd.Env = append(os.Environ(), helperEnv+"="+dir)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(out)
		n, killAt := 0, 2000+1500*round
		killed := false
		for sc.Scan() {
			line := sc.Text()
			if !strings.HasPrefix(line, "c") {
				continue // test framework output
			}
			acked[line] = true
			n++
			if n == killAt && !killed {
				if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
					t.Fatal(err)
				}
				killed = true
			}
		}
		err = cmd.Wait()
		if !killed {
			t.Fatalf("round %d: child exited after %d records: %v\n%s", round, n, err, stderr.String())
		}
		t.Logf("round %d: child killed after %d acknowledged appends (%d in total)", round, n, len(acked))

		q, err := Open(Options{Path: dir, Partitions: 4})
		if err != nil {
			t.Fatalf("round %d: reopen: %v", round, err)
		}
		found := map[string]bool{}
		total := 0
		for p := range 4 {
			after := uint64(0)
			for {
				recs, err := q.Read(p, after, 1000, 0)
				if err != nil {
					t.Fatalf("round %d: Read: %v", round, err)
				}
				if len(recs) == 0 {
					break
				}
				for _, r := range recs {
					if r.Seq <= after {
						t.Fatalf("round %d: partition %d: Seq %d after %d", round, p, r.Seq, after)
					}
					after = r.Seq
					found[r.ID] = true
					total++
				}
			}
		}
		missing := 0
		for id := range acked {
			if !found[id] {
				missing++
				if missing < 5 {
					t.Errorf("round %d: acknowledged record %s lost", round, id)
				}
			}
		}
		if missing > 0 {
			t.Fatalf("round %d: %d of %d acknowledged records lost", round, missing, len(acked))
		}
		st := q.Stats()
		if st.Partitions[0].Records+st.Partitions[1].Records+st.Partitions[2].Records+st.Partitions[3].Records != total {
			t.Fatalf("round %d: counters say %+v, read %d records", round, st.Partitions, total)
		}
		if q.Stats().Quarantined != 0 {
			t.Fatalf("round %d: %d records quarantined", round, q.Stats().Quarantined)
		}
		if err := q.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
