package api_test

import (
	"strings"
	"testing"

	"github.com/flowedge/flowedge/internal/api"
)

// newKey creates an API key of role for user (both may be "") and returns
// its secret and record.
func (e *env) newKey(name, role, user string) (string, api.APIKey) {
	e.t.Helper()
	body := map[string]any{"name": name}
	if role != "" {
		body["role"] = role
	}
	if user != "" {
		body["user_id"] = user
	}
	var k struct {
		api.APIKey
		Key string `json:"key"`
	}
	must(e.t, e.do(req{method: "POST", path: "/api/v1/keys", key: adminKey, body: body}), 201).json(e.t, &k)
	return k.Key, k.APIKey
}

// channel creates a channel named name with key and returns it.
func (e *env) channel(key, name string) api.Channel {
	e.t.Helper()
	var ch api.Channel
	must(e.t, e.do(req{method: "POST", path: "/api/v1/channels", key: key, body: map[string]any{"name": name}}), 201).json(e.t, &ch)
	return ch
}

// TestChannelName: a name is at most 100 characters as sent (counted in
// runes, so 100 two-byte "é" pass and 101 do not), HTML is removed, and a
// name that is empty once it is removed is refused.
func TestChannelName(t *testing.T) {
	e := newEnv(t)
	post := func(name any) resp {
		return e.do(req{method: "POST", path: "/api/v1/channels", key: adminKey, body: map[string]any{"name": name}})
	}
	ch := e.channel(adminKey, strings.Repeat("é", 100))
	if ch.Name != strings.Repeat("é", 100) || ch.Owner != api.BootstrapUserID {
		t.Fatalf("channel %+v", ch)
	}
	checkProblem(t, post(strings.Repeat("é", 101)), 400)
	checkProblem(t, post(strings.Repeat("a", 101)), 400)
	// The limit counts what was sent: 95 characters of text in a tag
	// still count the tag.
	checkProblem(t, post("<b>"+strings.Repeat("a", 95)+"</b>"), 400)

	for in, want := range map[string]string{
		"<script>alert(1)</script>hello":        "hello",
		"  <b>Team</b> & friends  ":             "Team & friends",
		"a < b":                                 "a < b",
		"&lt;script&gt;alert(1)&lt;/script&gt;": "",
		"<img src=x onerror=alert(1)>news":      "news",
		"Ünïcödé 🚀":                             "Ünïcödé 🚀",
	} {
		r := post(in)
		if want == "" {
			checkProblem(t, r, 400)
			continue
		}
		var got api.Channel
		must(t, r, 201).json(t, &got)
		if got.Name != want {
			t.Errorf("name %q stored as %q, want %q", in, got.Name, want)
		}
	}
	for _, bad := range []any{"", "   ", "<script>x</script>", "<p></p>", 42, nil, "tab\there", "nul\x00"} {
		checkProblem(t, post(bad), 400)
	}
	checkProblem(t, e.do(req{method: "POST", path: "/api/v1/channels", key: adminKey, body: `{"name":"x","extra":1}`}), 400)
	checkProblem(t, e.do(req{method: "POST", path: "/api/v1/channels", key: adminKey, body: "{\"name\":\"\xff\xfe\"}"}), 400)
}

// TestChannels: creating, listing and reading channels; a channel belongs
// to its creator's user, is invisible (404) to other users and visible to
// admin keys; ids are UUIDs (a typo is a 400).
func TestChannels(t *testing.T) {
	e := newEnv(t)
	alice, aliceKey := e.newKey("alice", "", "alice")
	bob, _ := e.newKey("bob", "", "bob")
	mine := e.channel(alice, "alice's")
	if mine.Owner != "alice" || mine.CreatedBy != aliceKey.ID || mine.ID == "" {
		t.Fatalf("channel %+v", mine)
	}
	r := must(t, e.do(req{method: "GET", path: "/api/v1/channels/" + mine.ID, key: alice}), 200)
	var got api.Channel
	r.json(t, &got)
	if got != mine {
		t.Fatalf("read %+v, want %+v", got, mine)
	}
	must(t, e.do(req{method: "GET", path: "/api/v1/channels/" + mine.ID, key: adminKey}), 200)
	checkProblem(t, e.do(req{method: "GET", path: "/api/v1/channels/" + mine.ID, key: bob}), 404)
	checkProblem(t, e.do(req{method: "GET", path: "/api/v1/channels/" + mine.ID + "/posts", key: bob}), 404)
	checkProblem(t, e.do(req{method: "POST", path: "/api/v1/channels/" + mine.ID + "/posts", key: bob, body: map[string]any{"content": "hi"}}), 404)
	e.channel(bob, "bob's")

	var l struct {
		Items      []api.Channel `json:"items"`
		NextCursor string        `json:"next_cursor"`
	}
	must(t, e.do(req{method: "GET", path: "/api/v1/channels", key: alice}), 200).json(t, &l)
	if len(l.Items) != 1 || l.Items[0].ID != mine.ID {
		t.Fatalf("alice lists %+v", l.Items)
	}
	must(t, e.do(req{method: "GET", path: "/api/v1/channels?limit=1", key: adminKey}), 200).json(t, &l)
	if len(l.Items) != 1 || l.Items[0].ID != mine.ID || l.NextCursor != mine.ID {
		t.Fatalf("admin page 1 %+v %q", l.Items, l.NextCursor)
	}
	must(t, e.do(req{method: "GET", path: "/api/v1/channels?limit=1&cursor=" + l.NextCursor, key: adminKey}), 200).json(t, &l)
	if len(l.Items) != 1 || l.Items[0].Name != "bob's" {
		t.Fatalf("admin page 2 %+v", l.Items)
	}

	typo := mine.ID[:len(mine.ID)-1] + "g"
	for _, p := range []string{"/api/v1/channels/" + typo, "/api/v1/channels/" + typo + "/posts", "/api/v1/channels/not-a-uuid", "/api/v1/channels/" + strings.ToUpper(mine.ID)} {
		checkProblem(t, e.do(req{method: "GET", path: p, key: alice}), 400)
	}
	checkProblem(t, e.do(req{method: "POST", path: "/api/v1/channels/" + typo + "/posts", key: alice, body: map[string]any{"content": "x"}}), 400)
	checkProblem(t, e.do(req{method: "GET", path: "/api/v1/channels/01890000-0000-7000-8000-000000000000", key: alice}), 404)
}

// TestPosts: content is at most 10,000 characters as sent, HTML removed;
// media (URL strings or objects) may stand in for content; posts list in
// creation order.
func TestPosts(t *testing.T) {
	e := newEnv(t)
	ch := e.channel(adminKey, "news")
	path := "/api/v1/channels/" + ch.ID + "/posts"
	post := func(body any) resp { return e.do(req{method: "POST", path: path, key: adminKey, body: body}) }

	var p api.Post
	must(t, post(map[string]any{"content": strings.Repeat("é", 10_000)}), 201).json(t, &p)
	if p.Content != strings.Repeat("é", 10_000) || p.ChannelID != ch.ID || p.Author != api.BootstrapUserID || p.KeyID == "" {
		t.Fatalf("post %+v", p)
	}
	checkProblem(t, post(map[string]any{"content": strings.Repeat("é", 10_001)}), 400)

	r := must(t, post(map[string]any{"content": "<script>alert(1)</script>hello"}), 201)
	r.json(t, &p)
	if p.Content != "hello" || r.header.Get("Location") != path+"/"+p.ID {
		t.Fatalf("script post stored as %q (Location %q)", p.Content, r.header.Get("Location"))
	}
	var stored api.Post
	must(t, e.do(req{method: "GET", path: path + "/" + p.ID, key: adminKey}), 200).json(t, &stored)
	if stored.Content != "hello" || stored.ID != p.ID {
		t.Fatalf("stored %+v", stored)
	}
	checkProblem(t, e.do(req{method: "GET", path: path + "/" + p.ID[:35] + "x", key: adminKey}), 400)
	checkProblem(t, e.do(req{method: "GET", path: path + "/" + ch.ID, key: adminKey}), 404)
	must(t, post(map[string]any{"content": "line 1\r\n<i>line</i> 2 & more\n\ttabbed"}), 201).json(t, &p)
	if p.Content != "line 1\nline 2 & more\n\ttabbed" {
		t.Fatalf("multi-line post stored as %q", p.Content)
	}
	// Escaped markup is not unwrapped into markup.
	for _, sneaky := range []string{"&lt;script&gt;alert(1)&lt;/script&gt;", "&amp;lt;b&amp;gt;x", "<<script>script>alert(1)<</script>/script>ok", "<textarea><b>x</b></textarea>"} {
		r := post(map[string]any{"content": sneaky})
		if r.status == 201 {
			r.json(t, &p)
			if strings.ContainsAny(p.Content, "<>") && strings.Contains(strings.ToLower(p.Content), "<script") || strings.Contains(p.Content, "<b>") {
				t.Fatalf("%q stored as %q", sneaky, p.Content)
			}
		} else {
			checkProblem(t, r, 400)
		}
	}

	must(t, post(map[string]any{"media": []any{"https://cdn.example.com/a.png", map[string]any{"url": "https://cdn.example.com/b.mp4", "type": "video", "alt": "<b>clip</b>"}}}), 201).json(t, &p)
	if p.Content != "" || len(p.Media) != 2 || p.Media[0].URL != "https://cdn.example.com/a.png" || p.Media[1].Type != "video" || p.Media[1].Alt != "clip" {
		t.Fatalf("media post %+v", p)
	}
	for name, body := range map[string]any{
		"no content":        map[string]any{},
		"blank content":     map[string]any{"content": "  "},
		"only markup":       map[string]any{"content": "<script>x</script>"},
		"empty media":       map[string]any{"media": []any{}},
		"javascript: URL":   map[string]any{"media": []any{"javascript:alert(1)"}},
		"data: URL":         map[string]any{"media": []any{"data:text/html,<script>x</script>"}},
		"relative URL":      map[string]any{"media": []any{"/a.png"}},
		"user info":         map[string]any{"media": []any{"https://u:p@cdn.example.com/a.png"}},
		"no host":           map[string]any{"media": []any{"https:///a.png"}},
		"bad type":          map[string]any{"media": []any{map[string]any{"url": "https://x.example/a", "type": "exe"}}},
		"unknown member":    map[string]any{"media": []any{map[string]any{"url": "https://x.example/a", "size": 1}}},
		"number item":       map[string]any{"media": []any{1}},
		"null item":         map[string]any{"media": []any{nil}},
		"too many":          map[string]any{"media": strings.Split(strings.Repeat("https://x.example/a,", 11), ",")[:11]},
		"URL with a space":  map[string]any{"media": []any{"https://x.example/a b"}},
		"URL with markup":   map[string]any{"media": []any{`https://x.example/a?q="><script>alert(1)</script>`}},
		"huge URL":          map[string]any{"media": []any{"https://x.example/" + strings.Repeat("a", 2100)}},
		"unknown field":     map[string]any{"content": "x", "html": true},
		"content not text":  map[string]any{"content": []int{1}},
		"control character": map[string]any{"content": "bell\a"},
	} {
		r := post(body)
		if r.status != 400 {
			t.Errorf("%s: %s", name, r)
			continue
		}
		checkProblem(t, r, 400)
	}
	checkProblem(t, e.do(req{method: "POST", path: "/api/v1/channels/01890000-0000-7000-8000-000000000000/posts", key: adminKey, body: map[string]any{"content": "x"}}), 404)

	var l struct {
		Items []api.Post `json:"items"`
	}
	must(t, e.do(req{method: "GET", path: path, key: adminKey}), 200).json(t, &l)
	if len(l.Items) < 4 || l.Items[0].Content != strings.Repeat("é", 10_000) || l.Items[1].Content != "hello" {
		t.Fatalf("%d posts, first %q", len(l.Items), l.Items[0].Content[:10])
	}
	for i := 1; i < len(l.Items); i++ {
		if l.Items[i].ID <= l.Items[i-1].ID {
			t.Fatalf("posts out of order: %s then %s", l.Items[i-1].ID, l.Items[i].ID)
		}
	}

	// In production only https media.
	prod := newEnv(t, func(o *api.Options) { o.Production = true })
	pch := prod.channel(adminKey, "prod")
	checkProblem(t, prod.do(req{method: "POST", path: "/api/v1/channels/" + pch.ID + "/posts", key: adminKey, body: map[string]any{"media": []any{"http://cdn.example.com/a.png"}}}), 400)
	must(t, prod.do(req{method: "POST", path: "/api/v1/channels/" + pch.ID + "/posts", key: adminKey, body: map[string]any{"media": []any{"https://cdn.example.com/a.png"}}}), 201)
}
