package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/flowedge/flowedge/internal/partition"
	"github.com/flowedge/flowedge/internal/testutil"
)

// freePorts returns n distinct loopback ports free a moment ago (see
// testutil.FreePort: outside the ephemeral range, as the stack's processes
// are restarted on them).
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	seen := map[int]bool{}
	var ports []int
	for len(ports) < n {
		p, err := testutil.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		if !seen[p] {
			seen[p] = true
			ports = append(ports, p)
		}
	}
	return ports
}

// TestLocalStackOutage runs the local stack of `make run`
// (scripts/run-local.sh, the Makefile and configs/local, copied into a temp
// dir, on free ports) and the README's outage step with its documented
// commands: `make backend-stop N` stops one backend, the script reports it
// and the stack stays up, writes for that partition answer 202 queued,
// `make backend-start N` brings it back and the writes arrive in order.
// Regression for the script stopping everything when one backend exited,
// printing no PIDs and truncating its logs.
func TestLocalStackOutage(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binaries and runs the local stack script")
	}
	for _, tool := range []string{"bash", "curl", "make"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("the local stack script needs %s: %v", tool, err)
		}
	}
	root := t.TempDir()
	for _, f := range []string{"scripts/run-local.sh", "configs/local/edge.toml", "configs/local/api.toml", "Makefile"} {
		b, err := os.ReadFile(filepath.Join("..", f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Join(root, filepath.Dir(f)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, f), b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	buildBinaries(t, filepath.Join(root, "bin"))
	ports := freePorts(t, 8)
	env := append(os.Environ(),
		"FLOWEDGE_PUBLIC_PORT="+strconv.Itoa(ports[0]), "FLOWEDGE_ADMIN_PORT="+strconv.Itoa(ports[1]),
		"FLOWEDGE_API_PORT_0="+strconv.Itoa(ports[2]), "FLOWEDGE_API_PORT_1="+strconv.Itoa(ports[3]),
		"FLOWEDGE_API_PORT_2="+strconv.Itoa(ports[4]), "FLOWEDGE_METRICS_PORT_0="+strconv.Itoa(ports[5]),
		"FLOWEDGE_METRICS_PORT_1="+strconv.Itoa(ports[6]), "FLOWEDGE_METRICS_PORT_2="+strconv.Itoa(ports[7]),
		"EDGE_ADMIN_TOKEN=", "FLOW_BOOTSTRAP_KEY=", "FLOW_RUN_DATA=")
	public := fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	admin := fmt.Sprintf("http://127.0.0.1:%d", ports[1])
	const apiKey = "local-dev-key-0000000000"

	var out testutil.LockedBuffer
	script := exec.Command("bash", "scripts/run-local.sh")
	script.Dir, script.Env, script.Stdout, script.Stderr = root, env, &out, &out
	script.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := script.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { script.Wait(); close(exited) }()
	// Whatever happens, nothing is left running: the script's own stop on
	// SIGTERM, then SIGKILL of its group and of every pid it recorded.
	t.Cleanup(func() {
		pids := stackPIDs(root)
		script.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(60 * time.Second):
			syscall.Kill(-script.Process.Pid, syscall.SIGKILL)
		}
		for _, pid := range pids {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		if t.Failed() {
			t.Logf("run-local.sh output:\n%s", out.String())
		}
	})
	waitFor(t, 90*time.Second, "the stack is up", func() bool {
		select {
		case <-exited:
			t.Fatalf("run-local.sh exited at start:\n%s", out.String())
		default:
		}
		return strings.Contains(out.String(), "flowedge local stack is up")
	})
	for _, name := range []string{"edge", "api-flow-0", "api-flow-1", "api-flow-2"} {
		if !strings.Contains(out.String(), name) || !strings.Contains(out.String(), "pid ") {
			t.Errorf("the banner does not show %s with its pid:\n%s", name, out.String())
		}
	}

	client := &http.Client{Timeout: 30 * time.Second}
	key := processIDsWhere("local", 1, func(pid string) bool { return partition.OfString(pid, 3) == 1 })[0]
	write := func(key, typ string) (int, string) {
		req, _ := http.NewRequest(http.MethodPost, public+"/api/v1/processes/"+key+"/events", strings.NewReader(`{"type":"`+typ+`"}`))
		req.Header.Set("X-Process-ID", key)
		req.Header.Set("Authorization", "Bearer "+apiKey)
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("POST %s: %v", key, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	runMake := func(target string) string {
		cmd := exec.Command("make", "-s", target, "1")
		cmd.Dir, cmd.Env = root, env
		b, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("make %s 1: %v\n%s", target, err, b)
		}
		return string(b)
	}

	if code, body := write(key, "e0"); code != http.StatusCreated {
		t.Fatalf("first write: %d %s, want 201 relayed from api-flow-1", code, body)
	}
	if got := runMake("backend-stop"); !strings.Contains(got, "api-flow-1 stopped") {
		t.Errorf("make backend-stop 1 said %q", got)
	}
	waitFor(t, 10*time.Second, "the script to report api-flow-1's exit", func() bool {
		return strings.Contains(out.String(), "api-flow-1 exited")
	})
	for i := 1; i <= 3; i++ {
		code, body := write(key, "e"+strconv.Itoa(i))
		if code != http.StatusAccepted || !strings.Contains(body, `"queued"`) {
			t.Fatalf("write %d while api-flow-1 is down: %d %s, want 202 queued", i, code, body)
		}
	}
	select {
	case <-exited:
		t.Fatalf("the script stopped when one backend exited:\n%s", out.String())
	default:
	}
	other := processIDsWhere("other", 1, func(pid string) bool { return partition.OfString(pid, 3) == 0 })[0]
	if code, body := write(other, "x"); code != http.StatusCreated {
		t.Errorf("a write for partition 0 during the outage: %d %s, want 201", code, body)
	}
	if got := runMake("backend-start"); !strings.Contains(got, "api-flow-1 started (pid") {
		t.Errorf("make backend-start 1 said %q", got)
	}

	var types []string
	waitFor(t, 60*time.Second, "the queued writes to arrive", func() bool {
		req, _ := http.NewRequest(http.MethodGet, public+"/api/v1/processes/"+key+"/events", nil)
		req.Header.Set("X-Process-ID", key)
		req.Header.Set("Authorization", "Bearer "+apiKey)
		resp, err := client.Do(req)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var page struct {
			Items []struct {
				Type string `json:"type"`
			} `json:"items"`
		}
		if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&page) != nil {
			return false
		}
		types = types[:0]
		for _, it := range page.Items {
			types = append(types, it.Type)
		}
		return len(types) >= 4
	})
	if got := strings.Join(types, ","); got != "e0,e1,e2,e3" {
		t.Errorf("events of %s: %s, want e0,e1,e2,e3 (each once, in order)", key, got)
	}
	waitFor(t, 10*time.Second, "the script to report api-flow-1's return", func() bool {
		return strings.Contains(out.String(), "api-flow-1 is back")
	})
	if resp, err := client.Get(admin + "/health/readiness"); err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("edge readiness after the outage: %v %v", resp, err)
	}
	log, _ := os.ReadFile(filepath.Join(root, "data", "api-flow-1.log"))
	if n := strings.Count(string(log), "run-local: starting api-flow-1"); n != 2 {
		t.Errorf("api-flow-1.log holds %d starts, want 2 (appended, not truncated)", n)
	}

	// SIGTERM (as Ctrl-C): everything stops, nothing is left running.
	pids := stackPIDs(root)
	if len(pids) != 4 {
		t.Errorf("pid files name %d processes, want 4", len(pids))
	}
	script.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(60 * time.Second):
		t.Fatal("the script did not stop within 60 s of SIGTERM")
	}
	for _, pid := range pids {
		if running(pid) {
			t.Errorf("pid %d still runs after the script stopped", pid)
		}
	}
	if !strings.Contains(out.String(), "stopped") {
		t.Errorf("the script did not say it stopped:\n%s", out.String())
	}
}

// stackPIDs reads the pid files of the local stack under root.
func stackPIDs(root string) []int {
	files, _ := filepath.Glob(filepath.Join(root, "data", "run", "*.pid"))
	var pids []int
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 0 {
			pids = append(pids, pid)
		}
	}
	return pids
}

// running reports whether pid is a live process (a zombie waiting to be
// reaped by whoever adopted it is not).
func running(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true // no /proc: trust kill
	}
	// pid (comm) STATE ...: the state follows the last ')'.
	i := bytes.LastIndexByte(stat, ')')
	return i < 0 || i+2 >= len(stat) || stat[i+2] != 'Z'
}
