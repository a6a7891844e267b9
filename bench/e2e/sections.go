package main

import (
	"encoding/json"
	"fmt"
	"log"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// child starts this binary in a server role and waits for its listener.
func (b *bench) child(name, role string, upstreams []string) (pid int, addr string) {
	addr = freeAddr()
	cmd := b.start(name, nil, b.self, "-role", role, "-listen", addr, "-upstreams", strings.Join(upstreams, ","))
	waitListen(addr)
	return cmd.Process.Pid, addr
}

// haproxy starts HAProxy hashing X-Process-ID (consistent) over backends.
func (b *bench) haproxy(name string, backends []string) (pid int, addr string) {
	addr = freeAddr()
	var servers strings.Builder
	for i, u := range backends {
		fmt.Fprintf(&servers, "  server b%d %s\n", i, strings.TrimPrefix(u, "http://"))
	}
	conf := fmt.Sprintf(`global
  nbthread 2
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  option http-keep-alive
  http-reuse always
frontend fe
  bind %s
  default_backend be
backend be
  balance hdr(X-Process-ID)
  hash-type consistent
%s`, addr, servers.String())
	path := filepath.Join(b.dir, name+".cfg")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		log.Fatal(err)
	}
	cmd := b.start(name, nil, "haproxy", "-db", "-f", path)
	waitListen(addr)
	return cmd.Process.Pid, addr
}

// nginx starts nginx (2 workers) hashing X-Process-ID (consistent).
func (b *bench) nginx(name string, backends []string) (pid int, addr string) {
	addr = freeAddr()
	dir := filepath.Join(b.dir, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		log.Fatal(err)
	}
	var servers strings.Builder
	for _, u := range backends {
		fmt.Fprintf(&servers, "    server %s;\n", strings.TrimPrefix(u, "http://"))
	}
	conf := fmt.Sprintf(`worker_processes 2;
daemon off;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path %[1]s/body;
  proxy_temp_path %[1]s/proxy;
  fastcgi_temp_path %[1]s/fastcgi;
  uwsgi_temp_path %[1]s/uwsgi;
  scgi_temp_path %[1]s/scgi;
  upstream be {
    hash $http_x_process_id consistent;
%[2]s    keepalive 128;
  }
  server {
    listen %[3]s;
    location / {
      proxy_pass http://be;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
`, dir, servers.String(), addr)
	path := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		log.Fatal(err)
	}
	cmd := b.start(name, nil, "nginx", "-p", dir, "-c", path)
	waitListen(addr)
	return cmd.Process.Pid, addr
}

// generic measures the fronts over plain Go backends answering 201.
func (b *bench) generic() string {
	var backends []string
	for i := range 3 {
		_, a := b.child(fmt.Sprintf("backend-%d", i), "backend", nil)
		backends = append(backends, "http://"+a)
	}
	var rows []row
	run := func(name, addr string, pid int) row {
		r := b.load(name, "http://"+addr, pid)
		rows = append(rows, r)
		return r
	}
	pid, a := b.child("plain", "plain", nil)
	plain := run("plain Go server answering 202", a, pid)
	pid, a = b.haproxy("haproxy-generic", backends)
	hap := run("HAProxy, balance hdr(X-Process-ID) consistent", a, pid)
	pid, a = b.nginx("nginx-generic", backends)
	run("nginx, hash $http_x_process_id consistent", a, pid)
	pid, a = b.child("reverseproxy", "proxy", backends)
	rp := run("httputil.ReverseProxy, 256 idle conns/host", a, pid)

	pid, pub, _ := b.startEdge("edge-accept", backends, "accept", "request", true)
	accept := run("edge, accept (delivering)", pub, pid)
	down := []string{"http://127.0.0.1:1", "http://127.0.0.1:1", "http://127.0.0.1:1"}
	pid, pub, _ = b.startEdge("edge-intake", down, "accept", "request", false)
	intake := run("edge, accept, backends down (intake only)", pub, pid)
	pid, pub, _ = b.startEdge("edge-relay", backends, "relay", "request", true)
	relay := run("edge, relay", pub, pid)
	pid, pub, _ = b.startEdgePipelined("edge-accept-pipe", backends, "accept", "request", 8, true)
	run("edge, accept, pipeline 8", pub, pid)
	pid, pub, _ = b.startEdgePipelined("edge-relay-pipe", backends, "relay", "request", 8, true)
	run("edge, relay, pipeline 8", pub, pid)
	b.stopAll()

	s := table("Generic backends (plain Go servers answering 201)", rows, false)
	s += fmt.Sprintf("\nintake only / plain 202 = **%.2f×** (target ≥ 0.6×); accept / HAProxy = **%.2f×** (target ≥ 0.5×); relay / ReverseProxy = **%.2f×** (target ≥ 1.2×, stretch 1.5×)\n",
		ratio(intake, plain), ratio(accept, hap), ratio(relay, rp))
	return s
}

// apiFlows starts three api-flow backends; partitions 1 makes each own
// every key, 3 makes them partitions 0..2 of 3.
func (b *bench) apiFlows(name string, partitions int) []string {
	var urls []string
	for n := range 3 {
		addr := freeAddr()
		part := n
		if partitions == 1 {
			part = 0
		}
		b.start(fmt.Sprintf("%s-api-%d", name, n), []string{"FLOW_BOOTSTRAP_KEY=" + benchKey}, b.api,
			"-listen", addr, "-metrics-listen", freeAddr(), "-partition", strconv.Itoa(part), "-partitions", strconv.Itoa(partitions),
			"-data-dir", filepath.Join(b.dir, fmt.Sprintf("%s-api-%d", name, n)),
			"-rate-limit-default", "100000000/s", "-rate-limit-posts", "100000000/s")
		urls = append(urls, "http://"+addr)
	}
	for _, u := range urls {
		waitHTTP(u + "/health/readiness")
	}
	return urls
}

// storedEvents counts the events stored at the backends.
func storedEvents(backends []string) int64 {
	var total int64
	client := &http.Client{Timeout: 30 * time.Second}
	for _, u := range backends {
		cursor := ""
		for {
			req, _ := http.NewRequest("GET", u+"/api/v1/processes?limit=1000&cursor="+url.QueryEscape(cursor), nil)
			req.Header.Set("Authorization", "Bearer "+benchKey)
			resp, err := client.Do(req)
			if err != nil {
				log.Printf("counting events at %s: %v", u, err)
				return -1
			}
			var page struct {
				Items []struct {
					Events int64 `json:"events"`
				} `json:"items"`
				NextCursor string `json:"next_cursor"`
			}
			err = json.NewDecoder(resp.Body).Decode(&page)
			resp.Body.Close()
			if err != nil {
				log.Printf("counting events at %s: %v", u, err)
				return -1
			}
			for _, p := range page.Items {
				total += p.Events
			}
			if page.NextCursor == "" {
				break
			}
			cursor = page.NextCursor
		}
	}
	return total
}

// stack measures the real stack: fronts in front of three api-flows.
func (b *bench) stack() string {
	var rows []row
	measure := func(name string, partitions int, front func(backends []string) (pid int, addr, admin string)) row {
		backends := b.apiFlows(fmt.Sprintf("stack%d", len(rows)), partitions) // fresh stores per run
		pid, addr, admin := front(backends)
		r := b.load(name, "http://"+addr, pid)
		if admin != "" {
			drain(admin)
		}
		r.stored = storedEvents(backends)
		log.Printf("%-52s acknowledged %d, stored %d", name, r.acked, r.stored)
		b.stopAll()
		rows = append(rows, r)
		return r
	}
	hap := measure("HAProxy hdr(X-Process-ID), api-flow -partitions 1", 1, func(bs []string) (int, string, string) {
		pid, a := b.haproxy("haproxy-stack", bs)
		return pid, a, ""
	})
	measure("nginx hash $http_x_process_id, api-flow -partitions 1", 1, func(bs []string) (int, string, string) {
		pid, a := b.nginx("nginx-stack", bs)
		return pid, a, ""
	})
	relay := measure("edge relay, batch, api-flow partitions 0..2 of 3", 3, func(bs []string) (int, string, string) {
		return b.startEdge("edge-stack-relay", bs, "relay", "batch", true)
	})
	accept := measure("edge accept, batch, api-flow partitions 0..2 of 3", 3, func(bs []string) (int, string, string) {
		return b.startEdge("edge-stack-accept", bs, "accept", "batch", true)
	})
	s := table("Real stack: 3 api-flow backends appending events", rows, true)
	s += fmt.Sprintf("\nedge relay / HAProxy = **%.2f×** (target ≥ 1.0×); edge accept / HAProxy = **%.2f×** (target ≥ 1.5×); every acknowledged event stored exactly once (stored − acknowledged ≤ connections, the requests wrk abandons at its end): %v\n",
		ratio(relay, hap), ratio(accept, hap), b.exactlyOnce(rows))
	return s
}

// exactlyOnce tells whether every run stored what it acknowledged, once
// (each request is a new process with one event). Requests still in flight
// when wrk stops are applied but not counted by wrk: at most one per
// connection.
func (b *bench) exactlyOnce(rows []row) bool {
	for _, r := range rows {
		if r.stored < r.acked || r.stored > r.acked+int64(b.conns) {
			return false
		}
	}
	return true
}
