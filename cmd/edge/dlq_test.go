package main

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/flowedge/flowedge/internal/config"
	"github.com/flowedge/flowedge/internal/server"
)

func runDLQCmd(args ...string) (int, string, string) {
	var out, errOut strings.Builder
	code := runDLQ(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// TestDLQCommands runs `edge dlq` against a running edge whose backend
// answers 421 (so every write is a dead letter) and whose admin API needs
// a token. Regression for the CLI bugs: flags after the ID printed usage
// and exited 2 without a reason; discard printed nothing; --help exited 2.
func TestDLQCommands(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/health/readiness" {
			return
		}
		w.WriteHeader(http.StatusMisdirectedRequest)
	}))
	defer backend.Close()
	cfg := config.Default()
	cfg.Server.Address, cfg.Admin.Address = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Server.Respond = config.RespondAccept
	cfg.Admin.Token = "tok"
	cfg.Partition.Count = 1
	cfg.Backends.URLs = []string{backend.URL}
	cfg.Buffer.Path = t.TempDir()
	e, err := server.Start(context.Background(), cfg, nil, "test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		e.Shutdown(ctx)
	})
	admin := "http://" + e.AdminAddr
	var ids []string
	for range 2 {
		req, _ := http.NewRequest(http.MethodPost, "http://"+e.PublicAddr+"/x", strings.NewReader("b"))
		req.Header.Set("X-Process-ID", "k")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		ids = append(ids, resp.Header.Get("X-Delivery-ID"))
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, out, _ := runDLQCmd("list", "-admin", admin, "-token", "tok")
		var l struct {
			DeadLetters []struct{ ID string } `json:"dead_letters"`
		}
		if code == 0 && json.Unmarshal([]byte(out), &l) == nil && len(l.DeadLetters) == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("dead letters never listed: exit %d %s", code, out)
		}
		time.Sleep(20 * time.Millisecond)
	}

	if code, out, _ := runDLQCmd("--help"); code != 0 || !strings.Contains(out, "usage: edge dlq") {
		t.Errorf("dlq --help: exit %d, %q", code, out)
	}
	if code, _, errOut := runDLQCmd("replay", "-admin", admin); code != 2 || !strings.Contains(errOut, "needs exactly one dead letter id") {
		t.Errorf("replay without id: exit %d, %q", code, errOut)
	}
	if code, _, errOut := runDLQCmd("replay", ids[0], "-admin", admin); code != 1 || !strings.Contains(errOut, "401") || !strings.Contains(errOut, "-token") {
		t.Errorf("replay without token: exit %d, %q, want 1 naming the 401 and -token", code, errOut)
	}
	code, out, errOut := runDLQCmd("replay", ids[0], "-admin", admin, "-token", "tok")
	if code != 0 || !strings.Contains(out, "replayed dead letter "+ids[0]) {
		t.Errorf("replay ID -admin URL -token T: exit %d, %q %q", code, out, errOut)
	}
	code, out, errOut = runDLQCmd("discard", "-token", "tok", ids[1], "-admin", admin)
	if code != 0 || out != "discarded dead letter "+ids[1]+"\n" {
		t.Errorf("discard: exit %d, %q %q", code, out, errOut)
	}
	if code, _, errOut := runDLQCmd("discard", ids[1], "-admin", admin, "-token", "tok"); code != 1 || !strings.Contains(errOut, "404") {
		t.Errorf("second discard: exit %d, %q, want 1 with the 404", code, errOut)
	}
	if code, _, errOut := runDLQCmd("frob"); code != 2 || !strings.Contains(errOut, `unknown subcommand "frob"`) {
		t.Errorf("unknown subcommand: exit %d, %q", code, errOut)
	}
}
