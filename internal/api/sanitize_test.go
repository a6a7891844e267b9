package api

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"unicode/utf8"

	"golang.org/x/net/html"
)

func TestPlainText(t *testing.T) {
	p := textPolicy()
	for in, want := range map[string]string{
		"<script>alert(1)</script>hello":             "hello",
		"a & b":                                      "a & b",
		"a < b > c":                                  "a < b > c",
		"&lt;b&gt;bold&lt;/b&gt;":                    "bold",
		"&amp;lt;b&amp;gt;x":                         "x",
		"<style>body{}</style>styled":                "styled",
		"<!-- comment -->text":                       "text",
		"  <p>para</p>  ":                            "para",
		"caf&eacute; &#x1F680;":                      "café 🚀",
		"line\r\nnext":                               "line\nnext",
		"<a href=\"javascript:alert(1)\">link</a>":   "link",
		"<textarea><script>x</script></textarea>ok":  "ok",
		"quote \" and ' and `":                       "quote \" and ' and `",
		"<<script>script>alert(1)<</script>/script>": "",
	} {
		got, err := plainText(p, "f", in, 1000, false, true)
		if err != nil || got != want {
			t.Errorf("plainText(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, c := range []struct {
		in        string
		max       int
		required  bool
		multiline bool
	}{
		{"\xff", 10, false, false},
		{"ab", 1, false, false},
		{"ééé", 2, false, false},
		{"", 10, true, false},
		{"<b></b>", 10, true, false},
		{"a\nb", 10, false, false},
		{"a\x00b", 10, false, true},
		{"a\x1bb", 10, false, true},
		{"&" + strings.Repeat("amp;", 8) + "lt;b&gt;", 100, false, false}, // escaped 9 times over
	} {
		got, err := plainText(p, "f", c.in, c.max, c.required, c.multiline)
		var pr *Problem
		if !errors.As(err, &pr) || pr.Status != http.StatusBadRequest {
			t.Errorf("plainText(%q, %d): %q, %v; want a 400", c.in, c.max, got, err)
		}
	}
	if got, err := plainText(p, "f", strings.Repeat("é", 100), 100, true, false); err != nil || got != strings.Repeat("é", 100) {
		t.Fatalf("100 runes: %v", err)
	}
}

// checkPlain checks what plainText returned for in: valid UTF-8, no longer
// than in, a fixed point, and no markup an HTML parser would see.
func checkPlain(t *testing.T, p interface{ Sanitize(string) string }, in, out string) {
	t.Helper()
	if !utf8.ValidString(out) {
		t.Fatalf("%q → invalid UTF-8 %q", in, out)
	}
	if utf8.RuneCountInString(out) > utf8.RuneCountInString(in) {
		t.Fatalf("%q → longer %q", in, out)
	}
	z := html.NewTokenizer(strings.NewReader(out))
	for {
		tt := z.Next()
		if tt == html.ErrorToken {
			break
		}
		if tt != html.TextToken {
			t.Fatalf("%q → %q holds markup: %v %q", in, out, tt, z.Raw())
		}
	}
}

// FuzzPlainText: whatever comes in, what plainText accepts is plain text
// (a fixed point without markup) and what it refuses is a 400.
func FuzzPlainText(f *testing.F) {
	for _, s := range []string{
		"<script>alert(1)</script>hello", "a & b", "&lt;script&gt;alert(1)&lt;/script&gt;", "&amp;lt;b&amp;gt;",
		"<<script>script>alert(1)<</script>/script>", "<textarea><b>x</b></textarea>", "\xff\xfe<b>", "<\rscript>",
		"<img src=x onerror=alert(1)>", "<svg><script>alert(1)</script></svg>", "<!--<script>-->", "<![CDATA[<b>]]>",
		strings.Repeat("<b>", 2000), strings.Repeat("&amp;", 3000), strings.Repeat("é", 10_001), "a\x00b", "&#0;", "<a\nhref=x>q</a>",
	} {
		f.Add(s, true)
	}
	p := textPolicy()
	f.Fuzz(func(t *testing.T, in string, multiline bool) {
		out, err := plainText(p, "f", in, 10_000, false, multiline)
		if err != nil {
			var pr *Problem
			if !errors.As(err, &pr) || pr.Status != http.StatusBadRequest {
				t.Fatalf("%q: error %v is not a 400", in, err)
			}
			return
		}
		checkPlain(t, p, in, out)
		again, err := plainText(p, "f", out, 10_000, false, multiline)
		if err != nil || again != out {
			t.Fatalf("%q → %q → %q, %v: not a fixed point", in, out, again, err)
		}
	})
}
