// Package azuritetest runs throwaway Azurite blob servers (Microsoft's Azure
// Storage emulator, from npm) for tests of the Azure driver: `make
// test-servers` installs it into ./bin when npm is there. Each server
// listens on a free loopback port with its files in a temp dir and is
// stopped by t.Cleanup. Azurite is optional: without it the tests skip.
package azuritetest

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/flowedge/flowedge/internal/testutil"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
)

// The emulator's well-known development account.
const (
	Account = "devstoreaccount1"
	Key     = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

// Server is a running Azurite blob service.
type Server struct {
	// Endpoint is the account's blob service URL (AZURE_STORAGE_ENDPOINT).
	Endpoint string

	cmd  *exec.Cmd
	out  bytes.Buffer
	mu   sync.Mutex
	done chan struct{}
	once sync.Once
}

// Start runs Azurite with the given containers created, or skips t when it
// is not installed.
func Start(t testing.TB, containers ...string) *Server {
	t.Helper()
	bin := binary()
	if bin == "" {
		t.Skip("azuritetest: azurite-blob not installed (`make test-servers` installs it when npm is there)")
	}
	port, err := testutil.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--blobHost", "127.0.0.1", "--blobPort", strconv.Itoa(port),
		"--location", t.TempDir(), "--skipApiVersionCheck", "--loose", "--silent")
	s := &Server{Endpoint: fmt.Sprintf("http://127.0.0.1:%d/%s", port, Account), cmd: cmd, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = s, s
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("azuritetest: %v", err)
	}
	go func() { _ = cmd.Wait(); close(s.done) }()
	t.Cleanup(s.Stop)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if resp, err := http.Get(s.Endpoint + "?comp=list"); err == nil {
			resp.Body.Close()
			break
		}
		select {
		case <-s.done:
			t.Fatalf("azuritetest: azurite exited at start: %s", s.log())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("azuritetest: azurite did not answer within 30 s: %s", s.log())
		}
		time.Sleep(50 * time.Millisecond)
	}
	cred, err := azblob.NewSharedKeyCredential(Account, Key)
	if err != nil {
		t.Fatal(err)
	}
	client, err := azblob.NewClientWithSharedKeyCredential(s.Endpoint+"/", cred, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, c := range containers {
		if _, err := client.CreateContainer(ctx, c, nil); err != nil {
			t.Fatalf("azuritetest: create container %s: %v", c, err)
		}
	}
	return s
}

// Stop kills the server and waits for it; safe to call twice.
func (s *Server) Stop() {
	s.once.Do(func() {
		_ = s.cmd.Process.Kill()
		<-s.done
	})
}

func (s *Server) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.out.Write(p)
}

func (s *Server) log() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.out.String()
}

// binary is ./bin/azurite-blob of the repository, else azurite-blob on
// PATH, else "".
func binary() string {
	if dir, err := os.Getwd(); err == nil {
		for {
			if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
				p := filepath.Join(dir, "bin", "azurite-blob")
				if _, err := os.Stat(p); err == nil {
					return p
				}
				break
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				break
			}
			dir = parent
		}
	}
	if p, err := exec.LookPath("azurite-blob"); err == nil {
		return p
	}
	return ""
}
