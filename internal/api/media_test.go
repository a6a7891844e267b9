package api_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"mime/multipart"
	"strings"
	"testing"
	"time"

	"github.com/flowedge/flowedge/internal/api"
	"github.com/flowedge/flowedge/internal/objstore"
	"github.com/flowedge/flowedge/internal/testutil/s3test"
)

// withS3 gives a server object storage on a real S3 server (versitygw).
func withS3(t testing.TB) func(*api.Options) {
	srv := s3test.Start(t, "flow-content")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := objstore.Open(ctx, objstore.Config{Provider: objstore.ProviderS3, Endpoint: srv.Endpoint,
		AccessKeyID: s3test.AccessKey, SecretAccessKey: s3test.SecretKey, UsePathStyle: true, ContentBucket: "flow-content"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return func(o *api.Options) { o.Objects = st }
}

// fileObjects is object storage in directories of a temp dir.
func fileObjects(t testing.TB) *objstore.Store {
	st, err := objstore.Open(context.Background(), objstore.Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// pngOf is a real PNG of w×h random pixels (incompressible: its size
// grows with w×h).
func pngOf(t testing.TB, w, h int) []byte {
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	noise := make([]byte, 4*w*h)
	rand.Read(noise)
	for i := 0; i < w*h; i++ {
		img.Pix[4*i], img.Pix[4*i+1], img.Pix[4*i+2], img.Pix[4*i+3] = noise[4*i], noise[4*i+1], noise[4*i+2], 255
	}
	img.Set(0, 0, color.NRGBA{1, 2, 3, 255})
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// Minimal files of each allowed type, as their magic numbers make them.
var sampleMedia = map[string][]byte{
	"image/gif":       append([]byte("GIF89a\x01\x00\x01\x00\x80\x00\x00"), make([]byte, 32)...),
	"image/jpeg":      append([]byte("\xff\xd8\xff\xe0\x00\x10JFIF\x00"), make([]byte, 32)...),
	"image/webp":      append([]byte("RIFF\x24\x00\x00\x00WEBPVP8 "), make([]byte, 32)...),
	"video/mp4":       append([]byte("\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2"), make([]byte, 32)...),
	"video/quicktime": append([]byte("\x00\x00\x00\x14ftypqt  \x00\x00\x02\x00qt  "), make([]byte, 32)...),
}

func (e *env) upload(key string, data []byte) (resp, api.MediaInfo) {
	e.t.Helper()
	r := e.do(req{method: "POST", path: "/api/v1/media", key: key, body: data,
		header: map[string]string{"Content-Type": "application/octet-stream"}})
	var info api.MediaInfo
	if r.status == 201 {
		r.json(e.t, &info)
	}
	return r, info
}

// TestMedia: uploads to a real S3 server come back byte-identical with the
// type read from their content; too big (11 MB) is 413; content of another
// type is 415 whatever it claims; a file is its owner's (and admins').
func TestMedia(t *testing.T) {
	e := newEnv(t, withS3(t))
	alice, _ := e.newKey("alice", "member", "alice")
	bob, _ := e.newKey("bob", "member", "bob")

	pic := pngOf(t, 600, 600) // ~1.4 MB: above the 1 MiB limit of other routes
	if len(pic) <= api.MaxBodyBytes {
		t.Fatalf("test PNG is %d bytes, want more than MaxBodyBytes", len(pic))
	}
	r, info := e.upload(alice, pic)
	must(t, r, 201)
	if info.ContentType != "image/png" || info.Size != int64(len(pic)) || info.Owner != "alice" {
		t.Fatalf("upload answered %+v", info)
	}
	got := must(t, e.do(req{method: "GET", path: "/api/v1/media/" + info.ID, key: alice}), 200)
	if !bytes.Equal(got.body, pic) || got.header.Get("Content-Type") != "image/png" {
		t.Fatalf("GET gave %d bytes of %s, not the %d uploaded", len(got.body), got.header.Get("Content-Type"), len(pic))
	}
	// Another user cannot read it (404, as if it did not exist); an admin can.
	checkProblem(t, e.do(req{method: "GET", path: "/api/v1/media/" + info.ID, key: bob}), 404)
	must(t, e.do(req{method: "GET", path: "/api/v1/media/" + info.ID, key: adminKey}), 200)
	checkProblem(t, e.do(req{method: "GET", path: "/api/v1/media/not-a-uuid", key: alice}), 400)
	checkProblem(t, e.do(req{method: "GET", path: "/api/v1/media/0199b1d2-0000-7000-8000-000000000000", key: alice}), 404)

	for want, data := range sampleMedia {
		r, info := e.upload(alice, data)
		must(t, r, 201)
		if info.ContentType != want {
			t.Errorf("%s sample detected as %s", want, info.ContentType)
		}
	}

	// Multipart form, "file" part.
	var form bytes.Buffer
	mw := multipart.NewWriter(&form)
	fw, _ := mw.CreateFormFile("file", "holiday.png")
	fw.Write(pic[:])
	mw.Close()
	r = must(t, e.do(req{method: "POST", path: "/api/v1/media", key: alice, body: form.Bytes(),
		header: map[string]string{"Content-Type": mw.FormDataContentType()}}), 201)
	r.json(t, &info)
	if got := must(t, e.do(req{method: "GET", path: "/api/v1/media/" + info.ID, key: alice}), 200); !bytes.Equal(got.body, pic) {
		t.Fatal("multipart upload did not come back byte-identical")
	}

	// Too big: 11 MB, whatever its content.
	big := make([]byte, 11<<20)
	copy(big, pic)
	r, _ = e.upload(alice, big)
	checkProblem(t, r, 413)
	// Not an allowed type, whatever the name or Content-Type claims.
	for _, bad := range [][]byte{[]byte("just text, not a picture"), []byte("%PDF-1.7\n%\xe2\xe3\xcf\xd3\n"), []byte("<svg xmlns='http://www.w3.org/2000/svg'/>")} {
		r := e.do(req{method: "POST", path: "/api/v1/media", key: alice, body: bad, header: map[string]string{"Content-Type": "image/png"}})
		checkProblem(t, r, 415)
	}
	checkProblem(t, e.do(req{method: "POST", path: "/api/v1/media", key: alice, body: []byte{}}), 400)
	// No key, no upload.
	checkProblem(t, e.do(req{method: "POST", path: "/api/v1/media", body: pic}), 401)
}

// TestPostMediaIDs: a post names up to 10 uploads of its author; 11, an
// unknown id, a repeat or another user's upload are 400.
func TestPostMediaIDs(t *testing.T) {
	e := newEnv(t, withS3(t))
	alice, _ := e.newKey("alice", "member", "alice")
	bob, _ := e.newKey("bob", "member", "bob")
	ch := e.channel(alice, "pics")
	var ids []string
	for range 11 {
		r, info := e.upload(alice, sampleMedia["image/gif"])
		must(t, r, 201)
		ids = append(ids, info.ID)
	}
	path := "/api/v1/channels/" + ch.ID + "/posts"
	var p api.Post
	must(t, e.do(req{method: "POST", path: path, key: alice, body: map[string]any{"media_ids": ids[:10]}}), 201).json(t, &p)
	if len(p.MediaIDs) != 10 {
		t.Fatalf("post has %d media ids, want 10", len(p.MediaIDs))
	}
	r := e.do(req{method: "POST", path: path, key: alice, body: map[string]any{"content": "x", "media_ids": ids}})
	checkProblem(t, r, 400)
	if !strings.Contains(string(r.body), "at most 10") {
		t.Errorf("11 media ids: %s", r.body)
	}
	for name, bad := range map[string][]string{
		"unknown":  {"0199b1d2-0000-7000-8000-000000000000"},
		"repeated": {ids[0], ids[0]},
		"not uuid": {"x"},
	} {
		if r := e.do(req{method: "POST", path: path, key: alice, body: map[string]any{"media_ids": bad}}); r.status != 400 {
			t.Errorf("%s media id: %v, want 400", name, r)
		}
	}
	// Bob cannot attach Alice's upload to a channel of his.
	bch := e.channel(bob, "bob's")
	r = e.do(req{method: "POST", path: "/api/v1/channels/" + bch.ID + "/posts", key: bob, body: map[string]any{"media_ids": ids[:1]}})
	checkProblem(t, r, 400)
	if !strings.Contains(string(r.body), fmt.Sprintf("no media %s", ids[0])) {
		t.Errorf("another user's media: %s", r.body)
	}
}

// TestMediaWithoutStorage: no object storage, media routes are 503.
func TestMediaWithoutStorage(t *testing.T) {
	e := newEnv(t)
	r, _ := e.upload(adminKey, sampleMedia["image/gif"])
	checkProblem(t, r, 503)
}
