package objstore

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

func envOf(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

// TestFromEnvProviders reads each provider's variables into its fields.
func TestFromEnvProviders(t *testing.T) {
	dataDir := t.TempDir()
	cases := []struct {
		name string
		env  map[string]string
		want Config
	}{
		{"unset: directories under the data dir", map[string]string{},
			Config{Dir: filepath.Join(dataDir, "objects")}},
		{"s3", map[string]string{
			"STORAGE_PROVIDER": "s3", "S3_ENDPOINT": "http://minio:9000", "S3_REGION": "eu-west-1",
			"S3_ACCESS_KEY_ID": "ak", "S3_SECRET_ACCESS_KEY": "sk", "S3_USE_PATH_STYLE": "true",
			"CONTENT_BUCKET": "flow-content", "META_BUCKET": "flow-meta"},
			Config{Provider: ProviderS3, Endpoint: "http://minio:9000", Region: "eu-west-1",
				AccessKeyID: "ak", SecretAccessKey: "sk", UsePathStyle: true,
				ContentBucket: "flow-content", MetaBucket: "flow-meta"}},
		{"aws with keys and AWS_DEFAULT_REGION", map[string]string{
			"STORAGE_PROVIDER": "AWS", "AWS_DEFAULT_REGION": "us-west-2", "AWS_ACCESS_KEY_ID": "ak",
			"AWS_SECRET_ACCESS_KEY": "sk", "AWS_SESSION_TOKEN": "tok", "CONTENT_BUCKET": "flow-content"},
			Config{Provider: ProviderAWS, Region: "us-west-2", AccessKeyID: "ak", SecretAccessKey: "sk",
				SessionToken: "tok", ContentBucket: "flow-content"}},
		{"aws default chain, AWS_REGION wins", map[string]string{
			"STORAGE_PROVIDER": "aws", "AWS_REGION": "eu-central-1", "AWS_DEFAULT_REGION": "us-west-2",
			"CONTENT_BUCKET": "flow-content"},
			Config{Provider: ProviderAWS, Region: "eu-central-1", ContentBucket: "flow-content"}},
		{"r2", map[string]string{
			"STORAGE_PROVIDER": "r2", "R2_ACCOUNT_ID": "0123abcd", "R2_ACCESS_KEY_ID": "ak",
			"R2_SECRET_ACCESS_KEY": "sk", "CONTENT_BUCKET": "flow-content"},
			Config{Provider: ProviderR2, R2AccountID: "0123abcd", AccessKeyID: "ak", SecretAccessKey: "sk",
				ContentBucket: "flow-content"}},
		{"gcp", map[string]string{
			"STORAGE_PROVIDER": "gcp", "GCP_PROJECT_ID": "proj",
			"GOOGLE_APPLICATION_CREDENTIALS_JSON": `{"type":"service_account"}`, "CONTENT_BUCKET": "flow-content"},
			Config{Provider: ProviderGCP, GCPProjectID: "proj", GCPCredentialsJSON: `{"type":"service_account"}`,
				ContentBucket: "flow-content"}},
		{"azure", map[string]string{
			"STORAGE_PROVIDER": "azure", "AZURE_STORAGE_ACCOUNT_NAME": "acct", "AZURE_STORAGE_ACCOUNT_KEY": "a2V5",
			"CONTENT_BUCKET": "flow-content"},
			Config{Provider: ProviderAzure, AzureAccountName: "acct", AzureAccountKey: "a2V5", ContentBucket: "flow-content"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := FromEnv(envOf(c.env), dataDir)
			if err != nil {
				t.Fatalf("FromEnv: %v", err)
			}
			if got != c.want {
				t.Fatalf("FromEnv =\n%+v\nwant\n%+v", got, c.want)
			}
		})
	}
}

// TestFromEnvErrors: every missing or bad variable is named, all at once.
func TestFromEnvErrors(t *testing.T) {
	cases := []struct {
		name string
		env  map[string]string
		vars []string // the variables the error must name
	}{
		{"unknown provider", map[string]string{"STORAGE_PROVIDER": "ftp"}, []string{"STORAGE_PROVIDER"}},
		{"s3 with nothing", map[string]string{"STORAGE_PROVIDER": "s3"},
			[]string{"S3_ENDPOINT", "S3_ACCESS_KEY_ID", "S3_SECRET_ACCESS_KEY", "CONTENT_BUCKET"}},
		{"s3 bad endpoint and path style", map[string]string{"STORAGE_PROVIDER": "s3", "S3_ENDPOINT": "minio:9000",
			"S3_ACCESS_KEY_ID": "a", "S3_SECRET_ACCESS_KEY": "s", "S3_USE_PATH_STYLE": "yes please", "CONTENT_BUCKET": "ok-bucket"},
			[]string{"S3_ENDPOINT", "S3_USE_PATH_STYLE"}},
		{"aws without region", map[string]string{"STORAGE_PROVIDER": "aws", "CONTENT_BUCKET": "ok-bucket"}, []string{"AWS_REGION"}},
		{"aws half a key pair", map[string]string{"STORAGE_PROVIDER": "aws", "AWS_REGION": "us-east-1",
			"AWS_ACCESS_KEY_ID": "a", "CONTENT_BUCKET": "ok-bucket"}, []string{"AWS_ACCESS_KEY_ID"}},
		{"r2 with nothing", map[string]string{"STORAGE_PROVIDER": "r2"},
			[]string{"R2_ACCOUNT_ID", "R2_ACCESS_KEY_ID", "R2_SECRET_ACCESS_KEY", "CONTENT_BUCKET"}},
		{"r2 bad account", map[string]string{"STORAGE_PROVIDER": "r2", "R2_ACCOUNT_ID": "evil.example/x",
			"R2_ACCESS_KEY_ID": "a", "R2_SECRET_ACCESS_KEY": "s", "CONTENT_BUCKET": "ok-bucket"}, []string{"R2_ACCOUNT_ID"}},
		{"gcp bad credentials", map[string]string{"STORAGE_PROVIDER": "gcp",
			"GOOGLE_APPLICATION_CREDENTIALS_JSON": "/path/to/key.json", "CONTENT_BUCKET": "ok-bucket"},
			[]string{"GOOGLE_APPLICATION_CREDENTIALS_JSON"}},
		{"azure with nothing", map[string]string{"STORAGE_PROVIDER": "azure"},
			[]string{"AZURE_STORAGE_ACCOUNT_NAME", "AZURE_STORAGE_ACCOUNT_KEY", "CONTENT_BUCKET"}},
		{"bad bucket names", map[string]string{"STORAGE_PROVIDER": "gcp", "CONTENT_BUCKET": "Has_Upper", "META_BUCKET": "x"},
			[]string{"CONTENT_BUCKET", "META_BUCKET"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := FromEnv(envOf(c.env), t.TempDir())
			if err == nil {
				t.Fatal("FromEnv accepted it")
			}
			for _, v := range c.vars {
				if !strings.Contains(err.Error(), v+":") {
					t.Errorf("error does not name %s:\n%v", v, err)
				}
			}
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Errorf("error is not a *ConfigError: %v", err)
			}
			if strings.Contains(c.env["STORAGE_PROVIDER"], "s3") && !errors.Is(err, ErrMissing) && c.name == "s3 with nothing" {
				t.Errorf("missing variables are not ErrMissing: %v", err)
			}
		})
	}
}

func TestBucketDefaults(t *testing.T) {
	c := Config{Dir: "/x"}
	if content, meta := c.buckets(); content != "content" || meta != "meta" {
		t.Errorf("file buckets = %s, %s", content, meta)
	}
	c = Config{Provider: ProviderS3, ContentBucket: "flow"}
	if content, meta := c.buckets(); content != "flow" || meta != "flow" {
		t.Errorf("META_BUCKET unset: buckets = %s, %s; want the content bucket for both", content, meta)
	}
	if got := (&Config{Provider: ProviderR2, R2AccountID: "abc"}).s3Endpoint(); got != "https://abc.r2.cloudflarestorage.com" {
		t.Errorf("r2 endpoint = %s", got)
	}
	if got := (&Config{Provider: ProviderR2}).s3Region(); got != "auto" {
		t.Errorf("r2 region = %s", got)
	}
}
