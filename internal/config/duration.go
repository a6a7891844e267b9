package config

import (
	"fmt"
	"strings"
	"time"
)

// Duration is a time.Duration written in TOML as a Go duration string:
// "100ms", "2s", "1m", "1h30m", "24h". Bare numbers are rejected (no unit).
// The zero value is 0.
type Duration struct{ time.Duration }

func seconds(n int) Duration { return Duration{time.Duration(n) * time.Second} }
func millis(n int) Duration  { return Duration{time.Duration(n) * time.Millisecond} }

// UnmarshalText parses a Go duration string.
func (d *Duration) UnmarshalText(text []byte) error {
	s := string(text)
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("invalid duration %q: use a number with a unit, such as \"100ms\", \"2s\", \"1m\" or \"24h\"", s)
	}
	d.Duration = v
	return nil
}

// MarshalText writes the shortest Go duration string: "2s", "1m", "24h".
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// String is like time.Duration's but drops zero trailing units ("1m", not "1m0s").
func (d Duration) String() string {
	s := d.Duration.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
