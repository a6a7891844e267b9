package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// Load reads the file at path and parses it with Parse. A file that cannot be
// read gives the *os.PathError (wrapped); a file with problems gives an
// *Error (wrapped, errors.Is(err, ErrInvalid)).
func Load(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("read config: %w", err)
	}
	cfg, err := Parse(data)
	if err != nil {
		return Config{}, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

// Parse decodes an edge.toml document on top of Default, interpolates
// ${ENV} references in string values from the process environment and
// validates the result. On any problem it returns the zero Config and an
// *Error listing every problem found, each with its key and line.
func Parse(data []byte) (Config, error) {
	return parse(data, os.LookupEnv)
}

func parse(data []byte, lookup lookupFunc) (Config, error) {
	cfg := Default()
	var root map[string]toml.Primitive
	md, err := toml.NewDecoder(bytes.NewReader(data)).Decode(&root)
	if err != nil {
		return Config{}, &Error{Problems: []Problem{syntaxProblem(data, err)}}
	}
	d := &decoder{md: &md, lookup: lookup, lines: scanKeyLines(string(data)), failed: map[string]bool{}}
	d.decodeTable("", root, reflect.ValueOf(&cfg).Elem())

	problems := d.problems
	if err := cfg.Validate(); err != nil {
		var ve *Error
		if !errors.As(err, &ve) {
			return Config{}, fmt.Errorf("validate: %w", err)
		}
		for _, p := range ve.Problems {
			if d.coveredByDecodeProblem(p.Key) {
				continue // a value that failed to decode is reported once
			}
			p.Line = d.lines.lineOf(p.Key)
			problems = append(problems, p)
		}
	}
	if len(problems) > 0 {
		sortProblems(problems)
		return Config{}, &Error{Problems: problems}
	}
	return cfg, nil
}

// syntaxProblem turns a TOML parse failure into a Problem with its line.
func syntaxProblem(data []byte, err error) Problem {
	var pe toml.ParseError
	if errors.As(err, &pe) {
		// The library's Line is off by one for errors found at a newline;
		// the byte offset is exact.
		line := pe.Position.Line
		if start := pe.Position.Start; start > 0 && start <= len(data) {
			line = 1 + bytes.Count(data[:start], []byte{'\n'})
		}
		return Problem{Line: line, Msg: "TOML syntax: " + pe.Message}
	}
	return Problem{Msg: "TOML: " + strings.TrimPrefix(err.Error(), "toml: ")}
}

// decoder decodes key by key so that one bad value does not hide the next.
type decoder struct {
	md       *toml.MetaData
	lookup   lookupFunc
	lines    keyLines
	problems []Problem
	failed   map[string]bool // keys whose value could not be decoded
}

func (d *decoder) problem(key, format string, args ...any) {
	d.failed[key] = true
	d.problems = append(d.problems, Problem{Key: key, Line: d.lines.lineOf(key), Msg: fmt.Sprintf(format, args...)})
}

// coveredByDecodeProblem reports whether key, or a key enclosing it, already
// has a decode problem.
func (d *decoder) coveredByDecodeProblem(key string) bool {
	for key != "" {
		if d.failed[key] {
			return true
		}
		i := strings.LastIndexAny(key, ".[")
		if i < 0 {
			return false
		}
		key = key[:i]
	}
	return false
}

var (
	durationType = reflect.TypeFor[Duration]()
	routesType   = reflect.TypeFor[[]Route]()
)

// decodeTable decodes the keys of one TOML table into the struct rv.
func (d *decoder) decodeTable(prefix string, table map[string]toml.Primitive, rv reflect.Value) {
	fields := tomlFields(rv.Type())
	keys := make([]string, 0, len(table))
	for k := range table {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i] < keys[j] })
	for _, k := range keys {
		key := joinKey(prefix, k)
		idx, ok := fields[k]
		if !ok {
			d.problem(key, "unknown key%s", suggest(k, fields))
			continue
		}
		d.decodeValue(key, table[k], rv.Field(idx))
	}
}

// decodeValue decodes one value into field fv, which is left unchanged on failure.
func (d *decoder) decodeValue(key string, prim toml.Primitive, fv reflect.Value) {
	t := fv.Type()
	switch {
	case t == durationType:
		d.decodeDuration(key, prim, fv)
	case t.Kind() == reflect.Struct:
		sub, ok := d.table(prim)
		if !ok {
			d.problem(key, "must be a table ([%s]), got %s", key, d.tomlType(prim))
			return
		}
		d.decodeTable(key, sub, fv)
	case t == routesType:
		elems, ok := d.tables(prim)
		if !ok {
			d.problem(key, "must be an array of tables ([[%s]]), got %s", key, d.tomlType(prim))
			return
		}
		routes := make([]Route, len(elems))
		for i, e := range elems {
			d.decodeTable(key+"["+strconv.Itoa(i)+"]", e, reflect.ValueOf(&routes[i]).Elem())
		}
		fv.Set(reflect.ValueOf(routes))
	default:
		nv := reflect.New(t)
		if err := d.md.PrimitiveDecode(prim, nv.Interface()); err != nil {
			d.problem(key, "must be %s, got %s", describe(t), d.tomlType(prim))
			return
		}
		if !d.interpolate(key, nv.Elem()) {
			return
		}
		fv.Set(nv.Elem())
	}
}

// table decodes prim as a table whose values stay undecoded. It checks the
// type first: toml's map decoding silently yields nil for a non-table.
func (d *decoder) table(prim toml.Primitive) (map[string]toml.Primitive, bool) {
	var v any
	if err := d.md.PrimitiveDecode(prim, &v); err != nil {
		return nil, false
	}
	if _, ok := v.(map[string]any); !ok {
		return nil, false
	}
	var m map[string]toml.Primitive
	if err := d.md.PrimitiveDecode(prim, &m); err != nil {
		return nil, false
	}
	return m, true
}

// tables decodes prim as an array of tables, like table.
func (d *decoder) tables(prim toml.Primitive) ([]map[string]toml.Primitive, bool) {
	var v any
	if err := d.md.PrimitiveDecode(prim, &v); err != nil {
		return nil, false
	}
	switch x := v.(type) {
	case []map[string]any:
	case []any:
		for _, e := range x {
			if _, ok := e.(map[string]any); !ok {
				return nil, false
			}
		}
	default:
		return nil, false
	}
	var m []map[string]toml.Primitive
	if err := d.md.PrimitiveDecode(prim, &m); err != nil {
		return nil, false
	}
	return m, true
}

// decodeDuration interpolates a duration string, then parses it.
func (d *decoder) decodeDuration(key string, prim toml.Primitive, fv reflect.Value) {
	var s string
	if err := d.md.PrimitiveDecode(prim, &s); err != nil {
		d.problem(key, "must be %s, got %s", describe(durationType), d.tomlType(prim))
		return
	}
	s, err := expand(s, d.lookup)
	if err != nil {
		d.problem(key, "%v", err)
		return
	}
	var v Duration
	if err := v.UnmarshalText([]byte(s)); err != nil {
		d.problem(key, "%v", err)
		return
	}
	fv.Set(reflect.ValueOf(v))
}

// interpolate expands ${ENV} in a decoded string or []string value.
func (d *decoder) interpolate(key string, v reflect.Value) bool {
	switch {
	case v.Kind() == reflect.String:
		s, err := expand(v.String(), d.lookup)
		if err != nil {
			d.problem(key, "%v", err)
			return false
		}
		v.SetString(s)
	case v.Kind() == reflect.Slice && v.Type().Elem().Kind() == reflect.String:
		ok := true
		for i := 0; i < v.Len(); i++ {
			s, err := expand(v.Index(i).String(), d.lookup)
			if err != nil {
				d.problem(key+"["+strconv.Itoa(i)+"]", "%v", err)
				ok = false
				continue
			}
			v.Index(i).SetString(s)
		}
		if !ok {
			d.failed[key] = true // the whole list stays unset: no follow-up problems
		}
		return ok
	}
	return true
}

// tomlType names the TOML type of a value for error messages.
func (d *decoder) tomlType(prim toml.Primitive) string {
	var v any
	if err := d.md.PrimitiveDecode(prim, &v); err != nil {
		return "an unsupported value"
	}
	switch x := v.(type) {
	case string:
		return fmt.Sprintf("string %q", truncate(x, 40))
	case int64:
		return fmt.Sprintf("integer %d", x)
	case float64:
		return fmt.Sprintf("float %v", x)
	case bool:
		return fmt.Sprintf("boolean %v", x)
	case time.Time:
		return "a datetime"
	case []map[string]any:
		return "an array of tables"
	case []any:
		return "an array"
	case map[string]any:
		return "a table"
	default:
		return fmt.Sprintf("%T", v)
	}
}

func describe(t reflect.Type) string {
	switch {
	case t == durationType:
		return `a duration string such as "2s"`
	case t.Kind() == reflect.Pointer:
		return describe(t.Elem())
	case t.Kind() == reflect.String:
		return "a string"
	case t.Kind() == reflect.Bool:
		return "a boolean (true or false)"
	case t.Kind() >= reflect.Int && t.Kind() <= reflect.Int64:
		return "an integer"
	case t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.String:
		return "an array of strings"
	default:
		return t.String()
	}
}

// tomlFields maps each toml tag of struct type t to its field index.
func tomlFields(t reflect.Type) map[string]int {
	m := make(map[string]int, t.NumField())
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		if name == "" || name == "-" || !f.IsExported() {
			continue
		}
		m[name] = i
	}
	return m
}

// suggest proposes a known key for a misspelt one.
func suggest(k string, fields map[string]int) string {
	best, bestDist := "", 3
	for name := range fields {
		if dist := editDistance(strings.ToLower(k), name); dist < bestDist || dist == bestDist && best != "" && name < best {
			best, bestDist = name, dist
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

// editDistance is the Levenshtein distance, for short keys only.
func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 1 << 30
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// sortProblems orders problems by line; those without a line come last in
// the order they were found.
func sortProblems(ps []Problem) {
	sort.SliceStable(ps, func(i, j int) bool {
		a, b := ps[i].Line, ps[j].Line
		if a == 0 || b == 0 {
			return a != 0 && b == 0
		}
		return a < b
	})
}
