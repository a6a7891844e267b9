// Package objstore opens api-flow's two buckets — content (uploaded media)
// and meta (backups of the embedded store) — on the provider named by
// STORAGE_PROVIDER: any S3-compatible server, Amazon S3, Cloudflare R2,
// Google Cloud Storage, Azure Blob Storage, or (unset) directories on local
// disk. One portable library, gocloud.dev/blob, serves them all, so the code
// above sees one *blob.Bucket API whatever the provider.
//
// Guarantees: a write is visible to readers only once its writer closed
// without error (blob.Writer's semantics on every driver: a failed or
// cancelled upload leaves no object). Open checks nothing over the network;
// Ping reaches both buckets and is what the storage health check runs.
package objstore

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"gocloud.dev/blob"
	"gocloud.dev/blob/azureblob"
	"gocloud.dev/blob/fileblob"
	"gocloud.dev/blob/gcsblob"
	"gocloud.dev/blob/s3blob"
	"gocloud.dev/gcp"
	"golang.org/x/oauth2/google"
)

// Store is the opened pair of buckets. Content and Meta may be the same
// bucket (META_BUCKET unset); callers keep their keys under distinct
// prefixes. Close closes both.
type Store struct {
	Content *blob.Bucket
	Meta    *blob.Bucket
	cfg     Config
}

// Open opens the buckets of c (validated first). It makes no network call;
// a directory bucket's directory is created.
func Open(ctx context.Context, c Config) (*Store, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	content, meta := c.buckets()
	opener, err := c.opener(ctx)
	if err != nil {
		return nil, err
	}
	cb, err := opener(ctx, content)
	if err != nil {
		return nil, fmt.Errorf("storage: open content bucket %q: %w", content, err)
	}
	mb := cb
	if meta != content {
		if mb, err = opener(ctx, meta); err != nil {
			_ = cb.Close()
			return nil, fmt.Errorf("storage: open meta bucket %q: %w", meta, err)
		}
	}
	return &Store{Content: cb, Meta: mb, cfg: c}, nil
}

// Config is the configuration the Store was opened with.
func (s *Store) Config() Config { return s.cfg }

// Ping lists at most one object of each bucket: nil when both answer. A
// bucket that does not exist is an error naming it.
func (s *Store) Ping(ctx context.Context) error {
	content, meta := s.cfg.buckets()
	for _, b := range []struct {
		name string
		b    *blob.Bucket
	}{{content, s.Content}, {meta, s.Meta}} {
		ok, err := b.b.IsAccessible(ctx)
		if err != nil {
			return fmt.Errorf("storage: bucket %q: %w", b.name, err)
		}
		if !ok {
			return fmt.Errorf("storage: bucket %q does not exist", b.name)
		}
		if s.Meta == s.Content {
			break
		}
	}
	return nil
}

// Close closes the buckets; safe to call once.
func (s *Store) Close() error {
	err := s.Content.Close()
	if s.Meta != s.Content {
		err = errors.Join(err, s.Meta.Close())
	}
	return err
}

// openFunc opens one bucket by name.
type openFunc func(ctx context.Context, bucket string) (*blob.Bucket, error)

// opener builds the provider's client once and returns how to open a
// bucket with it.
func (c *Config) opener(ctx context.Context) (openFunc, error) {
	switch c.Provider {
	case ProviderFile:
		return func(_ context.Context, name string) (*blob.Bucket, error) {
			dir := filepath.Join(c.Dir, name)
			if err := os.MkdirAll(dir, 0o750); err != nil {
				return nil, err
			}
			// NoTempDir: the data directory is often its own volume, where
			// a rename from /tmp would fail.
			return fileblob.OpenBucket(dir, &fileblob.Options{NoTempDir: true, DirFileMode: 0o750})
		}, nil
	case ProviderS3, ProviderAWS, ProviderR2:
		client, err := c.s3Client(ctx)
		if err != nil {
			return nil, err
		}
		return func(ctx context.Context, name string) (*blob.Bucket, error) {
			opts := &s3blob.Options{}
			if c.Provider != ProviderAWS {
				// S3-compatible servers do not all know the SDK's newer
				// default checksums: send them only where required.
				opts.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
			}
			return s3blob.OpenBucket(ctx, client, name, opts)
		}, nil
	case ProviderGCP:
		client, err := c.gcsClient(ctx)
		if err != nil {
			return nil, err
		}
		return func(ctx context.Context, name string) (*blob.Bucket, error) {
			return gcsblob.OpenBucket(ctx, client, name, nil)
		}, nil
	case ProviderAzure:
		cred, err := azblob.NewSharedKeyCredential(c.AzureAccountName, c.AzureAccountKey)
		if err != nil {
			return nil, &ConfigError{"AZURE_STORAGE_ACCOUNT_KEY", err}
		}
		svc := c.Endpoint
		if svc == "" {
			svc = "https://" + c.AzureAccountName + ".blob.core.windows.net/"
		}
		return func(ctx context.Context, name string) (*blob.Bucket, error) {
			u, err := url.JoinPath(svc, name)
			if err != nil {
				return nil, err
			}
			cc, err := container.NewClientWithSharedKeyCredential(u, cred, nil)
			if err != nil {
				return nil, err
			}
			return azureblob.OpenBucket(ctx, cc, nil)
		}, nil
	}
	return nil, &ConfigError{"STORAGE_PROVIDER", fmt.Errorf("unknown provider %q", string(c.Provider))}
}

// s3Endpoint is the endpoint URL the S3 client calls ("" means Amazon's).
func (c *Config) s3Endpoint() string {
	if c.Provider == ProviderR2 {
		return "https://" + c.R2AccountID + ".r2.cloudflarestorage.com"
	}
	return c.Endpoint
}

// s3Region is the signing region.
func (c *Config) s3Region() string {
	switch {
	case c.Region != "":
		return c.Region
	case c.Provider == ProviderR2:
		return "auto"
	}
	return DefaultRegion
}

// s3Client builds the S3 client of s3, aws and r2. Static credentials when
// given; for aws without them, the SDK's default chain.
func (c *Config) s3Client(ctx context.Context) (*s3.Client, error) {
	opts := []func(*awsconfig.LoadOptions) error{awsconfig.WithRegion(c.s3Region())}
	if c.AccessKeyID != "" {
		opts = append(opts, awsconfig.WithCredentialsProvider(
			credentials.NewStaticCredentialsProvider(c.AccessKeyID, c.SecretAccessKey, c.SessionToken)))
	}
	if c.Provider != ProviderAWS {
		// s3 and r2 use only their own variables: no shared config files
		// or AWS_* variables of the environment leak in.
		opts = append(opts, awsconfig.WithSharedConfigFiles([]string{}), awsconfig.WithSharedCredentialsFiles([]string{}))
	}
	cfg, err := awsconfig.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("storage: %s configuration: %w", c.Provider, err)
	}
	endpoint := c.s3Endpoint()
	return s3.NewFromConfig(cfg, func(o *s3.Options) {
		if endpoint != "" {
			o.BaseEndpoint = aws.String(endpoint)
		}
		o.UsePathStyle = c.UsePathStyle
		if c.Provider != ProviderAWS {
			o.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
			o.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
		}
	}), nil
}

// gcsClient builds the GCS HTTP client from the JSON credentials, or from
// Application Default Credentials.
func (c *Config) gcsClient(ctx context.Context) (*gcp.HTTPClient, error) {
	const scope = "https://www.googleapis.com/auth/devstorage.read_write"
	var creds *google.Credentials
	var err error
	if c.GCPCredentialsJSON != "" {
		creds, err = google.CredentialsFromJSON(ctx, []byte(c.GCPCredentialsJSON), scope)
		if err != nil {
			return nil, &ConfigError{"GOOGLE_APPLICATION_CREDENTIALS_JSON", err}
		}
	} else if creds, err = gcp.DefaultCredentials(ctx); err != nil {
		return nil, fmt.Errorf("storage: gcp: no GOOGLE_APPLICATION_CREDENTIALS_JSON and no default credentials: %w", err)
	}
	return gcp.NewHTTPClient(gcp.DefaultTransport(), gcp.CredentialsTokenSource(creds))
}

// Timeout is how long one storage operation may take (storage 10s, docs/production.md).
const Timeout = 10 * time.Second
