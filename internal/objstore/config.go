package objstore

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
)

// Provider names where the buckets live: the values of STORAGE_PROVIDER.
type Provider string

// The providers. ProviderFile (STORAGE_PROVIDER unset) keeps the buckets as
// directories on local disk.
const (
	ProviderFile  Provider = ""      // directories under the data directory
	ProviderS3    Provider = "s3"    // any S3-compatible server (S3_*)
	ProviderAWS   Provider = "aws"   // Amazon S3 (AWS_*)
	ProviderR2    Provider = "r2"    // Cloudflare R2 (R2_*)
	ProviderGCP   Provider = "gcp"   // Google Cloud Storage (GCP_*, GOOGLE_APPLICATION_CREDENTIALS_JSON)
	ProviderAzure Provider = "azure" // Azure Blob Storage (AZURE_STORAGE_*)
)

// DefaultRegion is the S3 region used when S3_REGION is unset (S3-compatible
// servers accept any; Amazon's SDK needs one).
const DefaultRegion = "us-east-1"

// Config says where the content and meta buckets live and how to reach
// them. Each provider reads only its own fields; Validate says which are
// required. The zero Config is not valid (Dir is required for ProviderFile):
// use FromEnv, or fill in the fields and call Validate.
type Config struct {
	Provider Provider

	// Dir is the directory holding one sub-directory per bucket
	// (ProviderFile only; FromEnv puts it under the data directory).
	Dir string

	// ContentBucket holds uploaded media (CONTENT_BUCKET); required for
	// every cloud provider. For ProviderFile "" means "content".
	ContentBucket string
	// MetaBucket holds backups of the embedded store (META_BUCKET); ""
	// means ContentBucket ("meta" for ProviderFile).
	MetaBucket string

	// Endpoint is the S3 endpoint URL (S3_ENDPOINT for s3, required there;
	// AWS_ENDPOINT_URL for aws, optional; derived from R2AccountID for r2)
	// or the Azure blob service URL (AZURE_STORAGE_ENDPOINT, optional:
	// "" means https://<account>.blob.core.windows.net/).
	Endpoint string
	// Region is the S3 signing region (S3_REGION, AWS_REGION or
	// AWS_DEFAULT_REGION); "" means DefaultRegion for s3 and "auto" for r2.
	Region string
	// AccessKeyID and SecretAccessKey are the S3 credentials (S3_*, AWS_*
	// or R2_*). Required for s3 and r2; for aws, both empty means the SDK's
	// default chain (instance role, IRSA, shared config).
	AccessKeyID, SecretAccessKey string
	// SessionToken goes with temporary AWS credentials (AWS_SESSION_TOKEN).
	SessionToken string
	// UsePathStyle addresses buckets as endpoint/bucket rather than
	// bucket.endpoint (S3_USE_PATH_STYLE); most self-hosted S3 servers want it.
	UsePathStyle bool

	// R2AccountID is the Cloudflare account (R2_ACCOUNT_ID); required for r2.
	R2AccountID string

	// AzureAccountName and AzureAccountKey are the storage account and its
	// shared key (AZURE_STORAGE_ACCOUNT_NAME, AZURE_STORAGE_ACCOUNT_KEY);
	// both required for azure.
	AzureAccountName, AzureAccountKey string

	// GCPProjectID is the Google Cloud project (GCP_PROJECT_ID); informative,
	// bucket access does not need it.
	GCPProjectID string
	// GCPCredentialsJSON is a service account key file's content
	// (GOOGLE_APPLICATION_CREDENTIALS_JSON); "" means Application Default
	// Credentials (workload identity, GOOGLE_APPLICATION_CREDENTIALS).
	GCPCredentialsJSON string
}

// ConfigError is a missing or bad variable.
type ConfigError struct {
	Var string // the environment variable, e.g. "S3_ENDPOINT"
	Err error  // ErrMissing, or what is wrong with the value
}

func (e *ConfigError) Error() string {
	return fmt.Sprintf("storage: %s: %v", e.Var, e.Err)
}

func (e *ConfigError) Unwrap() error { return e.Err }

// ErrMissing is the error of a required variable that is unset.
var ErrMissing = errors.New("required for this STORAGE_PROVIDER but not set")

// FromEnv reads the storage variables through getenv (os.Getenv in the
// binary). dataDir is where ProviderFile keeps its buckets
// (dataDir/objects). The Config is validated: every missing or bad
// variable is reported, joined, each a *ConfigError.
func FromEnv(getenv func(string) string, dataDir string) (Config, error) {
	env := func(k string) string { return strings.TrimSpace(getenv(k)) }
	c := Config{
		Provider:      Provider(strings.ToLower(env("STORAGE_PROVIDER"))),
		ContentBucket: env("CONTENT_BUCKET"),
		MetaBucket:    env("META_BUCKET"),
	}
	var errs []error
	switch c.Provider {
	case ProviderFile:
		c.Dir = filepath.Join(dataDir, "objects")
	case ProviderS3:
		c.Endpoint = env("S3_ENDPOINT")
		c.Region = env("S3_REGION")
		c.AccessKeyID = env("S3_ACCESS_KEY_ID")
		c.SecretAccessKey = env("S3_SECRET_ACCESS_KEY")
		if v := env("S3_USE_PATH_STYLE"); v != "" {
			b, err := strconv.ParseBool(v)
			if err != nil {
				errs = append(errs, &ConfigError{"S3_USE_PATH_STYLE", fmt.Errorf("want true or false, got %q", v)})
			}
			c.UsePathStyle = b
		}
	case ProviderAWS:
		c.Endpoint = env("AWS_ENDPOINT_URL")
		c.Region = env("AWS_REGION")
		if c.Region == "" {
			c.Region = env("AWS_DEFAULT_REGION")
		}
		c.AccessKeyID = env("AWS_ACCESS_KEY_ID")
		c.SecretAccessKey = env("AWS_SECRET_ACCESS_KEY")
		c.SessionToken = env("AWS_SESSION_TOKEN")
	case ProviderR2:
		c.R2AccountID = env("R2_ACCOUNT_ID")
		c.AccessKeyID = env("R2_ACCESS_KEY_ID")
		c.SecretAccessKey = env("R2_SECRET_ACCESS_KEY")
	case ProviderGCP:
		c.GCPProjectID = env("GCP_PROJECT_ID")
		c.GCPCredentialsJSON = getenv("GOOGLE_APPLICATION_CREDENTIALS_JSON")
	case ProviderAzure:
		c.AzureAccountName = env("AZURE_STORAGE_ACCOUNT_NAME")
		c.AzureAccountKey = env("AZURE_STORAGE_ACCOUNT_KEY")
		c.Endpoint = env("AZURE_STORAGE_ENDPOINT")
	}
	if err := c.Validate(); err != nil {
		errs = append(errs, err)
	}
	return c, errors.Join(errs...)
}

// Validate reports every missing or bad field, joined, each a *ConfigError
// naming its environment variable.
func (c *Config) Validate() error {
	var errs []error
	need := func(v, name string) {
		if v == "" {
			errs = append(errs, &ConfigError{name, ErrMissing})
		}
	}
	endpoint := func(v, name string) {
		if v == "" {
			return
		}
		u, err := url.Parse(v)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, &ConfigError{name, fmt.Errorf("want an http(s)://host[:port] URL, got %q", v)})
		}
	}
	switch c.Provider {
	case ProviderFile:
		if c.Dir == "" {
			errs = append(errs, &ConfigError{"FLOW_DATA_DIR", errors.New("the file provider needs a directory")})
		}
	case ProviderS3:
		need(c.Endpoint, "S3_ENDPOINT")
		endpoint(c.Endpoint, "S3_ENDPOINT")
		need(c.AccessKeyID, "S3_ACCESS_KEY_ID")
		need(c.SecretAccessKey, "S3_SECRET_ACCESS_KEY")
	case ProviderAWS:
		need(c.Region, "AWS_REGION")
		endpoint(c.Endpoint, "AWS_ENDPOINT_URL")
		if (c.AccessKeyID == "") != (c.SecretAccessKey == "") {
			errs = append(errs, &ConfigError{"AWS_ACCESS_KEY_ID", errors.New("set both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or neither (the default credential chain)")})
		}
	case ProviderR2:
		need(c.R2AccountID, "R2_ACCOUNT_ID")
		if c.R2AccountID != "" && strings.Trim(strings.ToLower(c.R2AccountID), "0123456789abcdef") != "" {
			errs = append(errs, &ConfigError{"R2_ACCOUNT_ID", fmt.Errorf("want the hexadecimal account id, got %q", c.R2AccountID)})
		}
		need(c.AccessKeyID, "R2_ACCESS_KEY_ID")
		need(c.SecretAccessKey, "R2_SECRET_ACCESS_KEY")
	case ProviderGCP:
		if c.GCPCredentialsJSON != "" {
			var key struct {
				Type string `json:"type"`
			}
			if err := json.Unmarshal([]byte(c.GCPCredentialsJSON), &key); err != nil || key.Type == "" {
				errs = append(errs, &ConfigError{"GOOGLE_APPLICATION_CREDENTIALS_JSON", errors.New("want a credentials JSON object with a \"type\" (e.g. a service account key file's content)")})
			}
		}
	case ProviderAzure:
		need(c.AzureAccountName, "AZURE_STORAGE_ACCOUNT_NAME")
		need(c.AzureAccountKey, "AZURE_STORAGE_ACCOUNT_KEY")
		endpoint(c.Endpoint, "AZURE_STORAGE_ENDPOINT")
	default:
		errs = append(errs, &ConfigError{"STORAGE_PROVIDER", fmt.Errorf("want s3, aws, r2, gcp or azure (or unset for a directory under the data directory), got %q", string(c.Provider))})
	}
	if c.Provider != ProviderFile && isKnown(c.Provider) {
		need(c.ContentBucket, "CONTENT_BUCKET")
	}
	for _, b := range []struct{ v, name string }{{c.ContentBucket, "CONTENT_BUCKET"}, {c.MetaBucket, "META_BUCKET"}} {
		if b.v != "" && !validBucketName(b.v) {
			errs = append(errs, &ConfigError{b.name, fmt.Errorf("want 3 to 63 lower-case letters, digits, dots and dashes, got %q", b.v)})
		}
	}
	return errors.Join(errs...)
}

func isKnown(p Provider) bool {
	switch p {
	case ProviderFile, ProviderS3, ProviderAWS, ProviderR2, ProviderGCP, ProviderAzure:
		return true
	}
	return false
}

// validBucketName accepts the names every provider accepts: 3 to 63 of
// a-z, 0-9, '.', '-', starting and ending with a letter or digit.
func validBucketName(s string) bool {
	if len(s) < 3 || len(s) > 63 {
		return false
	}
	for i, r := range s {
		alnum := r >= 'a' && r <= 'z' || r >= '0' && r <= '9'
		if !alnum && r != '.' && r != '-' || (i == 0 || i == len(s)-1) && !alnum {
			return false
		}
	}
	return true
}

// buckets are the content and meta bucket names with their defaults.
func (c *Config) buckets() (content, meta string) {
	content, meta = c.ContentBucket, c.MetaBucket
	if c.Provider == ProviderFile {
		if content == "" {
			content = "content"
		}
		if meta == "" {
			meta = "meta"
		}
		return content, meta
	}
	if meta == "" {
		meta = content
	}
	return content, meta
}

// Describe is a one-line summary for logs, without secrets.
func (c *Config) Describe() string {
	content, meta := c.buckets()
	switch c.Provider {
	case ProviderFile:
		return fmt.Sprintf("directory %s (content %s, meta %s)", c.Dir, content, meta)
	case ProviderS3, ProviderAWS, ProviderR2:
		return fmt.Sprintf("%s endpoint %q region %q (content %s, meta %s)", c.Provider, c.s3Endpoint(), c.s3Region(), content, meta)
	case ProviderAzure:
		return fmt.Sprintf("azure account %s (content %s, meta %s)", c.AzureAccountName, content, meta)
	}
	return fmt.Sprintf("%s (content %s, meta %s)", c.Provider, content, meta)
}
