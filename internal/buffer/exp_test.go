package buffer

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

func dirSize(t testing.TB, dir string) (total int64, byExt map[string]int64) {
	byExt = map[string]int64{}
	_ = filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			sz := fi.Sys().(*syscall.Stat_t).Blocks * 512
			total += sz
			byExt[filepath.Ext(p)] += sz
		}
		return nil
	})
	return
}

var expBody = 300

func TestExpDisk(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("EXP_N"))
	if n == 0 {
		t.Skip()
	}
	dir := t.TempDir()
	tu := defaultTuning()
	if v := os.Getenv("EXP_BODY"); v != "" {
		expBody, _ = strconv.Atoi(v)
	}
	if v := os.Getenv("EXP_VT"); v != "" {
		x, _ := strconv.Atoi(v)
		tu.valueThreshold = int64(x)
	}
	qq, err := openTuned(Options{Path: dir, Partitions: 3}, tu)
	if err != nil {
		t.Fatal(err)
	}
	q := qq.(*queue)
	base, _ := dirSize(t, dir)
	ctx := context.Background()
	start := time.Now()
	var wg sync.WaitGroup
	per := n / 64
	for g := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range per {
				if _, err := q.Append(ctx, []*Record{newRecord((g+i)%3, fmt.Sprint("k", g), expBody)}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	t.Logf("fill %d in %v: %.0f/s", per*64, time.Since(start), float64(per*64)/time.Since(start).Seconds())
	full, ext := dirSize(t, dir)
	t.Logf("base %d full %d %v", base, full, ext)
	start = time.Now()
	work := make(chan *Record, 1024)
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range work {
				if err := q.Ack(ctx, r, Outcome{Status: StatusDelivered, ResponseStatus: 202}); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	for p := range 3 {
		after := uint64(0)
		for {
			recs, err := q.Read(p, after, 256, 0)
			if err != nil {
				t.Fatal(err)
			}
			if len(recs) == 0 {
				break
			}
			for _, r := range recs {
				work <- r
			}
			after = recs[len(recs)-1].Seq
		}
	}
	close(work)
	wg.Wait()
	t.Logf("drain in %v", time.Since(start))
	drained, ext := dirSize(t, dir)
	t.Logf("drained %d %v", drained, ext)
	st := time.Now()
	switch os.Getenv("EXP_RECLAIM") {
	case "drop":
		err = q.db.DropPrefix(partPrefix(prefixQueue, 0), partPrefix(prefixQueue, 1), partPrefix(prefixQueue, 2))
	case "reclaim":
		var n int
		n, err = q.reclaim(ctx)
		t.Logf("reclaimed %d", n)
	case "flatten":
		err = q.db.Flatten(2)
	}
	t.Logf("reclaim %s took %v err %v", os.Getenv("EXP_RECLAIM"), time.Since(st), err)
	for i := range 3 {
		n := q.collect(ctx)
		s, ext := dirSize(t, dir)
		t.Logf("gc %d rewrote %d: %d %v", i, n, s, ext)
		time.Sleep(time.Second)
	}
	t.Log(q.db.LevelsToString())
	q.Close()
	s, ext := dirSize(t, dir)
	t.Logf("after close %d %v", s, ext)
}
