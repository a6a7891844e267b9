package check

import (
	"bufio"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	line int
	cmd  string // upper case: FROM, RUN…
	args string
}

// parseDockerfile splits a Dockerfile into instructions. It knows comments,
// parser directives and backslash continuations; enough for the checks here
// (docker is not available in CI, so the file cannot be built).
func parseDockerfile(t *testing.T, path string) (directives map[string]string, out []instruction) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	directives = map[string]string{}
	sc := bufio.NewScanner(f)
	var cur strings.Builder
	start, n, header := 0, 0, true
	directive := regexp.MustCompile(`^#\s*([a-zA-Z]+)\s*=\s*(\S+)\s*$`)
	for sc.Scan() {
		n++
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		if header {
			if m := directive.FindStringSubmatch(trimmed); m != nil {
				directives[strings.ToLower(m[1])] = m[2]
				continue
			}
			header = false
		}
		if cur.Len() == 0 && (trimmed == "" || strings.HasPrefix(trimmed, "#")) {
			continue
		}
		if cur.Len() > 0 && strings.HasPrefix(trimmed, "#") {
			continue // comment inside a continued instruction
		}
		if cur.Len() == 0 {
			start = n
		}
		if s, ok := strings.CutSuffix(trimmed, `\`); ok {
			cur.WriteString(s + " ")
			continue
		}
		cur.WriteString(trimmed)
		cmd, args, _ := strings.Cut(cur.String(), " ")
		out = append(out, instruction{line: start, cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args)})
		cur.Reset()
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if cur.Len() > 0 {
		t.Errorf("%s: ends inside a continued instruction", path)
	}
	return directives, out
}

func TestDockerfile(t *testing.T) {
	path := deployPath(t, "Dockerfile")
	directives, ins := parseDockerfile(t, path)
	if !strings.HasPrefix(directives["syntax"], "docker/dockerfile:1") {
		t.Errorf("no `# syntax=docker/dockerfile:1` directive (cache mounts need BuildKit's frontend)")
	}
	known := []string{"FROM", "RUN", "COPY", "ARG", "ENV", "WORKDIR", "USER", "EXPOSE", "LABEL", "ENTRYPOINT", "CMD", "ADD", "HEALTHCHECK", "STOPSIGNAL", "VOLUME", "SHELL", "ONBUILD"}
	var stages [][]instruction
	for _, in := range ins {
		if !slices.Contains(known, in.cmd) {
			t.Errorf("line %d: unknown instruction %s", in.line, in.cmd)
		}
		switch in.cmd {
		case "FROM":
			stages = append(stages, nil)
		case "HEALTHCHECK":
			t.Errorf("line %d: HEALTHCHECK: Kubernetes probes the health endpoints; the image must not", in.line)
		case "ADD":
			t.Errorf("line %d: ADD: use COPY (no remote URLs or archive magic)", in.line)
		}
		if len(stages) == 0 && in.cmd != "ARG" {
			t.Fatalf("line %d: %s before the first FROM", in.line, in.cmd)
		}
		if len(stages) > 0 {
			stages[len(stages)-1] = append(stages[len(stages)-1], in)
		}
	}
	if len(stages) < 2 {
		t.Fatalf("%d stages, want a multi-stage build", len(stages))
	}

	// Build stage: static binaries of both commands.
	build := strings.Join(collect(stages[0], "RUN", "ENV"), "\n")
	if !regexp.MustCompile(`CGO_ENABLED=0`).MatchString(build) {
		t.Errorf("build stage: CGO_ENABLED=0 is not set (static binaries)")
	}
	for _, pkg := range []string{"./cmd/edge", "./cmd/api"} {
		if !regexp.MustCompile(`go build [^\n]*` + regexp.QuoteMeta(pkg) + `\b`).MatchString(build) {
			t.Errorf("build stage: no `go build … %s`", pkg)
		}
	}
	from := stages[0][0].args
	goMod, err := os.ReadFile(repoRoot(t) + "/go.mod")
	if err != nil {
		t.Fatal(err)
	}
	if m := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(goMod); m != nil {
		want := string(m[1])
		args := strings.Join(collect(ins, "ARG"), "\n")
		if !strings.Contains(from, "golang:"+want) && !strings.Contains(args, "GO_VERSION="+want) {
			t.Errorf("build stage %q does not use Go %s (go.mod)", from, want)
		}
	}

	// Final stage: minimal, non-root, both binaries, the ports.
	final := stages[len(stages)-1]
	base := final[0].args
	if !regexp.MustCompile(`^(gcr\.io/distroless/static[-\w]*:nonroot(@sha256:[0-9a-f]{64})?|scratch)$`).MatchString(base) {
		t.Errorf("final stage FROM %q: want distroless static nonroot or scratch", base)
	}
	if base == "scratch" && !slices.ContainsFunc(collect(final, "COPY"), func(s string) bool { return strings.Contains(s, "ca-certificates") }) {
		t.Errorf("scratch image without CA certificates (webhooks are HTTPS)")
	}
	copies := strings.Join(collect(final, "COPY"), "\n")
	for _, bin := range []string{"edge", "api"} {
		if !regexp.MustCompile(`--from=\S+ [^\n]*\b` + bin + `\b[^\n]* /usr/local/bin/`).MatchString(copies) {
			t.Errorf("final stage does not copy %s into /usr/local/bin/ (the chart runs /usr/local/bin/%s)", bin, bin)
		}
	}
	users := collect(final, "USER")
	if len(users) == 0 || !regexp.MustCompile(`^(nonroot|65532)(:(nonroot|65532))?$`).MatchString(users[len(users)-1]) {
		t.Errorf("final stage USER %v: want nonroot (65532), as the chart's runAsUser", users)
	}
	var ports []string
	for _, e := range collect(final, "EXPOSE") {
		ports = append(ports, strings.Fields(e)...)
	}
	for _, p := range []string{"8080", "8686"} {
		if !slices.Contains(ports, p) && !slices.Contains(ports, p+"/tcp") {
			t.Errorf("final stage does not EXPOSE %s", p)
		}
	}
	if len(collect(final, "RUN")) > 0 {
		t.Errorf("final stage has RUN: the base image has no shell")
	}

	// The build context filter must keep what the build needs.
	ignore, err := os.ReadFile(deployPath(t, "Dockerfile.dockerignore"))
	if err != nil {
		t.Fatalf("deploy/Dockerfile.dockerignore: %v", err)
	}
	for _, line := range strings.Split(string(ignore), "\n") {
		switch strings.TrimSpace(line) {
		case "*", "cmd", "internal", "go.mod", "go.sum":
			t.Errorf("Dockerfile.dockerignore excludes %q, which the build needs", line)
		}
	}
}

// collect returns the arguments of the instructions named cmds.
func collect(ins []instruction, cmds ...string) []string {
	var out []string
	for _, in := range ins {
		if slices.Contains(cmds, in.cmd) {
			out = append(out, in.args)
		}
	}
	return out
}
