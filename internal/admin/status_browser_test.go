package admin_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/flowedge/flowedge/internal/config"
	"github.com/flowedge/flowedge/internal/partition"
	"github.com/flowedge/flowedge/internal/server"
)

// screenshotEnv names the variable that makes TestStatusPageInBrowser save
// its screenshot to docs/status-page.png (the picture in the docs).
const screenshotEnv = "EDGE_STATUS_SCREENSHOT"

// chromiumPath is Debian's Chromium (scripts/test-deps.sh installs it).
const chromiumPath = "/usr/bin/chromium"

// testBackend is a real HTTP backend: ready unless down, and answering
// writes with 201, or 421 while misroute is set.
type testBackend struct {
	srv       *httptest.Server
	down      atomic.Bool
	misroute  atomic.Bool
	delivered atomic.Int64
	lastID    atomic.Value // X-Request-ID of the last write applied
}

func newTestBackend(t *testing.T) *testBackend {
	b := &testBackend{}
	b.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/health/readiness" {
			if b.down.Load() {
				w.WriteHeader(http.StatusServiceUnavailable)
				return
			}
			w.WriteHeader(http.StatusOK)
			return
		}
		if b.misroute.Load() {
			http.Error(w, "not my partition", http.StatusMisdirectedRequest)
			return
		}
		b.delivered.Add(1)
		b.lastID.Store(r.Header.Get("X-Request-ID"))
		w.WriteHeader(http.StatusCreated)
	}))
	t.Cleanup(b.srv.Close)
	return b
}

// keyFor returns a key that lands on partition p of n.
func keyFor(p, n int, prefix string) string {
	for i := 0; ; i++ {
		k := fmt.Sprintf("%s-%d", prefix, i)
		if partition.OfString(k, n) == p {
			return k
		}
	}
}

func post(t *testing.T, addr, key string) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/api/v1/processes/"+key+"/events", strings.NewReader(`{"type":"x"}`))
	req.Header.Set("X-Process-ID", key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("POST %s: %s, want 202", key, resp.Status)
	}
	return resp.Header.Get("X-Delivery-ID")
}

// TestStatusPageInBrowser loads the admin status page in headless Chromium
// against a running edge with real backends: the page asks for the admin
// token, shows the partitions (one backend down, so its records queue),
// draws the chart, lists a dead letter (a 421 from its backend) and replays
// it when its button is clicked; the replay is delivered. The page must
// run without a Content Security Policy violation or a script error.
func TestStatusPageInBrowser(t *testing.T) {
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Skipf("chromium not installed at %s (scripts/test-deps.sh installs it): %v", chromiumPath, err)
	}
	const n = 3
	bs := []*testBackend{newTestBackend(t), newTestBackend(t), newTestBackend(t)}
	bs[1].misroute.Store(true) // partition 1's writes are dead-lettered at once (421)
	bs[2].down.Store(true)     // partition 2 is not ready: its records wait

	cfg := config.Default()
	cfg.Server.Address, cfg.Admin.Address = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Server.Respond = config.RespondAccept
	cfg.Admin.Token = "s3cret-admin"
	cfg.Partition.Count = n
	cfg.Backends.URLs = nil
	for _, b := range bs {
		cfg.Backends.URLs = append(cfg.Backends.URLs, b.srv.URL)
	}
	cfg.Backends.ProbeInterval = config.Duration{Duration: 100 * time.Millisecond}
	cfg.Buffer.Path = t.TempDir()
	cfg.Retry.InitialBackoff = config.Duration{Duration: 10 * time.Millisecond}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	e, err := server.Start(context.Background(), cfg, nil, "test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		e.Shutdown(ctx)
	})

	for i := range 20 {
		post(t, e.PublicAddr, keyFor(0, n, fmt.Sprintf("ok%d", i)))
	}
	for i := range 7 {
		post(t, e.PublicAddr, keyFor(2, n, fmt.Sprintf("wait%d", i)))
	}
	deadID := post(t, e.PublicAddr, keyFor(1, n, "misrouted"))
	discardID := post(t, e.PublicAddr, keyFor(1, n, "unwanted"))

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	actx, acancel := chromedp.NewExecAllocator(ctx,
		chromedp.ExecPath(chromiumPath),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.NoFirstRun,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1200, 1000),
	)
	defer acancel()
	bctx, bcancel := chromedp.NewContext(actx)
	defer bcancel()
	// Start the browser, then read its console: a CSP violation or an
	// exception fails the test.
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	var problems atomic.Value
	problems.Store("")
	cctx, ccancel := context.WithCancel(bctx)
	defer ccancel()
	console := chromedp.Console(cctx)
	go func() {
		for m, err := range console {
			if err != nil {
				return
			}
			if m.IsException() || strings.Contains(m.Text, "Content Security Policy") || m.Type == chromedp.ConsoleError && !strings.Contains(m.Text, "401") {
				problems.Store(problems.Load().(string) + m.String() + "\n")
			}
		}
	}()

	page := "http://" + e.AdminAddr + "/"
	step := func(what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(bctx, actions...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	step("load the page", chromedp.Navigate(page))
	// Without the token the page says so.
	step("token asked for", chromedp.WaitVisible(chromedp.CSS(`#message.error`)))
	msg, err := chromedp.Run(bctx, chromedp.Text(chromedp.CSS(`#message`)))
	if err != nil || !strings.Contains(msg, "token") {
		t.Fatalf("without a token the page says %q (%v), want it to ask for the token", msg, err)
	}
	step("enter the token",
		chromedp.SendKeys(chromedp.CSS(`#token`), cfg.Admin.Token),
		chromedp.Click(chromedp.CSS(`#token-form button[type=submit]`)),
		chromedp.WaitVisible(chromedp.CSS(`#partitions tbody tr[data-partition="2"]`)),
	)
	table, err := chromedp.Run(bctx, chromedp.Text(chromedp.CSS(`#partitions`)))
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range bs {
		if !strings.Contains(table, b.srv.URL) {
			t.Errorf("partitions table does not show backend %s:\n%s", b.srv.URL, table)
		}
	}
	row2, _ := chromedp.Run(bctx, chromedp.Text(chromedp.CSS(`#partitions tbody tr[data-partition="2"]`)))
	if !strings.Contains(row2, "not ready") || !strings.Contains(row2, "7") {
		t.Errorf("partition 2 (backend down, 7 queued) shows %q", row2)
	}

	// The chart is an image from a blob: URL (fetched with the token).
	deadline := time.Now().Add(20 * time.Second)
	for {
		w, err := chromedp.Run(bctx, chromedp.Evaluate[int](`document.getElementById("chart").naturalWidth`))
		if err == nil && w > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("chart never drawn (naturalWidth %d, %v)", w, err)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// The dead letter is listed; clicking Replay (after the backend is
	// mended) re-queues it and it is delivered.
	rowSel := chromedp.CSS(fmt.Sprintf(`#dead-letters tbody tr[data-id="%s"]`, deadID))
	step("dead letter listed", chromedp.WaitVisible(rowSel))
	if os.Getenv(screenshotEnv) != "" {
		// Let the history gather samples of a steady trickle so the
		// chart has lines (this path only draws the docs' picture).
		for i := range 40 {
			post(t, e.PublicAddr, keyFor(0, n, fmt.Sprintf("trickle%d", i)))
			post(t, e.PublicAddr, keyFor(2, n, fmt.Sprintf("trickle%d", i)))
			time.Sleep(200 * time.Millisecond)
		}
		step("wait for a refresh", chromedp.WaitVisible(chromedp.CSS(`#partitions tbody tr`)))
		shot, err := chromedp.Run(bctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatal(err)
		}
		out := filepath.Join("..", "..", "docs", "status-page.png")
		if err := os.WriteFile(out, shot, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot written to %s", out)
	}
	bs[1].misroute.Store(false)
	step("click replay",
		chromedp.Click(chromedp.CSS(fmt.Sprintf(`#dead-letters tbody tr[data-id="%s"] button.replay`, deadID))),
		chromedp.WaitNotPresent(rowSel),
	)
	// The row can go (a periodic refresh) a moment before the click's own
	// message is written: wait for the message rather than read it once.
	if msg, ok := waitText(bctx, `#message`, "replayed", 20*time.Second); !ok {
		t.Errorf("after replay the page says %q", msg)
	}
	deadline = time.Now().Add(20 * time.Second)
	for bs[1].delivered.Load() == 0 || bs[1].lastID.Load() != deadID {
		if time.Now().After(deadline) {
			t.Fatalf("replayed dead letter %s never reached its backend", deadID)
		}
		time.Sleep(20 * time.Millisecond)
	}

	// Discard takes two clicks (the first asks "sure?"), then the row goes.
	discardRow := chromedp.CSS(fmt.Sprintf(`#dead-letters tbody tr[data-id="%s"]`, discardID))
	discardBtn := chromedp.CSS(fmt.Sprintf(`#dead-letters tbody tr[data-id="%s"] button.discard`, discardID))
	step("first discard click", chromedp.WaitVisible(discardRow), chromedp.Click(discardBtn))
	if txt, _ := chromedp.Run(bctx, chromedp.Text(discardBtn)); !strings.Contains(txt, "sure") {
		t.Errorf("after one click the discard button says %q, want it to ask", txt)
	}
	step("second discard click", chromedp.Click(discardBtn), chromedp.WaitNotPresent(discardRow))
	if msg, ok := waitText(bctx, `#message`, "discarded", 20*time.Second); !ok {
		t.Errorf("after discard the page says %q", msg)
	}
	dl, _ := http.NewRequest(http.MethodGet, "http://"+e.AdminAddr+"/edge/v1/dead-letters", nil)
	dl.Header.Set("Authorization", "Bearer "+cfg.Admin.Token)
	if resp, err := http.DefaultClient.Do(dl); err == nil {
		var body strings.Builder
		io.Copy(&body, resp.Body)
		resp.Body.Close()
		if strings.Contains(body.String(), discardID) {
			t.Errorf("discarded dead letter %s still listed: %s", discardID, body.String())
		}
	}

	// The lookup shows the delivery. The backend got the replayed request
	// a moment before the edge had its answer, so the lookup is asked again
	// until it says delivered (it was asked once: a lookup made before the
	// answer showed in_flight for good).
	step("look up", chromedp.SendKeys(chromedp.CSS(`#lookup-id`), deadID))
	deadline = time.Now().Add(20 * time.Second)
	for {
		step("look up", chromedp.Click(chromedp.CSS(`#lookup-form button`)))
		if got, ok := waitText(bctx, `#lookup-result`, `"delivered"`, 500*time.Millisecond); ok && strings.Contains(got, deadID) {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("lookup of %s shows %q, want it delivered", deadID, got)
		}
	}
	if p := problems.Load().(string); p != "" {
		t.Errorf("the page logged problems:\n%s", p)
	}
}

// waitText polls the text of the element sel until it contains want, for up
// to within (an answer the page is still fetching). It returns the last text
// and whether it contained want.
func waitText(ctx context.Context, sel, want string, within time.Duration) (string, bool) {
	deadline := time.Now().Add(within)
	for {
		got, _ := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
		if strings.Contains(got, want) {
			return got, true
		}
		if time.Now().After(deadline) {
			return got, false
		}
		time.Sleep(50 * time.Millisecond)
	}
}
