package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

const dlqUsage = `usage: edge dlq list    [-admin URL] [-token T] [-partition N] [-limit N] [-cursor C]
       edge dlq replay  ID [-admin URL] [-token T]
       edge dlq discard ID [-admin URL] [-token T]

Dead letters of a running edge, through its admin API (flags may come before
or after the ID). list prints the API's JSON; replay re-queues the dead letter
(ordering rules apply) and discard deletes it, each saying what it did.
-admin defaults to http://127.0.0.1:8686, -token to $EDGE_ADMIN_TOKEN.
Exit 0 done, 1 the edge refused or could not be reached, 2 usage error.
`

// cmdDLQ is `edge dlq list|replay|discard`: the dead letters through the
// admin API of a running edge.
func cmdDLQ(args []string) int { return runDLQ(args, os.Stdout, os.Stderr) }

// runDLQ is cmdDLQ with its output streams.
func runDLQ(args []string, stdout, stderr io.Writer) int {
	if len(args) < 1 {
		fmt.Fprint(stderr, dlqUsage)
		return 2
	}
	sub := args[0]
	switch sub {
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, dlqUsage)
		return 0
	case "list", "replay", "discard":
	default:
		fmt.Fprintf(stderr, "edge dlq: unknown subcommand %q\n\n%s", sub, dlqUsage)
		return 2
	}
	fs := flag.NewFlagSet("dlq "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, dlqUsage) }
	admin := fs.String("admin", "http://127.0.0.1:8686", "admin listener URL of the edge")
	token := fs.String("token", os.Getenv("EDGE_ADMIN_TOKEN"), "admin bearer token (default $EDGE_ADMIN_TOKEN)")
	part := fs.Int("partition", -1, "list: only this partition")
	limit := fs.Int("limit", 100, "list: at most this many")
	cursor := fs.String("cursor", "", "list: continue after this cursor")
	// Flags may follow the ID: parse, take a positional, parse the rest.
	var pos []string
	rest := args[1:]
	for {
		if err := fs.Parse(rest); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return 0
			}
			return 2
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		rest = fs.Args()[1:]
	}
	base := strings.TrimRight(*admin, "/") + "/edge/v1/dead-letters"
	var method, target, id string
	switch sub {
	case "list":
		if len(pos) > 0 {
			fmt.Fprintf(stderr, "edge dlq list: takes no arguments, got %q\n", pos)
			return 2
		}
		q := url.Values{"limit": {fmt.Sprint(*limit)}}
		if *part >= 0 {
			q.Set("partition", fmt.Sprint(*part))
		}
		if *cursor != "" {
			q.Set("cursor", *cursor)
		}
		method, target = http.MethodGet, base+"?"+q.Encode()
	case "replay", "discard":
		if len(pos) != 1 {
			fmt.Fprintf(stderr, "edge dlq %s: needs exactly one dead letter id, got %d %q\n\n%s", sub, len(pos), pos, dlqUsage)
			return 2
		}
		id = pos[0]
		method, target = http.MethodPost, base+"/"+url.PathEscape(id)+"/replay"
		if sub == "discard" {
			method, target = http.MethodDelete, base+"/"+url.PathEscape(id)
		}
	}
	if _, err := url.ParseRequestURI(target); err != nil || !strings.HasPrefix(*admin, "http") {
		fmt.Fprintf(stderr, "edge dlq %s: -admin %q is not an http(s) URL\n", sub, *admin)
		return 2
	}
	req, err := http.NewRequest(method, target, nil)
	if err != nil {
		fmt.Fprintf(stderr, "edge dlq %s: %v\n", sub, err)
		return 2
	}
	if *token != "" {
		req.Header.Set("Authorization", "Bearer "+*token)
	}
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		fmt.Fprintf(stderr, "edge dlq %s: cannot reach the edge's admin listener: %v\n", sub, err)
		return 1
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if resp.StatusCode >= 300 {
		detail := strings.TrimSpace(string(body))
		var p struct {
			Detail string `json:"detail"`
		}
		if json.Unmarshal(body, &p) == nil && p.Detail != "" {
			detail = p.Detail
		}
		hint := ""
		if resp.StatusCode == http.StatusUnauthorized {
			hint = " (pass the admin token with -token or $EDGE_ADMIN_TOKEN)"
		}
		fmt.Fprintf(stderr, "edge dlq %s: %s: %s%s\n", sub, resp.Status, detail, hint)
		return 1
	}
	switch sub {
	case "list":
		stdout.Write(body)
		if len(body) > 0 && body[len(body)-1] != '\n' {
			fmt.Fprintln(stdout)
		}
	case "replay":
		var r struct {
			DeliveryID string `json:"delivery_id"`
			Status     string `json:"status"`
			Partition  int    `json:"partition"`
		}
		_ = json.Unmarshal(body, &r)
		fmt.Fprintf(stdout, "replayed dead letter %s: %s again on partition %d (follow it: GET /edge/v1/deliveries/%s)\n",
			id, r.Status, r.Partition, r.DeliveryID)
	case "discard":
		fmt.Fprintf(stdout, "discarded dead letter %s\n", id)
	}
	return 0
}
