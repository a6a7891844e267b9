package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/flowedge/flowedge/internal/testutil/pgtest"
)

// TestPartitionsCommand: `api partitions` shows and sets the shared count,
// each change with the next epoch; it needs DATABASE_URL and a count >= 1.
func TestPartitionsCommand(t *testing.T) {
	url := pgtest.DB(t)
	env := func(k string) string {
		if k == "DATABASE_URL" {
			return url
		}
		return ""
	}
	call := func(getenv func(string) string, args ...string) (int, string) {
		var out bytes.Buffer
		code := run(context.Background(), append([]string{"partitions"}, args...), getenv, &out)
		return code, out.String()
	}
	for _, c := range []struct {
		args []string
		code int
		out  string
	}{
		{nil, exitOK, "no partition count stored yet"},
		{[]string{"set", "3"}, exitOK, "partitions 3 epoch 1"},
		{[]string{"set", "3"}, exitOK, "partitions 3 epoch 1"},
		{[]string{"set", "4"}, exitOK, "partitions 4 epoch 2"},
		{[]string{"show"}, exitOK, "partitions 4 epoch 2"},
		{[]string{"set", "0"}, exitUsage, "want a count of at least 1"},
		{[]string{"set"}, exitUsage, "usage"},
		{[]string{"grow"}, exitUsage, "usage"},
	} {
		code, out := call(env, c.args...)
		if code != c.code || !strings.Contains(out, c.out) {
			t.Errorf("api partitions %v: exit %d %q, want %d and %q", c.args, code, out, c.code, c.out)
		}
	}
	if code, out := call(func(string) string { return "" }, "show"); code != exitConfig || !strings.Contains(out, "DATABASE_URL is not set") {
		t.Errorf("without DATABASE_URL: exit %d %q", code, out)
	}
}
