package api

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/flowedge/flowedge/internal/httpx"
)

// decoderSeeds are request bodies every decoder fuzz test starts from:
// the script example, huge strings, invalid UTF-8, deep nesting, wrong
// types, duplicate and unknown fields.
func decoderSeeds() []string {
	return []string{
		`{"name":"<script>alert(1)</script>hello"}`,
		`{"content":"<script>alert(1)</script>hello"}`,
		`{"name":"ci","role":"admin","user_id":"alice"}`,
		`{"content":"a & b","media":["https://cdn.example.com/a.png",{"url":"https://cdn.example.com/b.mp4","type":"video","alt":"<b>x</b>"}]}`,
		`{"media":[null,1,"javascript:alert(1)",{"url":"https://u:p@x/"}]}`,
		`{"name":"` + strings.Repeat("é", 101) + `"}`,
		`{"content":"` + strings.Repeat("a", 10_001) + `"}`,
		`{"content":"` + strings.Repeat("<b>", 4000) + `"}`,
		"{\"name\":\"\xff\xfe\"}",
		`{"name":"\ud800"}`,
		`{"name":{"name":{"name":{"name":[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]}}}}`,
		strings.Repeat("[", 10_000) + strings.Repeat("]", 10_000),
		`{"name":"a","name":"b"}`,
		`{"name":"a","extra":true}`,
		`{"name":1e999}`,
		`{"content":"x"} {"content":"y"}`,
		``, `null`, `[]`, `"name"`, `{`,
	}
}

// checkDecodeErr fails unless err is nil or a 400 problem.
func checkDecodeErr(t *testing.T, body []byte, err error) bool {
	t.Helper()
	if err == nil {
		return true
	}
	var p *Problem
	if !errors.As(err, &p) || p.Status != http.StatusBadRequest {
		t.Fatalf("%q: error %v is not a 400 problem", body, err)
	}
	return false
}

func FuzzDecodeChannel(f *testing.F) {
	for _, s := range decoderSeeds() {
		f.Add([]byte(s))
	}
	p := textPolicy()
	f.Fuzz(func(t *testing.T, body []byte) {
		name, err := decodeChannel(p, body)
		if !checkDecodeErr(t, body, err) {
			return
		}
		if name == "" || utf8.RuneCountInString(name) > MaxChannelName || strings.ContainsAny(name, "\n\t") {
			t.Fatalf("%q: accepted name %q", body, name)
		}
		checkPlain(t, p, name, name)
	})
}

func FuzzDecodePost(f *testing.F) {
	for _, s := range decoderSeeds() {
		f.Add([]byte(s), false)
		f.Add([]byte(s), true)
	}
	p := textPolicy()
	f.Fuzz(func(t *testing.T, body []byte, production bool) {
		content, media, mediaIDs, err := decodePost(p, body, production)
		if !checkDecodeErr(t, body, err) {
			return
		}
		if (content == "" && len(media) == 0 && len(mediaIDs) == 0) || len(mediaIDs) > MaxPostMedia || utf8.RuneCountInString(content) > MaxPostContent || len(media) > MaxPostMedia {
			t.Fatalf("%q: accepted %q %v", body, content, media)
		}
		checkPlain(t, p, content, content)
		for _, m := range media {
			if !strings.HasPrefix(m.URL, "https://") && (production || !strings.HasPrefix(m.URL, "http://")) {
				t.Fatalf("%q: accepted media URL %q", body, m.URL)
			}
			checkPlain(t, p, m.Alt, m.Alt)
		}
	})
}

func FuzzDecodeKey(f *testing.F) {
	for _, s := range decoderSeeds() {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		in, err := decodeKey(textPolicy(), body)
		if !checkDecodeErr(t, body, err) {
			return
		}
		if in.Name == "" || (in.Role != RoleAdmin && in.Role != RoleMember) || (in.UserID != "" && !httpx.ValidToken(in.UserID, MaxUserIDBytes)) {
			t.Fatalf("%q: accepted %+v", body, in)
		}
	})
}
