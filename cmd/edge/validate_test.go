package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flowedge/flowedge/internal/partition"
)

// runEdge runs the built binary and returns its exit code, stdout and stderr.
func runEdge(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("go tool not in PATH")
	}
	bin := edgeBinary(t)
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, stdout.String(), stderr.String()
	case errors.As(err, &ee):
		return ee.ExitCode(), stdout.String(), stderr.String()
	default:
		t.Fatalf("run %v: %v", args, err)
		return 0, "", ""
	}
}

func writeTOML(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "edge.toml")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestValidateCommand(t *testing.T) {
	tests := []struct {
		name    string
		content string
		code    int
		want    string // in stderr, after the file name
	}{
		{
			name:    "count zero",
			content: "[partition]\ncount = 0\n[backends]\ntemplate = \"http://b-{N}:8080\"\n",
			code:    78,
			want:    ":2: partition.count: must be set",
		},
		{
			name:    "unknown key",
			content: "[partition]\ncount = 1\n[backends]\ntemplate = \"http://b-{N}:8080\"\nprobe_intervall = \"2s\"\n",
			code:    78,
			want:    ":5: backends.probe_intervall: unknown key",
		},
		{
			name:    "urls not count",
			content: "[partition]\ncount = 3\n[backends]\nurls = [\"http://127.0.0.1:9001\"]\n",
			code:    78,
			want:    ":4: backends.urls: must have exactly partition.count (3) entries, got 1",
		},
		{
			name:    "bad duration",
			content: "[partition]\ncount = 1\n[backends]\ntemplate = \"http://b-{N}:8080\"\n[retry]\nmax_backoff = \"30 seconds\"\n",
			code:    78,
			want:    ":6: retry.max_backoff: invalid duration",
		},
		{
			name:    "syntax error",
			content: "[partition\ncount = 1\n",
			code:    78,
			want:    ":1: TOML syntax",
		},
		{
			name:    "valid",
			content: "[partition]\ncount = 1\n[backends]\ntemplate = \"http://b-{N}:8080\"\n",
			code:    0,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeTOML(t, tt.content)
			code, stdout, stderr := runEdge(t, "validate", "-config", path)
			if code != tt.code {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tt.code, stdout, stderr)
			}
			if tt.code == 0 {
				if want := "config OK: " + path + "\n"; stdout != want {
					t.Errorf("stdout = %q, want %q", stdout, want)
				}
				return
			}
			if !strings.Contains(stderr, path+tt.want) {
				t.Errorf("stderr does not contain %q:\n%s", path+tt.want, stderr)
			}
		})
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	path := writeTOML(t, `[server]
respond = "maybe"
[partition]
count = 0
[backends]
template = "http://b:8080"
[delivery]
ordering = "fifo"
`)
	code, _, stderr := runEdge(t, "validate", "-config", path)
	if code != 78 {
		t.Fatalf("exit %d, want 78\n%s", code, stderr)
	}
	for _, want := range []string{
		path + ":2: server.respond: ",
		path + ":4: partition.count: ",
		path + ":6: backends.template: ",
		path + ":8: delivery.ordering: ",
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr does not contain %q:\n%s", want, stderr)
		}
	}
}

func TestValidateExampleConfigs(t *testing.T) {
	for _, path := range []string{"../../configs/edge.toml", "../../configs/local/edge.toml"} {
		code, stdout, stderr := runEdge(t, "validate", "-config", path)
		if code != 0 {
			t.Errorf("validate %s: exit %d\n%s", path, code, stderr)
		}
		if !strings.HasPrefix(stdout, "config OK: ") {
			t.Errorf("validate %s: stdout %q", path, stdout)
		}
	}
}

func TestValidateUnreadable(t *testing.T) {
	path := filepath.Join(t.TempDir(), "missing.toml")
	code, _, stderr := runEdge(t, "validate", "-config", path)
	if code != 78 {
		t.Fatalf("exit %d, want 78", code)
	}
	if !strings.Contains(stderr, path) || !strings.Contains(stderr, "no such file") {
		t.Errorf("stderr does not say the file is missing:\n%s", stderr)
	}
}

func TestRouteCommand(t *testing.T) {
	path := writeTOML(t, `[partition]
count = 5
[backends]
template = "http://api-flow-{N}.api-flow:8080"
`)
	keys := []string{"proc-1", "proc-42", "order-123", "user:alice"}
	code, stdout, stderr := runEdge(t, append([]string{"route", "-config", path}, keys...)...)
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, stderr)
	}
	var want strings.Builder
	for _, k := range keys {
		p := partition.OfString(k, 5)
		fmt.Fprintf(&want, "key=%s partition=%d backend=http://api-flow-%d.api-flow:8080\n", k, p, p)
	}
	if stdout != want.String() {
		t.Errorf("stdout =\n%s\nwant\n%s", stdout, want.String())
	}
}

func TestRouteInvalidConfig(t *testing.T) {
	path := writeTOML(t, "[partition]\ncount = 0\n")
	code, _, stderr := runEdge(t, "route", "-config", path, "proc-1")
	if code != 78 {
		t.Fatalf("exit %d, want 78\n%s", code, stderr)
	}
	if !strings.Contains(stderr, "partition.count") {
		t.Errorf("stderr does not name partition.count:\n%s", stderr)
	}
}

func TestUsage(t *testing.T) {
	code, _, stderr := runEdge(t, "frobnicate")
	if code != 2 || !strings.Contains(stderr, "usage: edge <command>") {
		t.Errorf("unknown command: exit %d, stderr:\n%s", code, stderr)
	}
	if code, _, _ := runEdge(t); code != 2 {
		t.Errorf("no command: exit %d, want 2", code)
	}
	if code, _, _ := runEdge(t, "route", "-config", "x.toml"); code != 2 {
		t.Errorf("route without KEY: exit %d, want 2", code)
	}
	if code, stdout, _ := runEdge(t, "version"); code != 0 || !strings.HasPrefix(stdout, "edge ") {
		t.Errorf("version: exit %d, stdout %q", code, stdout)
	}
}

func TestPrintableKey(t *testing.T) {
	for in, want := range map[string]string{
		"proc-1":    "proc-1",
		"ünïcode":   "ünïcode",
		"":          `""`,
		"a b":       `"a b"`,
		"line\nkey": `"line\nkey"`,
		`q"uote`:    `"q\"uote"`,
	} {
		if got := printableKey(in); got != want {
			t.Errorf("printableKey(%q) = %s, want %s", in, got, want)
		}
	}
}
