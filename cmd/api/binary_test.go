package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/flowedge/flowedge/internal/api"
)

const bootstrap = "crash-test-admin-key-0123"

// buildAPI builds this command into a temp dir.
func buildAPI(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	gobin := filepath.Join(os.Getenv("GOROOT"), "bin", "go")
	if _, err := os.Stat(gobin); err != nil {
		if gobin, err = exec.LookPath("go"); err != nil {
			t.Skip("no go tool")
		}
	}
	bin := filepath.Join(t.TempDir(), "api")
	out, err := exec.Command(gobin, "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// proc is a running api binary.
type proc struct {
	t   *testing.T
	cmd *exec.Cmd
	url string
	// metricsURL is the -metrics-listen base URL.
	metricsURL string
	mu         sync.Mutex
	logs       bytes.Buffer
	done       chan struct{} // closed when the process has exited
}

// startAPI runs bin on a free loopback port over dataDir and waits until
// it listens.
func startAPI(t *testing.T, bin, dataDir string, args ...string) *proc {
	t.Helper()
	return startAPIEnv(t, bin, dataDir, nil, args...)
}

// startAPIEnv is startAPI with env added to the process's environment.
func startAPIEnv(t *testing.T, bin, dataDir string, env []string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"-listen", "127.0.0.1:0", "-metrics-listen", "127.0.0.1:0", "-data-dir", dataDir}, args...)...)
	// The test polls jobs faster than the default 100 requests a minute.
	cmd.Env = append(os.Environ(), "FLOW_BOOTSTRAP_KEY="+bootstrap, "HOSTNAME=", "FLOW_RATE_LIMIT_DEFAULT=1000000/min")
	cmd.Env = append(cmd.Env, env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &proc{t: t, cmd: cmd, done: make(chan struct{})}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	addr := make(chan [2]string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Bytes()
			p.mu.Lock()
			p.logs.Write(line)
			p.logs.WriteByte('\n')
			p.mu.Unlock()
			var m struct {
				Msg, Addr   string
				MetricsAddr string `json:"metrics_addr"`
			}
			if json.Unmarshal(line, &m) == nil && m.Msg == "listening" {
				addr <- [2]string{m.Addr, m.MetricsAddr}
			}
		}
		_ = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = cmd.Process.Kill()
			<-p.done
		}
	})
	select {
	case a := <-addr:
		p.url, p.metricsURL = "http://"+a[0], "http://"+a[1]
	case <-p.done:
		t.Fatalf("api exited before listening:\n%s", p.log())
	case <-time.After(30 * time.Second):
		t.Fatalf("api did not listen:\n%s", p.log())
	}
	return p
}

func (p *proc) log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.logs.String()
}

// stop sends sig and waits for the exit; it returns the exit code.
func (p *proc) stop(sig syscall.Signal) int {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatal(err)
	}
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		p.t.Fatalf("api did not exit on %v:\n%s", sig, p.log())
	}
	return p.cmd.ProcessState.ExitCode()
}

var client = &http.Client{Timeout: 10 * time.Second}

// call makes a request with the bootstrap key and decodes a JSON answer
// into out (if not nil); it returns the status and the raw body.
func (p *proc) call(method, path, key string, body any, header map[string]string, out any) (int, []byte) {
	p.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, p.url+path, rd)
	if err != nil {
		p.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+key)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	res, err := client.Do(req)
	if err != nil {
		p.t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			p.t.Fatalf("%s %s: %d %s", method, path, res.StatusCode, b)
		}
	}
	return res.StatusCode, b
}

func (p *proc) mustCall(want int, method, path string, body any, header map[string]string, out any) []byte {
	p.t.Helper()
	code, b := p.call(method, path, bootstrap, body, header, out)
	if code != want {
		p.t.Fatalf("%s %s: %d, want %d: %s", method, path, code, want, b)
	}
	return b
}

func (p *proc) job(id string) api.Job {
	var j api.Job
	p.mustCall(200, "GET", "/jobs/"+id, nil, nil, &j)
	return j
}

func (p *proc) waitJob(id, status string) api.Job {
	p.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		j := p.job(id)
		if j.Status == status {
			return j
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("job %s is %s, want %s", id, j.Status, status)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestKill9 runs the binary, writes events, a key, a workflow and jobs,
// kills it with SIGKILL while one job is mid-delay and another is queued
// behind it, restarts it on the same data directory and checks that
// everything acknowledged is there, that replays still dedupe, and that
// the interrupted job resumes (run again, in the same delay, its first
// step not repeated) and the queued one runs after it (once the resumed
// one is cancelled: its delay is long, so it cannot end before the kill).
func TestKill9(t *testing.T) {
	bin := buildAPI(t)
	data := filepath.Join(t.TempDir(), "data")
	p := startAPI(t, bin, data, "-workers", "2")

	const pid = "proc-crash"
	answers := map[string][]byte{}
	for i := range 20 {
		rid := fmt.Sprintf("delivery-%02d", i)
		answers[rid] = p.mustCall(201, "POST", "/api/v1/processes/"+pid+"/events", map[string]any{"type": "e", "i": i},
			map[string]string{"X-Process-ID": pid, "X-Request-ID": rid, "Idempotency-Key": rid, "X-Edge-Attempt": "1"}, nil)
	}
	var key struct{ ID, Key string }
	p.mustCall(201, "POST", "/api/v1/keys", map[string]any{"name": "survivor"}, nil, &key)
	var long, quick api.Workflow
	p.mustCall(201, "POST", "/api/v1/workflows", map[string]any{"name": "long", "steps": []any{
		map[string]any{"type": "event", "event_type": "long.start"},
		// Flake: a 1.5 s delay could end before the kill on a loaded machine.
		map[string]any{"type": "delay", "ms": 600_000},
		map[string]any{"type": "event", "event_type": "long.end"},
	}}, nil, &long)
	p.mustCall(201, "POST", "/api/v1/workflows", map[string]any{"name": "quick", "steps": []any{
		map[string]any{"type": "event", "event_type": "quick"},
	}}, nil, &quick)
	var running, queued api.Job
	p.mustCall(201, "POST", "/jobs", map[string]any{"workflow_id": long.ID}, map[string]string{"X-Process-ID": "proc-jobs"}, &running)
	p.mustCall(201, "POST", "/jobs", map[string]any{"workflow_id": quick.ID}, map[string]string{"X-Process-ID": "proc-jobs"}, &queued)
	inDelay := func(j api.Job) bool { return j.Status == api.JobRunning && j.Steps[1].Status == "running" }
	deadline := time.Now().Add(10 * time.Second)
	j := p.job(running.ID)
	for ; !inDelay(j); j = p.job(running.ID) {
		if time.Now().After(deadline) {
			t.Fatalf("long job never reached its delay: %+v", j)
		}
		time.Sleep(5 * time.Millisecond)
	}
	delayStart := *j.Steps[1].StartedAt
	if j := p.job(queued.ID); j.Status != api.JobQueued {
		t.Fatalf("quick job is %s before the kill, want queued", j.Status)
	}

	if code := p.stop(syscall.SIGKILL); code != -1 {
		t.Fatalf("exit code %d after SIGKILL", code)
	}

	p = startAPI(t, bin, data, "-workers", "2")
	// Events: all 20, in order; a replayed delivery answers as before and
	// appends nothing.
	var evs struct{ Items []api.Event }
	p.mustCall(200, "GET", "/api/v1/processes/"+pid+"/events", nil, nil, &evs)
	if len(evs.Items) != 20 {
		t.Fatalf("%d events after the kill, want 20", len(evs.Items))
	}
	for i, ev := range evs.Items {
		if ev.Seq != uint64(i+1) {
			t.Fatalf("event %d has seq %d", i, ev.Seq)
		}
	}
	b := p.mustCall(201, "POST", "/api/v1/processes/"+pid+"/events", map[string]any{"type": "e", "i": 7},
		map[string]string{"X-Process-ID": pid, "X-Request-ID": "delivery-07", "Idempotency-Key": "delivery-07", "X-Edge-Attempt": "2"}, nil)
	if !bytes.Equal(b, answers["delivery-07"]) {
		t.Fatalf("replay after kill answered %s, first answer %s", b, answers["delivery-07"])
	}
	var proc api.Process
	p.mustCall(200, "GET", "/api/v1/processes/"+pid, nil, nil, &proc)
	if proc.Events != 20 {
		t.Fatalf("%d events after the replay, want 20", proc.Events)
	}
	// Keys: the created key still works.
	if code, b := p.call("GET", "/api/v1/apps", key.Key, nil, nil, nil); code != 200 {
		t.Fatalf("created key after kill: %d %s", code, b)
	}
	// Jobs: the interrupted one resumes in its delay, counting from the
	// delay's first start; the queued one waits behind it, then runs after
	// it once it is cancelled.
	deadline = time.Now().Add(20 * time.Second)
	for j = p.job(running.ID); j.Runs != 2 || !inDelay(j); j = p.job(running.ID) {
		if time.Now().After(deadline) || j.Runs > 2 || (j.Status != api.JobQueued && j.Status != api.JobRunning) {
			t.Fatalf("long job after restart: %+v, want it run again and in its delay", j)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !j.Steps[1].StartedAt.Equal(delayStart) {
		t.Fatalf("the resumed delay started again at %v, first at %v", j.Steps[1].StartedAt, delayStart)
	}
	if q := p.job(queued.ID); q.Status != api.JobQueued {
		t.Fatalf("quick job is %s while the resumed one runs, want queued", q.Status)
	}
	var a api.Job
	p.mustCall(200, "POST", "/jobs/"+running.ID+"/cancel", nil, nil, &a)
	q := p.waitJob(queued.ID, api.JobSucceeded)
	if a.Status != api.JobCancelled || a.Runs != 2 || q.Runs != 1 || !a.FinishedAt.Before(*q.StartedAt) {
		t.Fatalf("after restart: long %+v, quick %+v", a, q)
	}
	var jevs struct{ Items []api.Event }
	p.mustCall(200, "GET", "/api/v1/processes/proc-jobs/events", nil, nil, &jevs)
	var types []string
	for _, ev := range jevs.Items {
		types = append(types, ev.Type)
	}
	if strings.Join(types, ",") != "long.start,quick" {
		t.Fatalf("job events %v", types)
	}
	if !strings.Contains(p.log(), "jobs queued again after restart") {
		t.Fatalf("no recovery log line:\n%s", p.log())
	}
}

// TestSIGTERM: SIGTERM shuts down cleanly (exit 0), and the data is there
// at the next start.
func TestSIGTERM(t *testing.T) {
	bin := buildAPI(t)
	data := filepath.Join(t.TempDir(), "data")
	p := startAPI(t, bin, data)
	p.mustCall(201, "POST", "/api/v1/apps", map[string]any{"name": "kept"}, nil, nil)
	if code := p.stop(syscall.SIGTERM); code != 0 {
		t.Fatalf("exit code %d after SIGTERM:\n%s", code, p.log())
	}
	if !strings.Contains(p.log(), `"msg":"stopped"`) {
		t.Fatalf("no clean stop in the log:\n%s", p.log())
	}
	p = startAPI(t, bin, data)
	var apps struct{ Items []api.App }
	p.mustCall(200, "GET", "/api/v1/apps", nil, nil, &apps)
	if len(apps.Items) != 1 || apps.Items[0].Name != "kept" {
		t.Fatalf("apps after restart: %+v", apps.Items)
	}
	if code := p.stop(syscall.SIGINT); code != 0 {
		t.Fatalf("exit code %d after SIGINT", code)
	}
}
