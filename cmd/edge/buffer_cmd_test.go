package main

import (
	"bufio"
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flowedge/flowedge/internal/buffer"
)

func fillBuffer(t *testing.T, dir string, n int) {
	t.Helper()
	q, err := buffer.Open(buffer.Options{Path: dir, Partitions: 2})
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		r := &buffer.Record{ID: "id-" + string(rune('a'+i)), Partition: i % 2, Key: "k", Method: "POST",
			Path: "/x", Body: []byte("hello"), ReceivedAt: time.Now().Add(-time.Minute)}
		if _, err := q.Append(context.Background(), []*buffer.Record{r}); err != nil {
			t.Fatal(err)
		}
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
}

func runBufferCmd(args ...string) (int, string, string) {
	var out, errOut strings.Builder
	code := runBuffer(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestBufferCheck(t *testing.T) {
	dir := t.TempDir()
	fillBuffer(t, dir, 5)
	code, out, errOut := runBufferCmd("check", "-path", dir)
	if code != 0 {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
	t.Logf("edge buffer check:\n%s", out)
	for _, want := range []string{"records      5", "OK", "oldest "} {
		if !strings.Contains(out, want) {
			t.Fatalf("output lacks %q:\n%s", want, out)
		}
	}
	code, out, _ = runBufferCmd("check", "-path", dir, "-json")
	var rep checkJSON
	if code != 0 || json.Unmarshal([]byte(out), &rep) != nil || rep.Records != 5 || len(rep.Partitions) != 2 || rep.Oldest == nil {
		t.Fatalf("json: exit %d, %+v\n%s", code, rep, out)
	}
	for _, want := range []string{`"dead_letters": 0`, `"first_seq"`, `"oldest": "`} {
		if !strings.Contains(out, want) {
			t.Errorf("json lacks %s (snake_case keys):\n%s", want, out)
		}
	}
}

// TestBufferCheckJSONEmpty: an empty queue's -json report says "oldest":
// null, not a zero time, and has snake_case keys (a bug: PascalCase keys
// and "0001-01-01T00:00:00Z").
func TestBufferCheckJSONEmpty(t *testing.T) {
	dir := t.TempDir()
	fillBuffer(t, dir, 0)
	code, out, errOut := runBufferCmd("check", "-path", dir, "-json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatal(err)
	}
	if v, ok := m["oldest"]; !ok || v != nil {
		t.Errorf("oldest = %v (present %v), want null:\n%s", v, ok, out)
	}
	if strings.Contains(out, "0001-01-01") || strings.Contains(out, `"Records"`) {
		t.Errorf("zero time or PascalCase key in:\n%s", out)
	}
	if _, ok := m["dead_letters"]; !ok {
		t.Errorf("no dead_letters key:\n%s", out)
	}
}

func TestBufferExport(t *testing.T) {
	dir := t.TempDir()
	fillBuffer(t, dir, 3)
	code, out, errOut := runBufferCmd("export", "-path", dir)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	sc := bufio.NewScanner(strings.NewReader(out))
	n := 0
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		if m["body"] != "aGVsbG8=" || m["method"] != "POST" {
			t.Fatalf("line %v", m)
		}
		n++
	}
	if n != 3 {
		t.Fatalf("%d lines", n)
	}
	file := filepath.Join(t.TempDir(), "out.ndjson")
	if code, _, errOut := runBufferCmd("export", "-path", dir, "-o", file); code != 0 {
		t.Fatalf("export -o: exit %d: %s", code, errOut)
	}
}

func TestBufferUsage(t *testing.T) {
	for _, args := range [][]string{{}, {"check"}, {"frob", "-path", "x"}, {"check", "-path", "x", "extra"}, {"export", "-bogus"}} {
		if code, _, _ := runBufferCmd(args...); code != 2 {
			t.Errorf("%q: exit %d, want 2", args, code)
		}
	}
	if code, _, _ := runBufferCmd("check", "-path", filepath.Join(t.TempDir(), "missing")); code != 1 {
		t.Errorf("missing dir: exit %d, want 1", code)
	}
}
