package api_test

// The OpenAPI document (docs/openapi.yaml) is checked against the real
// server here, so it cannot drift from the code:
//
//   - TestOpenAPIDocument: the document loads and is a valid OpenAPI 3
//     document, and each operation is consistent with its access level
//     (security, 401/403) and documents the answers every route can give.
//   - TestOpenAPIRoutes: the routes registered in (*Server).routes() — read
//     from server.go's syntax tree, not from a list kept here — and the
//     document's operations are the same set, with the same access level,
//     and every documented operation is served (not 404/405 from the mux).
//   - TestOpenAPIConformance: a scripted scenario drives a real server
//     through every operation, successes and errors, and validates each
//     request and answer against the document (undocumented status,
//     missing required header, field not in the schema… all fail), and each
//     webhook delivery against the document's callback.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
	"github.com/google/uuid"

	"github.com/flowedge/flowedge/internal/api"
	"github.com/flowedge/flowedge/internal/partition"
)

// openAPIFile is the document, relative to this package.
const openAPIFile = "../../docs/openapi.yaml"

// oaUUID is the document's "uuid" format: what the server accepts and
// writes (lower-case canonical form, any version).
const oaUUID = `^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`

// oaLoad loads and validates the document and returns it with a router
// over its paths.
func oaLoad(t testing.TB) (*openapi3.T, routers.Router) {
	t.Helper()
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromFile(openAPIFile)
	if err != nil {
		t.Fatalf("load %s: %v", openAPIFile, err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("%s is not a valid OpenAPI document: %v", openAPIFile, err)
	}
	doc.SetStringFormatValidator("uuid", openapi3.NewRegexpFormatValidator(oaUUID))
	router, err := gorillamux.NewRouter(doc)
	if err != nil {
		t.Fatalf("router over %s: %v", openAPIFile, err)
	}
	return doc, router
}

// oaOp is one operation of the document.
type oaOp struct {
	method, path string
	op           *openapi3.Operation
}

func (o oaOp) String() string { return o.method + " " + o.path }

// oaOperations lists the document's operations, sorted.
func oaOperations(doc *openapi3.T) []oaOp {
	var out []oaOp
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			out = append(out, oaOp{method: method, path: path, op: op})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out
}

// oaAccess is an operation's x-access: public, member or admin.
func oaAccess(op *openapi3.Operation) string {
	s, _ := op.Extensions["x-access"].(string)
	return s
}

// oaRoute is a route registered in (*Server).routes().
type oaRoute struct {
	method, path string
	access       string // public, member or admin
	pos          string
}

func (r oaRoute) String() string { return r.method + " " + r.path }

// oaServerRoutes reads the routes of (*Server).routes() from server.go:
// each handle("METHOD /path", access, …) and mux.Handle("METHOD /path", …)
// call (the latter serves a plain handler: public). Calls inside function
// literals (the handle helper itself) are not routes.
func oaServerRoutes(t testing.TB) []oaRoute {
	t.Helper()
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "server.go", nil, parser.SkipObjectResolution)
	if err != nil {
		t.Fatal(err)
	}
	var body *ast.BlockStmt
	for _, d := range f.Decls {
		if fd, ok := d.(*ast.FuncDecl); ok && fd.Recv != nil && fd.Name.Name == "routes" {
			body = fd.Body
		}
	}
	if body == nil {
		t.Fatal("server.go has no (*Server).routes method: update oaServerRoutes to where the routes are registered now")
	}
	var out []oaRoute
	ast.Inspect(body, func(n ast.Node) bool {
		if _, ok := n.(*ast.FuncLit); ok {
			return false
		}
		call, ok := n.(*ast.CallExpr)
		if !ok {
			return true
		}
		var access string
		switch fun := call.Fun.(type) {
		case *ast.Ident:
			if fun.Name != "handle" {
				return true
			}
			if len(call.Args) < 3 {
				t.Fatalf("%s: handle call with %d arguments", fset.Position(call.Pos()), len(call.Args))
			}
			id, ok := call.Args[1].(*ast.Ident)
			if !ok {
				t.Fatalf("%s: the access of a route is not an identifier: extend oaServerRoutes", fset.Position(call.Pos()))
			}
			access = id.Name
		case *ast.SelectorExpr:
			x, ok := fun.X.(*ast.Ident)
			if !ok || x.Name != "mux" || (fun.Sel.Name != "Handle" && fun.Sel.Name != "HandleFunc") {
				return true
			}
			access = "public"
		default:
			return true
		}
		pos := fset.Position(call.Pos()).String()
		lit, ok := call.Args[0].(*ast.BasicLit)
		if !ok || lit.Kind != token.STRING {
			t.Fatalf("%s: a route pattern that is not a string literal: extend oaServerRoutes", pos)
		}
		pattern, err := strconv.Unquote(lit.Value)
		if err != nil {
			t.Fatal(err)
		}
		method, path, found := strings.Cut(pattern, " ")
		if !found || method == "" || !strings.HasPrefix(path, "/") {
			t.Fatalf("%s: pattern %q has no method: every route must name one", pos, pattern)
		}
		// Go pattern syntax → OpenAPI: {name...} is {name}; {$} matches
		// the path as written.
		path = strings.ReplaceAll(strings.ReplaceAll(path, "...}", "}"), "{$}", "")
		out = append(out, oaRoute{method: method, path: path, access: access, pos: pos})
		return true
	})
	if len(out) == 0 {
		t.Fatal("found no route in (*Server).routes: update oaServerRoutes")
	}
	return out
}

// TestOpenAPIDocument: the document is valid, and each operation agrees with
// its access level and lists the answers every route can give.
func TestOpenAPIDocument(t *testing.T) {
	doc, _ := oaLoad(t)
	ops := oaOperations(doc)
	if len(ops) == 0 {
		t.Fatal("the document has no operations")
	}
	ids := map[string]string{}
	for _, o := range ops {
		op := o.op
		if op.OperationID == "" {
			t.Errorf("%s: no operationId", o)
		} else if prev, dup := ids[op.OperationID]; dup {
			t.Errorf("%s: operationId %q also names %s", o, op.OperationID, prev)
		}
		ids[op.OperationID] = o.String()
		has := func(status int) bool { return op.Responses.Status(status) != nil }
		if op.Responses.Default() != nil {
			t.Errorf("%s: a default response would hide undocumented statuses; list them", o)
		}
		for _, status := range []int{413, 414, 500} {
			if !has(status) {
				t.Errorf("%s: every route can answer %d; document it", o, status)
			}
		}
		for code, ref := range op.Responses.Map() {
			if ref.Value.Headers["X-Request-ID"] == nil {
				t.Errorf("%s: response %s does not document X-Request-ID (every answer has it)", o, code)
			}
		}
		switch access := oaAccess(op); access {
		case "public":
			if op.Security == nil || len(*op.Security) != 0 {
				t.Errorf("%s: public, but not security: []", o)
			}
			if has(401) || has(403) || has(429) {
				t.Errorf("%s: public, but documents 401, 403 or 429", o)
			}
		case "member", "admin":
			if op.Security != nil {
				t.Errorf("%s: needs a key, but overrides the document's security", o)
			}
			for _, status := range []int{400, 401, 421, 429, 503} {
				if !has(status) {
					t.Errorf("%s: every authenticated route can answer %d; document it", o, status)
				}
			}
			if has(403) != (access == "admin") {
				t.Errorf("%s: x-access %s, 403 documented: %v", o, access, has(403))
			}
		default:
			t.Errorf("%s: x-access %q, want public, member or admin", o, access)
		}
	}
}

// TestOpenAPIRoutes: the document's operations are exactly the server's
// routes, with their access levels, and each is served.
func TestOpenAPIRoutes(t *testing.T) {
	doc, _ := oaLoad(t)
	documented := map[string]oaOp{}
	for _, o := range oaOperations(doc) {
		documented[o.String()] = o
	}
	served := map[string]oaRoute{}
	for _, r := range oaServerRoutes(t) {
		if prev, dup := served[r.String()]; dup {
			t.Errorf("%s: %s is registered twice (also at %s)", r.pos, r, prev.pos)
		}
		served[r.String()] = r
		o, ok := documented[r.String()]
		if !ok {
			t.Errorf("%s: route %s is not in %s", r.pos, r, openAPIFile)
			continue
		}
		if got := oaAccess(o.op); got != r.access {
			t.Errorf("%s: route %s is %s, the document says x-access %q", r.pos, r, r.access, got)
		}
	}
	for name := range documented {
		if _, ok := served[name]; !ok {
			t.Errorf("%s documents %s, which (*Server).routes does not register", openAPIFile, name)
		}
	}

	// Each documented operation reaches a handler: without a key an
	// authenticated route answers 401 (the mux's own 404/405 would show).
	e := newEnv(t)
	for _, o := range oaOperations(doc) {
		path := strings.NewReplacer("{pid}", "route-probe", "{id}", uuid.NewString(), "{seq}", "1").Replace(o.path)
		r := e.do(req{method: o.method, path: path})
		if oaAccess(o.op) == "public" {
			if r.status == http.StatusNotFound || r.status == http.StatusMethodNotAllowed {
				t.Errorf("%s: not served: %s", o, r)
			}
			continue
		}
		if r.status != http.StatusUnauthorized {
			t.Errorf("%s without a key: %s, want 401 from the route", o, r)
		}
	}
}

// oaCall is one request of the conformance scenario.
type oaCall struct {
	method, path string
	body         any    // nil: none; []byte or string: sent as is; else JSON-encoded
	key          string // sent as Authorization: Bearer
	apiKey       string // sent as X-API-Key
	header       map[string]string
	want         int  // the status the server must answer
	invalid      bool // the request breaks the document (and the server refuses it)
}

// oaSuite drives a server and validates every exchange.
type oaSuite struct {
	t      *testing.T
	e      *env
	doc    *openapi3.T
	router routers.Router
	opts   *openapi3filter.Options
	hits   map[string]map[int]int // "METHOD /path" of the document → status → count
}

// oaAuth accepts a request that presents the credential of the scheme
// (whether it is valid is the server's business).
func oaAuth(_ context.Context, in *openapi3filter.AuthenticationInput) error {
	h := in.RequestValidationInput.Request.Header
	switch in.SecuritySchemeName {
	case "bearerAuth":
		if strings.HasPrefix(h.Get("Authorization"), "Bearer ") {
			return nil
		}
	case "apiKeyAuth":
		if h.Get("X-API-Key") != "" {
			return nil
		}
	}
	return fmt.Errorf("no %s credential", in.SecuritySchemeName)
}

func newOASuite(t *testing.T, e *env) *oaSuite {
	doc, router := oaLoad(t)
	opts := &openapi3filter.Options{
		IncludeResponseStatus:   true,
		MultiError:              true,
		AuthenticationFunc:      oaAuth,
		SchemaValidationOptions: doc.GetSchemaValidationOptions(),
	}
	return &oaSuite{t: t, e: e, doc: doc, router: router, opts: opts, hits: map[string]map[int]int{}}
}

// do sends c, checks the status, and validates the request and the answer
// against the document.
func (s *oaSuite) do(c oaCall) resp {
	t := s.t
	t.Helper()
	var body []byte
	switch b := c.body.(type) {
	case nil:
	case []byte:
		body = b
	case string:
		body = []byte(b)
	default:
		var err error
		if body, err = json.Marshal(b); err != nil {
			t.Fatal(err)
		}
	}
	build := func() *http.Request {
		var rd io.Reader
		if body != nil {
			rd = bytes.NewReader(body)
		}
		r, err := http.NewRequest(c.method, s.e.ts.URL+c.path, rd)
		if err != nil {
			t.Fatal(err)
		}
		if body != nil {
			r.Header.Set("Content-Type", "application/json")
		}
		if c.key != "" {
			r.Header.Set("Authorization", "Bearer "+c.key)
		}
		if c.apiKey != "" {
			r.Header.Set("X-API-Key", c.apiKey)
		}
		for k, v := range c.header {
			r.Header.Set(k, v)
		}
		return r
	}
	label := c.method + " " + c.path
	if len(label) > 120 {
		label = label[:120] + "…"
	}
	hres, err := s.e.client.Do(build())
	if err != nil {
		t.Fatalf("%s: %v", label, err)
	}
	rb, err := io.ReadAll(hres.Body)
	hres.Body.Close()
	if err != nil {
		t.Fatalf("%s: %v", label, err)
	}
	out := resp{status: hres.StatusCode, header: hres.Header, body: rb}
	if out.status != c.want {
		t.Fatalf("%s: status %d, want %d: %s", label, out.status, c.want, rb)
	}

	ctx := context.Background()
	vr := build()
	route, params, err := s.router.FindRoute(vr)
	if err != nil {
		t.Fatalf("%s: no operation of the document matches: %v", label, err)
	}
	in := &openapi3filter.RequestValidationInput{Request: vr, PathParams: params, Route: route, Options: s.opts}
	switch err := openapi3filter.ValidateRequest(ctx, in); {
	case c.invalid && err == nil:
		t.Errorf("%s: the document allows this request, but the server refuses it with %d: %s", label, out.status, rb)
	case !c.invalid && err != nil:
		t.Errorf("%s: the request does not match the document: %v", label, err)
	}
	rin := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: out.status, Header: out.header, Options: s.opts}
	rin.SetBodyBytes(out.body)
	if err := openapi3filter.ValidateResponse(ctx, rin); err != nil {
		t.Errorf("%s → %d: the answer does not match the document: %v\nbody: %s", label, out.status, err, rb)
	}
	if ref := route.Operation.Responses.Status(out.status); ref != nil && len(ref.Value.Content) == 0 && len(rb) != 0 {
		t.Errorf("%s → %d: the document says no body, the answer has %d bytes", label, out.status, len(rb))
	}
	s.checkCommon(label, out)
	name := route.Method + " " + route.Path
	if s.hits[name] == nil {
		s.hits[name] = map[int]int{}
	}
	s.hits[name][out.status]++
	return out
}

// checkCommon checks what every answer carries, and the members of a
// problem the schema cannot relate to the answer (status, request id).
func (s *oaSuite) checkCommon(label string, r resp) {
	t := s.t
	t.Helper()
	for k, v := range map[string]string{"X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY",
		"Referrer-Policy": "strict-origin-when-cross-origin"} {
		if got := r.header.Get(k); got != v {
			t.Errorf("%s: %s %q, want %q", label, k, got, v)
		}
	}
	if r.header.Get("Content-Type") != "application/problem+json" {
		if r.status >= 400 && r.header.Get("Content-Type") != "application/json" {
			t.Errorf("%s → %d: Content-Type %q", label, r.status, r.header.Get("Content-Type"))
		}
		return
	}
	var p struct {
		Status    int    `json:"status"`
		RequestID string `json:"request_id"`
	}
	if err := json.Unmarshal(r.body, &p); err != nil {
		t.Errorf("%s: problem: %v", label, err)
		return
	}
	if p.Status != r.status {
		t.Errorf("%s: problem status %d in a %d answer", label, p.Status, r.status)
	}
	// A replay returns the stored answer, written under the first request.
	if r.header.Get("Idempotent-Replayed") == "" && p.RequestID != r.header.Get("X-Request-ID") {
		t.Errorf("%s: problem request_id %q, X-Request-ID %q", label, p.RequestID, r.header.Get("X-Request-ID"))
	}
}

// oaReceiver is a local HTTP receiver for webhook deliveries (/hook) and
// http steps (/step).
type oaReceiver struct {
	srv        *httptest.Server
	deliveries chan oaDelivery
	steps      atomic.Int64
	seen       []oaDelivery
}

type oaDelivery struct {
	header http.Header
	body   []byte
}

func newOAReceiver(t *testing.T) *oaReceiver {
	rc := &oaReceiver{deliveries: make(chan oaDelivery, 256)}
	rc.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		switch r.URL.Path {
		case "/hook":
			select {
			case rc.deliveries <- oaDelivery{header: r.Header.Clone(), body: b}:
			default:
				t.Error("webhook receiver: too many deliveries")
			}
			w.WriteHeader(http.StatusNoContent)
		case "/step":
			rc.steps.Add(1)
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, `{"ok":true}`)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(rc.srv.Close)
	return rc
}

// wait returns the delivery of event whose data has id dataID, waiting for
// it (deliveries are asynchronous).
func (rc *oaReceiver) wait(t *testing.T, event, dataID string) oaDelivery {
	t.Helper()
	match := func(d oaDelivery) bool {
		var env struct {
			Event string `json:"event"`
			Data  struct {
				ID string `json:"id"`
			} `json:"data"`
		}
		return json.Unmarshal(d.body, &env) == nil && env.Event == event && env.Data.ID == dataID
	}
	for _, d := range rc.seen {
		if match(d) {
			return d
		}
	}
	timeout := time.NewTimer(15 * time.Second)
	defer timeout.Stop()
	for {
		select {
		case d := <-rc.deliveries:
			rc.seen = append(rc.seen, d)
			if match(d) {
				return d
			}
		case <-timeout.C:
			t.Fatalf("no %s delivery for %s", event, dataID)
		}
	}
}

// checkDelivery validates a delivery against the document's callback of
// POST /api/v1/webhooks and checks its signature.
func (s *oaSuite) checkDelivery(d oaDelivery, url, secret string) {
	t := s.t
	t.Helper()
	item := s.doc.Paths.Value("/api/v1/webhooks")
	cb := item.Post.Callbacks["delivery"]
	if cb == nil || cb.Value == nil {
		t.Fatal("POST /api/v1/webhooks documents no \"delivery\" callback")
	}
	const expr = "{$request.body#/url}"
	cbItem := cb.Value.Value(expr)
	if cbItem == nil || cbItem.Post == nil {
		t.Fatalf("the delivery callback has no POST %s", expr)
	}
	r, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(d.body))
	if err != nil {
		t.Fatal(err)
	}
	r.Header = d.header.Clone()
	route := &routers.Route{Spec: s.doc, Path: expr, PathItem: cbItem, Method: http.MethodPost, Operation: cbItem.Post}
	in := &openapi3filter.RequestValidationInput{Request: r, Route: route, Options: s.opts}
	if err := openapi3filter.ValidateRequest(context.Background(), in); err != nil {
		t.Errorf("webhook delivery does not match the document's callback: %v\nheaders: %v\nbody: %s", err, d.header, d.body)
	}
	if err := api.VerifyWebhook(secret, d.header.Get(api.HeaderWebhookTimestamp), d.header.Get(api.HeaderWebhookSignature),
		d.body, time.Now(), 0); err != nil {
		t.Errorf("webhook delivery signature: %v", err)
	}
}

// oaPID returns a process id that partition owner of 2 owns.
func oaPID(prefix string, owner int) string {
	for i := 0; ; i++ {
		if pid := prefix + "-" + strconv.Itoa(i); partition.OfString(pid, 2) == owner {
			return pid
		}
	}
}

// TestOpenAPIConformance drives a real server (partition 0 of 2, small post
// rate limit, controllable health checks) through every operation and
// validates every exchange against the document.
func TestOpenAPIConformance(t *testing.T) {
	var dbDown, storageDown atomic.Bool
	e := newEnv(t, func(o *api.Options) {
		o.Partition, o.Partitions = 0, 2
		o.RateLimits.Posts = api.Rate{Count: 3, Per: time.Hour}
		o.Health.Database = func(context.Context) error {
			if dbDown.Load() {
				return errors.New("database down (test)")
			}
			return nil
		}
		o.Health.Storage = func(context.Context) error {
			if storageDown.Load() {
				return errors.New("storage full (test)")
			}
			return nil
		}
		o.Objects = fileObjects(t)
	})
	s := newOASuite(t, e)
	rc := newOAReceiver(t)
	admin := adminKey
	pidA, pidC := oaPID("proc-a", 0), oaPID("proc-c", 0)
	pidOther := oaPID("proc-b", 1) // owned by the other partition
	unknown := uuid.NewString()
	var id struct {
		ID         string `json:"id"`
		NextCursor string `json:"next_cursor"`
		Key        string `json:"key"`
		Secret     string `json:"secret"`
	}
	decode := func(r resp) {
		id.ID, id.NextCursor, id.Key, id.Secret = "", "", "", ""
		r.json(t, &id)
	}

	// Health and metrics (no key).
	s.do(oaCall{method: "GET", path: "/health/liveness", want: 200})
	s.do(oaCall{method: "GET", path: "/health/readiness", want: 200})
	s.do(oaCall{method: "GET", path: "/health/health", want: 200})
	s.do(oaCall{method: "GET", path: "/api/v1/health", want: 200})
	s.do(oaCall{method: "POST", path: "/_edge/batch", want: 200, body: "--b\r\nContent-Type: application/http\r\n\r\n" +
		"GET /health/liveness HTTP/1.1\r\nHost: api\r\n\r\n\r\n--b--\r\n",
		header: map[string]string{"Content-Type": "multipart/mixed; boundary=b"}})

	// Keys (admin).
	decode(s.do(oaCall{method: "POST", path: "/api/v1/keys", key: admin, header: map[string]string{"Idempotency-Key": "key-alice"},
		body: map[string]any{"name": "alice's key", "role": "member", "user_id": "alice"}, want: 201}))
	aliceID, alice := id.ID, id.Key
	s.do(oaCall{method: "POST", path: "/api/v1/keys", key: admin, header: map[string]string{"Idempotency-Key": "key-alice"},
		body: map[string]any{"name": "alice's key", "role": "member", "user_id": "alice"}, want: 409}) // repeat: no secret again
	decode(s.do(oaCall{method: "POST", path: "/api/v1/keys", apiKey: admin, body: map[string]any{"name": "temp"}, want: 201}))
	tempID := id.ID
	s.do(oaCall{method: "POST", path: "/api/v1/keys", key: admin, body: map[string]any{"name": "x", "role": "root"}, want: 400, invalid: true})
	s.do(oaCall{method: "POST", path: "/api/v1/keys", key: alice, body: map[string]any{"name": "x"}, want: 403})
	s.do(oaCall{method: "POST", path: "/api/v1/keys", body: map[string]any{"name": "x"}, want: 401, invalid: true})
	s.do(oaCall{method: "GET", path: "/api/v1/keys", key: "not-a-key", want: 401})
	s.do(oaCall{method: "GET", path: "/api/v1/keys?limit=1", key: admin, want: 200})
	s.do(oaCall{method: "GET", path: "/api/v1/keys/" + aliceID, key: admin, want: 200})
	s.do(oaCall{method: "GET", path: "/api/v1/keys/" + unknown, key: admin, want: 404})
	s.do(oaCall{method: "GET", path: "/api/v1/keys", key: alice, want: 403})
	s.do(oaCall{method: "DELETE", path: "/api/v1/keys/" + tempID, key: admin, want: 204})
	s.do(oaCall{method: "DELETE", path: "/api/v1/keys/" + tempID, key: admin, want: 404})
	s.do(oaCall{method: "GET", path: "/api/v1/auth/check", key: alice, want: 204}) // the edge's forward authentication
	s.do(oaCall{method: "GET", path: "/api/v1/auth/check", key: "not-a-key", want: 401})

	// Webhooks, delivering to the local receiver (development mode allows it).
	hookURL := rc.srv.URL + "/hook"
	decode(s.do(oaCall{method: "POST", path: "/api/v1/webhooks", key: admin, header: map[string]string{"X-Request-ID": "hook-create-1"},
		body: map[string]any{"url": hookURL, "events": []string{"*"}}, want: 201}))
	hookID, hookSecret := id.ID, id.Secret
	s.do(oaCall{method: "POST", path: "/api/v1/webhooks", key: admin, header: map[string]string{"X-Request-ID": "hook-create-1"},
		body: map[string]any{"url": hookURL, "events": []string{"*"}}, want: 409})
	decode(s.do(oaCall{method: "POST", path: "/api/v1/webhooks", key: alice,
		body: map[string]any{"url": rc.srv.URL + "/other", "events": []string{"job.failed", "job.cancelled"}}, want: 201}))
	otherHook := id.ID
	s.do(oaCall{method: "POST", path: "/api/v1/webhooks", key: admin,
		body: map[string]any{"url": hookURL, "events": []string{"job.done"}}, want: 400, invalid: true})
	s.do(oaCall{method: "POST", path: "/api/v1/webhooks", key: admin,
		body: map[string]any{"url": "ftp://example.com/x", "events": []string{"*"}}, want: 400})
	s.do(oaCall{method: "GET", path: "/api/v1/webhooks?limit=1", key: admin, want: 200})
	s.do(oaCall{method: "GET", path: "/api/v1/webhooks/" + otherHook, key: alice, want: 200})
	s.do(oaCall{method: "GET", path: "/api/v1/webhooks/" + hookID, key: alice, want: 404}) // not hers
	s.do(oaCall{method: "GET", path: "/api/v1/webhooks", key: alice, want: 200})
	s.do(oaCall{method: "DELETE", path: "/api/v1/webhooks/" + otherHook, key: admin, want: 204})
	s.do(oaCall{method: "GET", path: "/api/v1/webhooks/" + otherHook, key: admin, want: 404})
	s.do(oaCall{method: "DELETE", path: "/api/v1/webhooks/" + otherHook, key: admin, want: 404})

	// Apps.
	decode(s.do(oaCall{method: "POST", path: "/api/v1/apps", key: alice,
		body: map[string]any{"name": "Billing", "description": "Invoices\nand payments"}, want: 201}))
	appID := id.ID
	decode(s.do(oaCall{method: "POST", path: "/api/v1/apps", key: alice, body: map[string]any{"name": "Spare"}, want: 201}))
	spareApp := id.ID
	s.do(oaCall{method: "POST", path: "/api/v1/apps", key: alice, body: map[string]any{"description": "no name"}, want: 400, invalid: true})
	s.do(oaCall{method: "POST", path: "/api/v1/apps", key: alice, body: `{"name":"x","extra":1}`, want: 400, invalid: true})
	decode(s.do(oaCall{method: "GET", path: "/api/v1/apps?limit=1", key: alice, want: 200}))
	if id.NextCursor == "" {
		t.Fatal("no next_cursor on a full page of apps")
	}
	s.do(oaCall{method: "GET", path: "/api/v1/apps?cursor=" + id.NextCursor, key: alice, want: 200})
	s.do(oaCall{method: "GET", path: "/api/v1/apps?limit=0", key: alice, want: 400, invalid: true})
	s.do(oaCall{method: "GET", path: "/api/v1/apps/" + appID, key: alice, want: 200})
	s.do(oaCall{method: "GET", path: "/api/v1/apps/not-a-uuid", key: alice, want: 400, invalid: true})
	s.do(oaCall{method: "GET", path: "/api/v1/apps/" + strings.ToUpper(appID), key: alice, want: 400, invalid: true})
	s.do(oaCall{method: "GET", path: "/api/v1/apps/" + unknown, key: alice, want: 404})

	// Workflows: the three step kinds.
	decode(s.do(oaCall{method: "POST", path: "/api/v1/workflows", key: alice, body: map[string]any{
		"name": "onboard", "app_id": appID,
		"steps": []map[string]any{
			{"type": "delay", "ms": 1},
			{"type": "event", "event_type": "onboard.started", "data": map[string]any{"k": 1}},
			{"type": "event"},
			{"type": "http", "method": "PUT", "url": rc.srv.URL + "/step", "headers": map[string]string{"X-Trace": "t1"}, "body": map[string]any{"a": 1}},
			{"type": "http", "url": rc.srv.URL + "/step"},
		}}, want: 201}))
	wfID := id.ID
	decode(s.do(oaCall{method: "POST", path: "/api/v1/workflows", key: alice, body: map[string]any{
		"name": "slow", "steps": []map[string]any{{"type": "delay", "ms": 3_600_000}}}, want: 201}))
	slowWF := id.ID
	s.do(oaCall{method: "POST", path: "/api/v1/workflows", key: alice, body: map[string]any{
		"name": "x", "app_id": unknown, "steps": []map[string]any{{"type": "delay"}}}, want: 422})
	s.do(oaCall{method: "POST", path: "/api/v1/workflows", key: alice, body: map[string]any{
		"name": "x", "steps": []map[string]any{{"type": "sleep"}}}, want: 400, invalid: true})
	s.do(oaCall{method: "POST", path: "/api/v1/workflows", key: alice, body: map[string]any{
		"name": "x", "steps": []map[string]any{}}, want: 400, invalid: true})
	s.do(oaCall{method: "GET", path: "/api/v1/workflows", key: alice, want: 200})
	s.do(oaCall{method: "GET", path: "/api/v1/workflows/" + wfID, key: alice, want: 200})
	s.do(oaCall{method: "GET", path: "/api/v1/workflows/" + unknown, key: alice, want: 404})
	s.do(oaCall{method: "DELETE", path: "/api/v1/apps/" + appID, key: alice, want: 409}) // it owns a workflow
	s.do(oaCall{method: "DELETE", path: "/api/v1/apps/" + spareApp, key: alice, want: 204})
	s.do(oaCall{method: "DELETE", path: "/api/v1/apps/" + spareApp, key: alice, want: 404})

	// Processes and events.
	ev := map[string]any{"type": "user.signed_up", "user": "u1"}
	h := map[string]string{"X-Request-ID": "event-1"}
	s.do(oaCall{method: "POST", path: "/api/v1/processes/" + pidA + "/events", key: alice, header: h, body: ev, want: 201})
	r := s.do(oaCall{method: "POST", path: "/api/v1/processes/" + pidA + "/events", key: alice, header: h, body: ev, want: 201})
	if r.header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("repeat of an event append: Idempotent-Replayed %q", r.header.Get("Idempotent-Replayed"))
	}
	s.do(oaCall{method: "POST", path: "/api/v1/processes/" + pidA + "/events", key: alice, header: h, body: map[string]any{"other": true}, want: 422})
	s.do(oaCall{method: "POST", path: "/api/v1/processes/" + pidA + "/events", key: alice, body: "42", want: 201})
	s.do(oaCall{method: "POST", path: "/api/v1/processes/" + pidA + "/events", key: alice, body: "null", want: 201})
	s.do(oaCall{method: "POST", path: "/api/v1/processes/" + pidA + "/events", key: alice, body: "{", want: 400, invalid: true})
	s.do(oaCall{method: "POST", path: "/api/v1/processes/" + pidA + "/events", key: alice,
		header: map[string]string{"Idempotency-Key": strings.Repeat("k", 256)}, body: ev, want: 400, invalid: true})
	s.do(oaCall{method: "POST", path: "/api/v1/processes/" + pidA + "/events", key: alice,
		header: map[string]string{"X-Process-ID": pidC}, body: ev, want: 400}) // header and path disagree
	s.do(oaCall{method: "POST", path: "/api/v1/processes/" + pidOther + "/events", key: alice, body: ev, want: 421})
	s.do(oaCall{method: "GET", path: "/api/v1/processes/" + pidOther, key: alice, want: 421})
	s.do(oaCall{method: "GET", path: "/api/v1/apps", key: alice, header: map[string]string{"X-Process-ID": pidOther}, want: 421})
	s.do(oaCall{method: "GET", path: "/api/v1/processes/" + pidA, key: alice, want: 200})
	s.do(oaCall{method: "GET", path: "/api/v1/processes/" + pidC, key: alice, want: 404})
	decode(s.do(oaCall{method: "GET", path: "/api/v1/processes/" + pidA + "/events?limit=1", key: alice, want: 200}))
	s.do(oaCall{method: "GET", path: "/api/v1/processes/" + pidA + "/events?cursor=" + id.NextCursor, key: alice, want: 200})
	s.do(oaCall{method: "GET", path: "/api/v1/processes/" + pidA + "/events?cursor=abc", key: alice, want: 400, invalid: true})
	s.do(oaCall{method: "GET", path: "/api/v1/processes/" + pidC + "/events", key: alice, want: 404})
	s.do(oaCall{method: "GET", path: "/api/v1/processes/" + pidA + "/events/1", key: alice, want: 200})
	s.do(oaCall{method: "GET", path: "/api/v1/processes/" + pidA + "/events/99", key: alice, want: 404})
	s.do(oaCall{method: "GET", path: "/api/v1/processes/" + pidA + "/events/0", key: alice, want: 400, invalid: true})

	// Jobs: one runs all three step kinds to the end (its job.succeeded
	// delivery says when), one is cancelled.
	decode(s.do(oaCall{method: "POST", path: "/jobs", key: alice, header: map[string]string{"X-Process-ID": pidA, "Idempotency-Key": "job-1"},
		body: map[string]any{"workflow_id": wfID, "input": map[string]any{"plan": "pro"}}, want: 201}))
	jobID := id.ID
	s.do(oaCall{method: "POST", path: "/jobs", key: alice, body: map[string]any{"workflow_id": wfID}, want: 400, invalid: true})
	s.do(oaCall{method: "POST", path: "/jobs", key: alice, header: map[string]string{"X-Process-ID": pidA},
		body: map[string]any{"workflow_id": unknown}, want: 422})
	s.do(oaCall{method: "POST", path: "/jobs", key: alice, header: map[string]string{"X-Process-ID": pidOther},
		body: map[string]any{"workflow_id": wfID}, want: 421})
	decode(s.do(oaCall{method: "POST", path: "/jobs", key: alice, header: map[string]string{"X-Process-ID": pidC},
		body: map[string]any{"workflow_id": slowWF, "input": nil}, want: 201}))
	slowJob := id.ID
	s.do(oaCall{method: "POST", path: "/jobs/" + slowJob + "/cancel", key: alice, want: 200})
	s.do(oaCall{method: "POST", path: "/jobs/" + slowJob + "/cancel", key: alice, want: 200}) // again: the same answer
	s.checkDelivery(rc.wait(t, "job.cancelled", slowJob), hookURL, hookSecret)
	s.checkDelivery(rc.wait(t, "job.succeeded", jobID), hookURL, hookSecret)
	var job api.Job
	s.do(oaCall{method: "GET", path: "/jobs/" + jobID, key: alice, want: 200}).json(t, &job)
	if job.Status != api.JobSucceeded || len(job.Steps) != 5 || rc.steps.Load() != 2 {
		t.Errorf("job %s: status %s, %d steps, %d http calls received", jobID, job.Status, len(job.Steps), rc.steps.Load())
	}
	s.do(oaCall{method: "POST", path: "/jobs/" + jobID + "/cancel", key: alice, want: 409})
	s.do(oaCall{method: "POST", path: "/jobs/" + unknown + "/cancel", key: alice, want: 404})
	s.do(oaCall{method: "GET", path: "/jobs/" + unknown, key: alice, want: 404})
	s.do(oaCall{method: "GET", path: "/jobs/x", key: alice, want: 400, invalid: true})
	s.do(oaCall{method: "GET", path: "/jobs?process_id=" + pidA + "&status=succeeded", key: alice, want: 200})
	decode(s.do(oaCall{method: "GET", path: "/jobs?limit=1", key: alice, want: 200}))
	s.do(oaCall{method: "GET", path: "/jobs?cursor=" + id.NextCursor, key: alice, want: 200})
	s.do(oaCall{method: "GET", path: "/jobs?status=done", key: alice, want: 400, invalid: true})
	s.do(oaCall{method: "GET", path: "/jobs?process_id=" + pidOther, key: alice, want: 421})
	s.do(oaCall{method: "GET", path: "/api/v1/processes?limit=1", key: alice, want: 200})
	s.do(oaCall{method: "GET", path: "/api/v1/processes", key: alice, want: 200})
	s.do(oaCall{method: "DELETE", path: "/api/v1/workflows/" + slowWF, key: alice, want: 204})
	s.do(oaCall{method: "DELETE", path: "/api/v1/workflows/" + slowWF, key: alice, want: 404})

	// Channels and posts (posts: 3 per hour per key here).
	decode(s.do(oaCall{method: "POST", path: "/api/v1/channels", key: admin, body: map[string]any{"name": "<b>General</b>"}, want: 201}))
	chID := id.ID
	decode(s.do(oaCall{method: "POST", path: "/api/v1/channels", key: alice, body: map[string]any{"name": "alice-only"}, want: 201}))
	aliceCh := id.ID
	s.do(oaCall{method: "POST", path: "/api/v1/channels", key: alice, body: map[string]any{"name": strings.Repeat("é", 101)}, want: 400, invalid: true})
	s.do(oaCall{method: "POST", path: "/api/v1/channels", key: alice, body: map[string]any{"name": "<p></p>"}, want: 400})
	s.do(oaCall{method: "GET", path: "/api/v1/channels", key: alice, want: 200})
	s.do(oaCall{method: "GET", path: "/api/v1/channels?limit=1", key: admin, want: 200})
	s.do(oaCall{method: "GET", path: "/api/v1/channels/" + chID, key: admin, want: 200})
	s.do(oaCall{method: "GET", path: "/api/v1/channels/" + chID, key: alice, want: 404}) // not hers
	decode(s.do(oaCall{method: "POST", path: "/api/v1/channels/" + chID + "/posts", key: admin, body: map[string]any{
		"content": "Hello <script>alert(1)</script>world",
		"media":   []any{"https://cdn.example.com/a.png", map[string]any{"url": "https://cdn.example.com/b.mp4", "type": "video", "alt": "clip"}},
	}, want: 201}))
	postID := id.ID
	// Media: uploads of alice's, named by her post.
	octet := map[string]string{"Content-Type": "application/octet-stream"}
	decode(s.do(oaCall{method: "POST", path: "/api/v1/media", key: alice, body: pngOf(t, 4, 4), header: octet, want: 201}))
	mediaID := id.ID
	s.do(oaCall{method: "POST", path: "/api/v1/media", key: alice, body: []byte("plain text"), header: octet, want: 415})
	s.do(oaCall{method: "POST", path: "/api/v1/media", key: alice, body: make([]byte, api.MaxMediaBytes+1), header: octet, want: 413})
	s.do(oaCall{method: "GET", path: "/api/v1/media/" + mediaID, key: alice, want: 200})
	decode(s.do(oaCall{method: "POST", path: "/api/v1/media", key: admin, body: sampleMedia["image/gif"], header: octet, want: 201}))
	s.do(oaCall{method: "GET", path: "/api/v1/media/" + id.ID, key: alice, want: 404}) // not hers
	s.do(oaCall{method: "GET", path: "/api/v1/media/nope", key: alice, want: 400, invalid: true})
	s.do(oaCall{method: "POST", path: "/api/v1/channels/" + aliceCh + "/posts", key: alice,
		body: map[string]any{"media": []any{"https://cdn.example.com/c.png"}, "media_ids": []string{mediaID}}, want: 201})
	s.do(oaCall{method: "POST", path: "/api/v1/channels/" + aliceCh + "/posts", key: alice, body: map[string]any{"content": ""}, want: 400})
	s.do(oaCall{method: "POST", path: "/api/v1/channels/" + chID + "/posts", key: alice, body: map[string]any{"content": "hi"}, want: 404})
	s.do(oaCall{method: "POST", path: "/api/v1/channels/" + chID + "/posts", key: admin,
		body: map[string]any{"content": strings.Repeat("x", 10_001)}, want: 400, invalid: true})
	s.do(oaCall{method: "POST", path: "/api/v1/channels/" + chID + "/posts", key: admin, body: map[string]any{"content": "two"}, want: 201})
	r = s.do(oaCall{method: "POST", path: "/api/v1/channels/" + chID + "/posts", key: admin, body: map[string]any{"content": "four"}, want: 429})
	if r.header.Get("Retry-After") == "" {
		t.Error("429 without Retry-After")
	}
	s.do(oaCall{method: "GET", path: "/api/v1/channels/" + chID + "/posts", key: admin, want: 200})
	s.do(oaCall{method: "GET", path: "/api/v1/channels/" + aliceCh + "/posts?limit=1", key: alice, want: 200})
	s.do(oaCall{method: "GET", path: "/api/v1/channels/" + unknown + "/posts", key: alice, want: 404})
	s.do(oaCall{method: "GET", path: "/api/v1/channels/" + chID + "/posts/" + postID, key: admin, want: 200})
	s.do(oaCall{method: "GET", path: "/api/v1/channels/" + chID + "/posts/" + unknown, key: admin, want: 404})
	s.do(oaCall{method: "GET", path: "/api/v1/channels/" + chID + "/posts/" + postID, key: alice, want: 404}) // not her channel
	s.do(oaCall{method: "GET", path: "/api/v1/channels/" + chID + "/posts/1", key: admin, want: 400, invalid: true})
	s.checkDelivery(rc.wait(t, "post.created", postID), hookURL, hookSecret)

	// Audit (admin).
	decode(s.do(oaCall{method: "GET", path: "/api/v1/audit?limit=2", key: admin, want: 200}))
	s.do(oaCall{method: "GET", path: "/api/v1/audit?cursor=" + id.NextCursor, key: admin, want: 200})
	s.do(oaCall{method: "GET", path: "/api/v1/audit?action=key.create", key: admin, want: 200})
	s.do(oaCall{method: "GET", path: "/api/v1/audit?limit=1001", key: admin, want: 400, invalid: true})
	s.do(oaCall{method: "GET", path: "/api/v1/audit", key: alice, want: 403})
	s.do(oaCall{method: "DELETE", path: "/api/v1/webhooks/" + hookID, key: admin, want: 204})

	// Request limits.
	s.do(oaCall{method: "POST", path: "/api/v1/apps", key: alice,
		body: `{"name":"` + strings.Repeat("a", api.MaxBodyBytes) + `"}`, want: 413, invalid: true})
	s.do(oaCall{method: "GET", path: "/api/v1/apps/" + strings.Repeat("a", api.MaxURLBytes), key: alice, want: 414, invalid: true})
	s.do(oaCall{method: "GET", path: "/api/v1/audit?action=" + strings.Repeat("a", api.MaxQuery), key: admin, want: 414, invalid: true})

	// Failing health checks, then draining.
	storageDown.Store(true)
	s.do(oaCall{method: "GET", path: "/health/health", want: 200}) // degraded
	dbDown.Store(true)
	s.do(oaCall{method: "GET", path: "/health/health", want: 503})
	s.do(oaCall{method: "GET", path: "/api/v1/health", want: 503})
	s.do(oaCall{method: "GET", path: "/health/readiness", want: 503})
	dbDown.Store(false)
	e.srv.Drain()
	s.do(oaCall{method: "GET", path: "/health/readiness", want: 503})

	// Every documented operation was exercised with a success, and the
	// scenario met the error statuses it means to.
	statuses := map[int]bool{}
	for _, o := range oaOperations(s.doc) {
		ok := false
		for status := range s.hits[o.String()] {
			statuses[status] = true
			ok = ok || status < 300
		}
		if !ok {
			t.Errorf("the scenario never got a success from %s: extend it", o)
		}
	}
	for _, want := range []int{400, 401, 403, 404, 409, 413, 414, 421, 422, 429, 503} {
		if !statuses[want] {
			t.Errorf("the scenario never got a %d", want)
		}
	}
	if t.Failed() {
		var got []string
		for name, m := range s.hits {
			var codes []string
			for c := range m {
				codes = append(codes, strconv.Itoa(c))
			}
			slices.Sort(codes)
			got = append(got, name+" "+strings.Join(codes, ","))
		}
		slices.Sort(got)
		t.Logf("exercised:\n%s", strings.Join(got, "\n"))
	}
}
