// Package testutil holds the small pieces the throwaway test servers
// (pgtest, redistest, s3test, azuritetest) and the e2e tests share: a free loopback port and a
// buffer a server process writes its output to while a test reads it.
package testutil

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
)

// FreePort returns a loopback port free a moment ago, below the kernel's
// ephemeral range, so that a process can listen on it again after a restart:
// a port from the ephemeral range (what listening on port 0 gives) can be
// taken meanwhile as the local end of any outgoing connection on the
// machine, and the restarted process then fails with "address already in
// use" (an e2e power-cut test did, once).
func FreePort() (int, error) {
	lo := ephemeralLow()
	var last error
	for range 100 {
		port := minPort + rand.IntN(lo-minPort)
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			last = err
			continue
		}
		ln.Close()
		return port, nil
	}
	return 0, fmt.Errorf("find a free port below %d: %w", lo, last)
}

// minPort is the lowest port FreePort returns, above the usual services'.
const minPort = 10000

// ephemeralLow is the first port of the kernel's ephemeral range
// (/proc/sys/net/ipv4/ip_local_port_range), or Linux's default 32768.
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 32768
	}
	lo, err := strconv.Atoi(f[0])
	if err != nil || lo <= minPort+1000 {
		return 32768
	}
	return lo
}

// LockedBuffer is a bytes.Buffer safe for one writer (a process's output)
// and concurrent readers. The zero value is ready to use.
type LockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *LockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *LockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
