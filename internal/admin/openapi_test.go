package admin_test

// The admin API's OpenAPI document (docs/admin-openapi.yaml) is checked
// against the handlers here, so it cannot drift from the code:
//
//   - TestAdminOpenAPIRoutes: the routes the admin handler registers — read
//     from the package's syntax tree, not from a list kept here — and the
//     document's operations are the same set.
//   - TestAdminOpenAPIConformance: a running edge (real queue, real
//     backends, admin token set) is driven through every operation, and
//     each request and answer is validated against the document
//     (undocumented status, missing field, wrong type… all fail); every
//     operation must have answered with a success at least once.

import (
	"bytes"
	"context"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"net/http"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"

	"github.com/flowedge/flowedge/internal/config"
	"github.com/flowedge/flowedge/internal/server"
)

const adminOpenAPIFile = "../../docs/admin-openapi.yaml"

func loadAdminDoc(t *testing.T) (*openapi3.T, routers.Router) {
	t.Helper()
	doc, err := openapi3.NewLoader().LoadFromFile(adminOpenAPIFile)
	if err != nil {
		t.Fatalf("loading %s: %v", adminOpenAPIFile, err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("%s is not a valid OpenAPI document: %v", adminOpenAPIFile, err)
	}
	doc.Servers = nil // route by path only
	router, err := gorillamux.NewRouter(doc)
	if err != nil {
		t.Fatal(err)
	}
	return doc, router
}

// docOperations returns "METHOD /path" of every operation of the document.
func docOperations(doc *openapi3.T) []string {
	var ops []string
	for path, item := range doc.Paths.Map() {
		for method := range item.Operations() {
			ops = append(ops, method+" "+path)
		}
	}
	sort.Strings(ops)
	return ops
}

// muxPatterns maps the admin mux's subtree and exact-root patterns to the
// document's paths; every other pattern is its document path as is.
var muxPatterns = map[string][]string{
	"GET /{$}":          {"GET /"},
	"GET /ui/":          {"GET /ui/{file}"},
	"GET /debug/pprof/": {"GET /debug/pprof/", "GET /debug/pprof/{profile}"},
}

// servedRoutes reads the patterns of every h.mux.Handle/HandleFunc call in
// the package's non-test files.
func servedRoutes(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	var out []string
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		file, err := parser.ParseFile(fset, f, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(file, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok || len(call.Args) == 0 {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok || (sel.Sel.Name != "Handle" && sel.Sel.Name != "HandleFunc") {
				return true
			}
			if inner, ok := sel.X.(*ast.SelectorExpr); !ok || inner.Sel.Name != "mux" {
				return true
			}
			lit, ok := call.Args[0].(*ast.BasicLit)
			if !ok || lit.Kind != token.STRING {
				t.Errorf("%s: a route pattern that is not a literal", fset.Position(call.Pos()))
				return true
			}
			p, _ := strconv.Unquote(lit.Value)
			if mapped, ok := muxPatterns[p]; ok {
				out = append(out, mapped...)
			} else {
				out = append(out, p)
			}
			return true
		})
	}
	sort.Strings(out)
	return out
}

func TestAdminOpenAPIRoutes(t *testing.T) {
	doc, _ := loadAdminDoc(t)
	documented := map[string]bool{}
	for _, o := range docOperations(doc) {
		documented[o] = true
	}
	served := map[string]bool{}
	for _, r := range servedRoutes(t) {
		served[r] = true
		if !documented[r] {
			t.Errorf("route %s is not in %s", r, adminOpenAPIFile)
		}
	}
	if len(served) < 10 {
		t.Fatalf("found only %d routes in the package: is the syntax-tree reader broken?", len(served))
	}
	for o := range documented {
		if !served[o] {
			t.Errorf("%s documents %s, which the admin handler does not register", adminOpenAPIFile, o)
		}
	}
}

// adminSuite drives the admin listener of a running edge and validates
// every exchange against the document.
type adminSuite struct {
	t      *testing.T
	base   string
	token  string
	router routers.Router
	ok     map[string]bool // operations that answered 2xx
	seen   map[string]bool
	// invalid: the next request breaks the document on purpose (and the
	// edge refuses it); its answer must still match.
	invalid bool
}

func (s *adminSuite) do(method, path string, auth bool, body string, want int) []byte {
	s.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, s.base+path, rd)
	if err != nil {
		s.t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "text/plain")
	}
	if auth {
		req.Header.Set("Authorization", "Bearer "+s.token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	got, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		s.t.Fatalf("%s %s: %d %s, want %d", method, path, resp.StatusCode, got, want)
	}
	// Validate against the document (a request rebuilt, its body re-read).
	vreq, _ := http.NewRequest(method, "http://admin"+path, strings.NewReader(body))
	vreq.Header = req.Header.Clone()
	route, params, err := s.router.FindRoute(vreq)
	if err != nil {
		s.t.Fatalf("%s %s: not in the document: %v", method, path, err)
	}
	op := method + " " + route.Path
	s.seen[op] = true
	in := &openapi3filter.RequestValidationInput{Request: vreq, PathParams: params, Route: route,
		Options: &openapi3filter.Options{AuthenticationFunc: func(context.Context, *openapi3filter.AuthenticationInput) error { return nil }}}
	err = openapi3filter.ValidateRequest(context.Background(), in)
	if s.invalid != (err != nil) {
		s.t.Errorf("%s %s: request meant to be invalid: %v; validation error: %v", method, path, s.invalid, err)
	}
	s.invalid = false
	ctype := resp.Header.Get("Content-Type")
	jsonBody := strings.Contains(ctype, "json")
	out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: resp.StatusCode, Header: resp.Header,
		Options: &openapi3filter.Options{ExcludeResponseBody: !jsonBody, IncludeResponseStatus: true}}
	out.SetBodyBytes(got)
	if err := openapi3filter.ValidateResponse(context.Background(), out); err != nil {
		s.t.Errorf("%s %s → %d (%s): answer does not match the document: %v", method, path, resp.StatusCode, ctype, err)
	}
	if !jsonBody && resp.StatusCode != http.StatusNoContent {
		// The body is not validated for non-JSON types: at least its media
		// type must be one the document lists for this status.
		resp := route.Operation.Responses.Status(resp.StatusCode)
		mt := strings.TrimSpace(strings.Split(ctype, ";")[0])
		if resp == nil || resp.Value.Content.Get(mt) == nil {
			s.t.Errorf("%s %s: Content-Type %q is not documented", method, path, ctype)
		}
	}
	if resp.StatusCode/100 == 2 {
		s.ok[op] = true
	}
	return got
}

// TestAdminOpenAPIConformance drives every operation of a running edge.
func TestAdminOpenAPIConformance(t *testing.T) {
	doc, router := loadAdminDoc(t)
	b0, b1 := newTestBackend(t), newTestBackend(t)
	b1.misroute.Store(true) // partition 1's writes are dead letters
	cfg := config.Default()
	cfg.Server.Address, cfg.Admin.Address = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Server.Respond = config.RespondAccept
	cfg.Admin.Token = "conformance-token"
	cfg.Partition.Count = 2
	cfg.Backends.URLs = []string{b0.srv.URL, b1.srv.URL}
	cfg.Backends.ProbeInterval = config.Duration{Duration: 50 * time.Millisecond}
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
	s := &adminSuite{t: t, base: "http://" + e.AdminAddr, token: cfg.Admin.Token, router: router, ok: map[string]bool{}, seen: map[string]bool{}}

	okID := post(t, e.PublicAddr, keyFor(0, 2, "conf-ok"))
	dead := []string{post(t, e.PublicAddr, keyFor(1, 2, "conf-dead")), post(t, e.PublicAddr, keyFor(1, 2, "conf-dead2"))}
	// Flake fixed: this waited for dead[1] only and then replayed dead[0], a
	// record of another key that may still have been in flight (404). Both
	// must be listed.
	deadline := time.Now().Add(10 * time.Second)
	for {
		list := s.do("GET", "/edge/v1/dead-letters?partition=1", true, "", 200)
		if bytes.Contains(list, []byte(dead[0])) && bytes.Contains(list, []byte(dead[1])) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("dead letters %v never both listed: %s", dead, list)
		}
		time.Sleep(20 * time.Millisecond)
	}

	s.do("GET", "/health/liveness", false, "", 200)
	s.do("GET", "/health/readiness", false, "", 200)
	s.do("GET", "/health/health", false, "", 200)
	s.do("GET", "/metrics", false, "", 200)
	s.do("GET", "/", false, "", 200)
	s.do("GET", "/ui/app.js", false, "", 200)
	s.do("GET", "/ui/style.css", false, "", 200)
	s.invalid = true
	s.do("GET", "/ui/nope.js", false, "", 404)

	s.do("GET", "/edge/v1/partitions", false, "", 401)
	s.do("GET", "/edge/v1/partitions", true, "", 200)
	s.do("GET", "/edge/v1/history", true, "", 200)
	s.do("GET", "/edge/v1/history.svg", true, "", 200)
	s.do("GET", "/edge/v1/deliveries/"+okID, true, "", 200)
	s.do("GET", "/edge/v1/deliveries/"+dead[0], true, "", 200)
	s.do("GET", "/edge/v1/deliveries/no-such-id", true, "", 404)
	s.do("GET", "/edge/v1/dead-letters", true, "", 200)
	s.do("GET", "/edge/v1/dead-letters?limit=1", true, "", 200)
	s.invalid = true
	s.do("GET", "/edge/v1/dead-letters?limit=0", true, "", 400)
	s.do("POST", "/edge/v1/dead-letters/"+dead[0]+"/replay", false, "", 401)
	s.do("POST", "/edge/v1/dead-letters/"+dead[0]+"/replay", true, "", 202)
	s.do("POST", "/edge/v1/dead-letters/no-such-id/replay", true, "", 404)
	s.do("DELETE", "/edge/v1/dead-letters/"+dead[1], true, "", 204)
	s.do("DELETE", "/edge/v1/dead-letters/"+dead[1], true, "", 404)

	s.do("GET", "/debug/pprof/", false, "", 401)
	s.do("GET", "/debug/pprof/", true, "", 200)
	s.do("GET", "/debug/pprof/heap", true, "", 200)
	s.do("GET", "/debug/pprof/goroutine?debug=1", true, "", 200)
	s.do("GET", "/debug/pprof/cmdline", true, "", 200)
	s.do("GET", "/debug/pprof/symbol", true, "", 200)
	s.do("POST", "/debug/pprof/symbol", true, "0x1", 200)
	s.do("GET", "/debug/pprof/profile?seconds=1", true, "", 200)
	s.do("GET", "/debug/pprof/trace?seconds=0.1", true, "", 200)

	for _, op := range docOperations(doc) {
		if !s.ok[op] {
			t.Errorf("the scenario never got a success from %s: extend it", op)
		}
	}
	if t.Failed() {
		t.Log(fmt.Sprint("exercised: ", s.seen))
	}
}
