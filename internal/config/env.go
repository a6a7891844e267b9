package config

import (
	"fmt"
	"strings"
)

// lookupFunc is os.LookupEnv's signature; tests and the fuzzer pass their own.
type lookupFunc func(name string) (string, bool)

// expand interpolates ${NAME} and ${NAME:-default} in s and turns $$ into $.
// An unset NAME without default becomes "". A default is taken literally up
// to the closing brace. A $ followed by anything else is kept.
func expand(s string, lookup lookupFunc) (string, error) {
	if !strings.Contains(s, "$") {
		return s, nil
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); {
		c := s[i]
		if c != '$' || i+1 == len(s) {
			b.WriteByte(c)
			i++
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i += 2
		case '{':
			end := strings.IndexByte(s[i+2:], '}')
			if end < 0 {
				return "", fmt.Errorf("unterminated ${ (write $$ for a literal $)")
			}
			expr := s[i+2 : i+2+end]
			name, def, hasDef := strings.Cut(expr, ":-")
			if !validEnvName(name) {
				return "", fmt.Errorf("invalid variable reference ${%s}: want ${NAME} or ${NAME:-default}", expr)
			}
			v, ok := lookup(name)
			if hasDef && (!ok || v == "") {
				v = def
			}
			b.WriteString(v)
			i += 2 + end + 1
		default:
			b.WriteByte('$')
			i++
		}
	}
	return b.String(), nil
}

// validEnvName reports whether name is a shell-style variable name.
func validEnvName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c == '_', c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z':
		case c >= '0' && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}
