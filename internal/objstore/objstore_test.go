package objstore

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/flowedge/flowedge/internal/testutil/azuritetest"
	"github.com/flowedge/flowedge/internal/testutil/s3test"
	"gocloud.dev/blob"
	"gocloud.dev/gcerrors"
)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// roundTrip writes, reads back, lists and deletes an object in b.
func roundTrip(t *testing.T, ctx context.Context, b *blob.Bucket) {
	t.Helper()
	data := make([]byte, 3<<20+17) // past one multipart part
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	key := "media/owner/0199-obj"
	if err := b.Upload(ctx, key, bytes.NewReader(data), &blob.WriterOptions{ContentType: "image/png"}); err != nil {
		t.Fatalf("upload: %v", err)
	}
	r, err := b.NewReader(ctx, key, nil)
	if err != nil {
		t.Fatalf("reader: %v", err)
	}
	got, err := io.ReadAll(r)
	r.Close()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("read back %d bytes, not the %d written", len(got), len(data))
	}
	attrs, err := b.Attributes(ctx, key)
	if err != nil {
		t.Fatalf("attributes: %v", err)
	}
	if attrs.Size != int64(len(data)) || attrs.ContentType != "image/png" {
		t.Errorf("attributes: size %d type %q", attrs.Size, attrs.ContentType)
	}
	if err := b.Delete(ctx, key); err != nil {
		t.Fatalf("delete: %v", err)
	}
	if _, err := b.NewReader(ctx, key, nil); gcerrors.Code(err) != gcerrors.NotFound {
		t.Fatalf("read after delete: %v, want NotFound", err)
	}
}

// openS3 opens the stores configured, as in production, by the variables
// that point at srv with content and meta the buckets; t closes them.
func openS3(t *testing.T, ctx context.Context, srv *s3test.Server, content, meta string) *Store {
	t.Helper()
	env := map[string]string{}
	for _, kv := range srv.Env(content, meta) {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	cfg, err := FromEnv(envOf(env), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	st, err := Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// TestS3RealServer runs the S3 driver against a real S3 server (versitygw),
// configured through the same variables as production.
func TestS3RealServer(t *testing.T) {
	srv := s3test.Start(t, "flow-content", "flow-meta")
	ctx := ctxT(t)
	st := openS3(t, ctx, srv, "flow-content", "flow-meta")
	if err := st.Ping(ctx); err != nil {
		t.Fatalf("ping: %v", err)
	}
	roundTrip(t, ctx, st.Content)
	roundTrip(t, ctx, st.Meta)

	// Only the meta bucket has the backup: the buckets are distinct.
	if err := st.Meta.WriteAll(ctx, "backups/x", []byte("b"), nil); err != nil {
		t.Fatal(err)
	}
	if ok, _ := st.Content.Exists(ctx, "backups/x"); ok {
		t.Error("an object written to the meta bucket shows in the content bucket")
	}

	srv.Stop()
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := st.Ping(pctx); err == nil {
		t.Fatal("ping succeeds with the server stopped")
	}
}

// TestS3MissingBucket: Ping names a bucket that does not exist.
func TestS3MissingBucket(t *testing.T) {
	srv := s3test.Start(t, "flow-content")
	ctx := ctxT(t)
	st := openS3(t, ctx, srv, "flow-content", "no-such-bucket")
	err := st.Ping(ctx)
	if err == nil || !strings.Contains(err.Error(), "no-such-bucket") {
		t.Fatalf("ping = %v, want an error naming no-such-bucket", err)
	}
}

// TestS3WrongSecret: bad credentials are an error, not an empty bucket.
func TestS3WrongSecret(t *testing.T) {
	srv := s3test.Start(t, "flow-content")
	ctx := ctxT(t)
	st, err := Open(ctx, Config{Provider: ProviderS3, Endpoint: srv.Endpoint, AccessKeyID: s3test.AccessKey,
		SecretAccessKey: "wrong", UsePathStyle: true, ContentBucket: "flow-content"})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.Ping(ctx); err == nil {
		t.Fatal("ping succeeds with a wrong secret")
	}
}

func TestFileProvider(t *testing.T) {
	cfg, err := FromEnv(envOf(nil), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)
	st, err := Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.Ping(ctx); err != nil {
		t.Fatalf("ping: %v", err)
	}
	roundTrip(t, ctx, st.Content)
	roundTrip(t, ctx, st.Meta)
}

// TestAzureAzurite runs the Azure driver against Azurite (optional: skipped
// when it is not installed), configured through the production variables.
func TestAzureAzurite(t *testing.T) {
	srv := azuritetest.Start(t, "flow-content", "flow-meta")
	cfg, err := FromEnv(envOf(map[string]string{
		"STORAGE_PROVIDER": "azure", "AZURE_STORAGE_ACCOUNT_NAME": azuritetest.Account,
		"AZURE_STORAGE_ACCOUNT_KEY": azuritetest.Key, "AZURE_STORAGE_ENDPOINT": srv.Endpoint,
		"CONTENT_BUCKET": "flow-content", "META_BUCKET": "flow-meta",
	}), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)
	st, err := Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.Ping(ctx); err != nil {
		t.Fatalf("ping: %v", err)
	}
	roundTrip(t, ctx, st.Content)
	roundTrip(t, ctx, st.Meta)
	srv.Stop()
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := st.Ping(pctx); err == nil {
		t.Fatal("ping succeeds with Azurite stopped")
	}
}
