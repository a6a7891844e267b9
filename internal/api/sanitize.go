package api

import (
	"html"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/microcosm-cc/bluemonday"
)

// textPolicy returns the HTML sanitiser of user text: bluemonday's strict
// policy, which keeps no element at all and drops the content of script,
// style and similar elements. A Policy is safe for concurrent use once
// built; each Server builds its own.
func textPolicy() *bluemonday.Policy { return bluemonday.StrictPolicy() }

// maxSanitizePasses bounds plainText's passes: text escaped more times than
// this (e.g. "&amp;amp;lt;b&amp;amp;gt;") is refused rather than
// unwrapped forever.
const maxSanitizePasses = 6

// plainText turns user input into plain text without markup, checked
// against its limits:
//
//  1. The input must be valid UTF-8 of at most max characters (runes), as
//     the client sent it: the limit applies before sanitising, so a client
//     cannot slip a longer text through by wrapping it in tags.
//  2. Markup is removed: tags and comments go, the content of script and
//     style elements goes with them, text stays. The result is HTML-
//     unescaped, so "a & b" is stored as "a & b", not "a &amp; b" (the API
//     answers JSON: escaping for HTML is the renderer's job). Since
//     unescaping can reveal markup ("&lt;script&gt;"), both steps repeat
//     until nothing changes: the stored text is a fixed point, and a
//     browser parsing it as HTML finds no element in it.
//  3. Surrounding white space is trimmed. Empty is an error when required.
//  4. Control characters are refused, except newline and tab when multiline
//     (a carriage return is dropped: "\r\n" becomes "\n").
//
// Errors are 400 problems naming field.
func plainText(p *bluemonday.Policy, field, v string, max int, required, multiline bool) (string, error) {
	if !utf8.ValidString(v) {
		return "", badRequest("%s: not valid UTF-8", field)
	}
	if n := utf8.RuneCountInString(v); n > max {
		return "", badRequest("%s: at most %d characters, got %d", field, max, n)
	}
	if multiline {
		v = strings.ReplaceAll(v, "\r", "") // before sanitising: removing it later could join "<" to a tag name
	}
	out, stable := v, false
	for range maxSanitizePasses {
		next := html.UnescapeString(p.Sanitize(out))
		if next == out {
			stable = true
			break
		}
		out = next
	}
	if !stable {
		return "", badRequest("%s: HTML-escaped too many times over to be made plain text", field)
	}
	out = strings.TrimSpace(out)
	if out == "" {
		if required {
			if v != "" && strings.TrimSpace(v) != "" {
				return "", badRequest("%s: required, and empty once HTML is removed", field)
			}
			return "", badRequest("%s: required", field)
		}
		return "", nil
	}
	for _, r := range out {
		if unicode.IsControl(r) && !(multiline && (r == '\n' || r == '\t')) {
			return "", badRequest("%s: control characters are not allowed", field)
		}
	}
	return out, nil
}
