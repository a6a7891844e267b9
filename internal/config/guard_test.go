package config

import (
	"errors"
	"strings"
	"testing"
)

const guardBase = `
[partition]
count = 2
[backends]
template = "http://api-{N}:8080"
`

// TestGuardKeys: [auth] and [intake] parse, default to off, and bad values
// are errors naming their key.
func TestGuardKeys(t *testing.T) {
	cfg, err := Parse([]byte(guardBase))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Auth.CheckURL != "" || cfg.Auth.CacheTTL.Duration.String() != "30s" || cfg.Auth.WhenDown != WhenDownAdmit || cfg.Intake.Rate != "" {
		t.Fatalf("defaults: %+v %+v", cfg.Auth, cfg.Intake)
	}
	cfg, err = Parse([]byte(guardBase + `
[auth]
check_url = "http://api-{N}:8080/api/v1/auth/check"
cache_ttl = "1m"
when_down = "reject"
[intake]
rate = "120/min"
`))
	if err != nil {
		t.Fatal(err)
	}
	if r, _ := cfg.Intake.PerSecond(); r != 2 || cfg.Intake.BurstSize() != 120 || cfg.Auth.WhenDown != WhenDownReject {
		t.Fatalf("rate %v burst %d %+v", r, cfg.Intake.BurstSize(), cfg.Auth)
	}
	_, err = Parse([]byte(guardBase + `
[auth]
check_url = "ftp://x/{N}"
when_down = "maybe"
[intake]
rate = "fast"
burst = -1
`))
	var ce *Error
	if !errors.As(err, &ce) {
		t.Fatalf("want *Error, got %v", err)
	}
	for _, key := range []string{"auth.check_url", "auth.when_down", "intake.rate", "intake.burst"} {
		if !strings.Contains(err.Error(), key) {
			t.Errorf("no problem for %s in:\n%v", key, err)
		}
	}
	for _, bad := range []string{"0/s", "5/day", "5"} {
		if _, err := (Intake{Rate: bad}).PerSecond(); err == nil {
			t.Errorf("rate %q accepted", bad)
		}
	}
}
