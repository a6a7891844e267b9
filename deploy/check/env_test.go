package check

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// repoRoot is the repository root: FLOWEDGE_REPO_ROOT, else two levels up
// from this module (deploy/check).
func repoRoot(t testing.TB) string {
	t.Helper()
	if r := os.Getenv("FLOWEDGE_REPO_ROOT"); r != "" {
		return r
	}
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Clean(filepath.Join(wd, "..", ".."))
}

// deployPath joins elem under <repo>/deploy.
func deployPath(t testing.TB, elem ...string) string {
	return filepath.Join(append([]string{repoRoot(t), "deploy"}, elem...)...)
}

// render is one `helm template` output: the objects of one values set.
type render struct {
	name string // file name without .yaml: "default", "partitions-5-values"…
	docs []doc
}

// doc is one rendered object, raw and as a generic map.
type doc struct {
	raw  []byte
	obj  map[string]any
	kind string
	name string
}

func (d doc) apiVersion() string { s, _ := d.obj["apiVersion"].(string); return s }

// renders loads every file of FLOWEDGE_RENDERED, or skips the test.
func renders(t *testing.T) []render {
	t.Helper()
	dir := os.Getenv("FLOWEDGE_RENDERED")
	if dir == "" {
		t.Skip("FLOWEDGE_RENDERED is not set: run through `make deploy-check`, which renders the chart first")
	}
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatalf("no rendered manifests in %s", dir)
	}
	sort.Strings(files)
	var out []render
	for _, f := range files {
		r := render{name: strings.TrimSuffix(filepath.Base(f), ".yaml")}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		rd := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(b)))
		for {
			raw, err := rd.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			var obj map[string]any
			if err := yaml.Unmarshal(raw, &obj); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if obj == nil { // comments only
				continue
			}
			d := doc{raw: raw, obj: obj}
			d.kind, _ = obj["kind"].(string)
			if md, ok := obj["metadata"].(map[string]any); ok {
				d.name, _ = md["name"].(string)
			}
			r.docs = append(r.docs, d)
		}
		out = append(out, r)
	}
	return out
}

// binaries builds ./cmd/edge and ./cmd/api once per test process.
var binaries struct {
	once sync.Once
	dir  string
	errs map[string]error
}

// binary returns the path of the built cmd/<name>. It skips the test when
// cmd/<name> does not exist in the repository yet, and fails it when the
// package exists but does not build.
func binary(t *testing.T, name string) string {
	t.Helper()
	root := repoRoot(t)
	binaries.once.Do(func() {
		binaries.errs = map[string]error{}
		dir, err := os.MkdirTemp("", "flowedge-deploy-check-")
		if err != nil {
			binaries.errs["*"] = err
			return
		}
		binaries.dir = dir
		for _, n := range []string{"edge", "api"} {
			if _, err := os.Stat(filepath.Join(root, "cmd", n)); err != nil {
				binaries.errs[n] = errAbsent
				continue
			}
			cmd := exec.Command("go", "build", "-buildvcs=false", "-o", filepath.Join(dir, n), "./cmd/"+n)
			cmd.Dir = root
			cmd.Env = append(os.Environ(), "GOWORK=off")
			if out, err := cmd.CombinedOutput(); err != nil {
				binaries.errs[n] = errors.New("go build ./cmd/" + n + ": " + err.Error() + "\n" + string(out))
			}
		}
	})
	if err := binaries.errs["*"]; err != nil {
		t.Fatal(err)
	}
	switch err := binaries.errs[name]; {
	case errors.Is(err, errAbsent):
		t.Skipf("cmd/%s does not exist in %s yet: nothing to run", name, root)
	case err != nil:
		t.Fatal(err)
	}
	return filepath.Join(binaries.dir, name)
}

var errAbsent = errors.New("absent")

func TestMain(m *testing.M) {
	code := m.Run()
	if binaries.dir != "" {
		os.RemoveAll(binaries.dir)
	}
	os.Exit(code)
}
