package partition

import (
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// TestPythonReference runs the Python reference of the partition function
// (testdata/partition.py, shown in docs/partitioning.md) and checks that it
// agrees with Of on the golden keys and a few thousand others, for several
// counts. Skips when python3 or its xxhash module is missing
// (scripts/test-deps.sh installs python3-xxhash).
func TestPythonReference(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 not installed")
	}
	if err := exec.Command(py, "-c", "import xxhash").Run(); err != nil {
		// pyenv or a venv may hide Debian's module: try the system python.
		if err2 := exec.Command("/usr/bin/python3", "-c", "import xxhash").Run(); err2 != nil {
			t.Skipf("python3 has no xxhash module (python3-xxhash): %v", err)
		}
		py = "/usr/bin/python3"
	}
	var in strings.Builder
	var want []int
	keys := []string{"", "a", "proc-1", "proc-42", "order-123", "user:alice", "ünïcødé", "a/b?c%25"}
	for i := range 2000 {
		keys = append(keys, fmt.Sprintf("process-%d", i))
	}
	for _, k := range keys {
		for _, n := range []int{1, 2, 3, 5, 16, 1000} {
			fmt.Fprintf(&in, "%s\t%d\n", k, n)
			want = append(want, OfString(k, n))
		}
	}
	cmd := exec.Command(py, "testdata/partition.py")
	cmd.Stdin = strings.NewReader(in.String())
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("python reference: %v", err)
	}
	got := strings.Fields(string(out))
	if len(got) != len(want) {
		t.Fatalf("python gave %d answers, want %d", len(got), len(want))
	}
	for i, g := range got {
		if n, _ := strconv.Atoi(g); n != want[i] {
			t.Fatalf("line %d (%q): python says %s, Go says %d", i, strings.Split(in.String(), "\n")[i], g, want[i])
		}
	}
}
