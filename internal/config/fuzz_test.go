package config

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// FuzzParse checks that no input makes Parse panic, that every failure is an
// *Error with at least one problem, and that every success validates.
func FuzzParse(f *testing.F) {
	for _, p := range []string{
		filepath.Join("..", "..", "configs", "edge.toml"),
		filepath.Join("..", "..", "configs", "local", "edge.toml"),
	} {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	for _, s := range []string{
		minimal,
		"",
		"[server]\nrelay_timeout = \"2 seconds\"\n",
		"[partition]\ncount = 0\n",
		"server = 3\n",
		"routes = [1, 2]\n",
		"[[routes]]\nprefix = \"/a\"\nmode = \"proxy\"\n[routes.x]\ny = 1\n",
		"a = \"\"\"\n[b]\n\"\"\"\nc = [\n'''x''', { d = 1 },\n]\n",
		"[admin]\ntoken = \"${X:-${Y}}$$${\"\n",
		"\"\" = 1\n[\"\".\"\"]\n",
		"[backends]\nurls = [\"http://[::1]:80\", \"%zz\"]\ntemplate = \"{N}\"\n",
	} {
		f.Add([]byte(s))
	}
	lookup := func(name string) (string, bool) {
		if name == "SET" {
			return "value", true
		}
		return "", false
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := parse(data, lookup)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || len(e.Problems) == 0 {
				t.Fatalf("error %v is not an *Error with problems", err)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not match ErrInvalid", err)
			}
			return
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("Parse succeeded but Validate fails: %v", err)
		}
		for p := range cfg.Partition.Count {
			if cfg.BackendURL(p) == "" {
				t.Fatalf("BackendURL(%d) empty for a valid config", p)
			}
		}
		_ = cfg.ModeFor("POST", "/x")
	})
}

// FuzzScanKeyLines checks the line scanner on arbitrary text, which Parse
// never gives it but which must not crash it either.
func FuzzScanKeyLines(f *testing.F) {
	f.Add(minimal)
	f.Add("[[a]]\n[a.b]\nc.d = \"\"\"\n\"\"\"\"\"\n")
	f.Add("x = '''\n")
	f.Fuzz(func(t *testing.T, src string) {
		kl := scanKeyLines(src)
		_ = kl.lineOf("a.b[1].c")
	})
}
