package main

import (
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// cmdDLQ is `edge dlq list|replay|discard`: the dead letters through the
// admin API of a running edge.
func cmdDLQ(args []string) int {
	usage := func() int {
		fmt.Fprintln(os.Stderr, `usage: edge dlq list    [-admin URL] [-token T] [-partition N] [-limit N] [-cursor C]
       edge dlq replay  [-admin URL] [-token T] ID
       edge dlq discard [-admin URL] [-token T] ID`)
		return 2
	}
	if len(args) < 1 {
		return usage()
	}
	sub := args[0]
	fs := flag.NewFlagSet("dlq "+sub, flag.ContinueOnError)
	admin := fs.String("admin", "http://127.0.0.1:8686", "admin listener URL of the edge")
	token := fs.String("token", os.Getenv("EDGE_ADMIN_TOKEN"), "admin bearer token (default $EDGE_ADMIN_TOKEN)")
	part := fs.Int("partition", -1, "list: only this partition")
	limit := fs.Int("limit", 100, "list: at most this many")
	cursor := fs.String("cursor", "", "list: continue after this cursor")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	base := strings.TrimRight(*admin, "/") + "/edge/v1/dead-letters"
	var method, target string
	switch sub {
	case "list":
		q := url.Values{"limit": {fmt.Sprint(*limit)}}
		if *part >= 0 {
			q.Set("partition", fmt.Sprint(*part))
		}
		if *cursor != "" {
			q.Set("cursor", *cursor)
		}
		method, target = http.MethodGet, base+"?"+q.Encode()
	case "replay", "discard":
		if fs.NArg() != 1 {
			return usage()
		}
		id := url.PathEscape(fs.Arg(0))
		method, target = http.MethodPost, base+"/"+id+"/replay"
		if sub == "discard" {
			method, target = http.MethodDelete, base+"/"+id
		}
	default:
		return usage()
	}
	req, err := http.NewRequest(method, target, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "edge dlq:", err)
		return 2
	}
	if *token != "" {
		req.Header.Set("Authorization", "Bearer "+*token)
	}
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		fmt.Fprintln(os.Stderr, "edge dlq:", err)
		return 1
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	os.Stdout.Write(body)
	if len(body) > 0 && body[len(body)-1] != '\n' {
		fmt.Println()
	}
	if resp.StatusCode >= 300 {
		fmt.Fprintf(os.Stderr, "edge dlq: %s\n", resp.Status)
		return 1
	}
	return 0
}
