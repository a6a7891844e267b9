// Package testutil holds the small pieces the throwaway test servers
// (pgtest, redistest, s3test, azuritetest) share: a free loopback port and a
// buffer a server process writes its output to while a test reads it.
package testutil

import (
	"bytes"
	"fmt"
	"net"
	"sync"
)

// FreePort asks the kernel for a free loopback port.
func FreePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
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
