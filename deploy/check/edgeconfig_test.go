package check

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestRenderedEdgeConfigValidates runs the edge's own `edge validate` on the
// edge.toml of every render, so the chart can never ship a configuration the
// binary refuses (unknown key, bad value, template and count mismatch).
func TestRenderedEdgeConfigValidates(t *testing.T) {
	rs := renders(t)
	edge := binary(t, "edge")
	checked := 0
	for _, r := range rs {
		o := decodeStrict(t, r)
		cfg := o.edgeTOML(t)
		if cfg == "" {
			continue
		}
		checked++
		t.Run(r.name, func(t *testing.T) {
			f := filepath.Join(t.TempDir(), "edge.toml")
			if err := os.WriteFile(f, []byte(cfg), 0o644); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(edge, "validate", "-config", f)
			// As in the pod: the admin token comes from a Secret via the env.
			cmd.Env = append(os.Environ(), "EDGE_ADMIN_TOKEN=deploy-check-token")
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Errorf("edge validate refuses the chart's edge.toml (%v):\n%s\n--- edge.toml ---\n%s", err, out, cfg)
			}
		})
	}
	if checked == 0 {
		t.Fatal("no render has an edge ConfigMap")
	}
}
