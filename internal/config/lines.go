package config

import (
	"strconv"
	"strings"
)

// keyLines maps key paths as problems name them ("server.address",
// "routes[1].mode", "partition" for a [partition] header) to the 1-based line
// where they are defined. BurntSushi/toml keeps key positions private, so
// scanKeyLines reads them from the source; it is only run on text the TOML
// parser accepted and only serves error messages, so it favours simplicity:
// keys inside inline tables and arrays take the line of the enclosing key.
type keyLines map[string]int

// lineOf returns the line of key, or of its nearest enclosing key or table
// that appears in the file ("backends.urls[2]" → "backends.urls" →
// "backends"); 0 when none does.
func (kl keyLines) lineOf(key string) int {
	for key != "" {
		if l, ok := kl[key]; ok {
			return l
		}
		i := strings.LastIndexAny(key, ".[")
		if i < 0 {
			return 0
		}
		key = key[:i]
	}
	return 0
}

// scanKeyLines records the line of every table header and key/value pair.
func scanKeyLines(src string) keyLines {
	s := &lineScanner{src: src, line: 1, lines: keyLines{}, arrays: map[string]int{}}
	s.run()
	return s.lines
}

type lineScanner struct {
	src    string
	i      int
	line   int
	lines  keyLines
	arrays map[string]int // array-of-tables path → number of elements seen
	table  string         // resolved path of the current table, "" at the root
}

func (s *lineScanner) run() {
	for s.i < len(s.src) {
		s.skipSpace()
		if s.i >= len(s.src) {
			return
		}
		switch c := s.src[s.i]; c {
		case '\n':
			s.line++
			s.i++
		case '\r':
			s.i++
		case '#':
			s.skipComment()
		case '[':
			s.header()
			s.skipToEOL()
		default:
			parts, ok := s.key()
			if !ok {
				s.skipToEOL()
				continue
			}
			path := s.table
			for _, p := range parts {
				path = joinKey(path, p)
				s.set(path)
			}
			s.skipSpace()
			if s.i < len(s.src) && s.src[s.i] == '=' {
				s.i++
				s.skipValue()
			}
			s.skipToEOL()
		}
	}
}

func (s *lineScanner) set(path string) {
	if _, ok := s.lines[path]; !ok {
		s.lines[path] = s.line
	}
}

// header reads "[a.b]" or "[[a.b]]" and makes it the current table.
func (s *lineScanner) header() {
	s.i++ // [
	array := s.i < len(s.src) && s.src[s.i] == '['
	if array {
		s.i++
	}
	parts, ok := s.key()
	if !ok || len(parts) == 0 {
		return
	}
	path := s.resolve(parts[:len(parts)-1])
	path = joinKey(path, parts[len(parts)-1])
	if array {
		n := s.arrays[path]
		s.arrays[path] = n + 1
		s.set(path)
		path += "[" + strconv.Itoa(n) + "]"
	}
	s.table = path
	s.set(path)
}

// resolve joins parts into a path, pointing each array of tables at its
// last element as TOML does.
func (s *lineScanner) resolve(parts []string) string {
	path := ""
	for _, p := range parts {
		path = joinKey(path, p)
		if n, ok := s.arrays[path]; ok && n > 0 {
			path += "[" + strconv.Itoa(n-1) + "]"
		}
	}
	return path
}

// key reads a dotted key of bare and quoted parts.
func (s *lineScanner) key() ([]string, bool) {
	var parts []string
	for {
		s.skipSpace()
		if s.i >= len(s.src) {
			return parts, len(parts) > 0
		}
		var part string
		switch c := s.src[s.i]; {
		case c == '"':
			part = s.quoted('"')
		case c == '\'':
			part = s.quoted('\'')
		case isBare(c):
			start := s.i
			for s.i < len(s.src) && isBare(s.src[s.i]) {
				s.i++
			}
			part = s.src[start:s.i]
		default:
			return nil, false
		}
		parts = append(parts, part)
		s.skipSpace()
		if s.i < len(s.src) && s.src[s.i] == '.' {
			s.i++
			continue
		}
		return parts, true
	}
}

// quoted reads a single-line quoted key; escapes are kept as written except \" and \\.
func (s *lineScanner) quoted(q byte) string {
	s.i++
	var b strings.Builder
	for s.i < len(s.src) && s.src[s.i] != q && s.src[s.i] != '\n' {
		if q == '"' && s.src[s.i] == '\\' && s.i+1 < len(s.src) && (s.src[s.i+1] == '"' || s.src[s.i+1] == '\\') {
			s.i++
		}
		b.WriteByte(s.src[s.i])
		s.i++
	}
	if s.i < len(s.src) && s.src[s.i] == q {
		s.i++
	}
	return b.String()
}

// skipValue moves past a value, which may span lines inside brackets or
// multi-line strings, stopping before the newline that ends it.
func (s *lineScanner) skipValue() {
	depth := 0
	for s.i < len(s.src) {
		c := s.src[s.i]
		switch {
		case c == '\n':
			if depth <= 0 {
				return
			}
			s.line++
			s.i++
		case c == '#':
			s.skipComment()
		case c == '[' || c == '{':
			depth++
			s.i++
		case c == ']' || c == '}':
			depth--
			s.i++
		case strings.HasPrefix(s.src[s.i:], `"""`):
			s.skipMultiline(`"""`, true)
		case strings.HasPrefix(s.src[s.i:], `'''`):
			s.skipMultiline(`'''`, false)
		case c == '"':
			s.skipString('"', true)
		case c == '\'':
			s.skipString('\'', false)
		default:
			s.i++
		}
	}
}

func (s *lineScanner) skipString(q byte, escapes bool) {
	s.i++
	for s.i < len(s.src) {
		c := s.src[s.i]
		switch {
		case c == '\n':
			return // unterminated; the parser would have refused it
		case escapes && c == '\\':
			s.i += 2
		case c == q:
			s.i++
			return
		default:
			s.i++
		}
	}
}

func (s *lineScanner) skipMultiline(delim string, escapes bool) {
	s.i += len(delim)
	for s.i < len(s.src) {
		c := s.src[s.i]
		switch {
		case c == '\n':
			s.line++
			s.i++
		case escapes && c == '\\':
			if s.i+1 < len(s.src) && s.src[s.i+1] == '\n' {
				s.line++
			}
			s.i += 2
		case strings.HasPrefix(s.src[s.i:], delim):
			s.i += len(delim)
			// Up to two more quotes may close the string: """a""""".
			for k := 0; k < 2 && s.i < len(s.src) && s.src[s.i] == delim[0]; k++ {
				s.i++
			}
			return
		default:
			s.i++
		}
	}
}

func (s *lineScanner) skipSpace() {
	for s.i < len(s.src) && (s.src[s.i] == ' ' || s.src[s.i] == '\t') {
		s.i++
	}
}

func (s *lineScanner) skipComment() {
	for s.i < len(s.src) && s.src[s.i] != '\n' {
		s.i++
	}
}

// skipToEOL moves to the newline ending the current line (comments, stray text).
func (s *lineScanner) skipToEOL() { s.skipComment() }

func isBare(c byte) bool {
	return c == '_' || c == '-' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

func joinKey(prefix, k string) string {
	if prefix == "" {
		return k
	}
	return prefix + "." + k
}
