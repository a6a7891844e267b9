// Package azuritetest runs throwaway Azurite blob servers (Microsoft's Azure
// Storage emulator, from npm) for tests of the Azure driver: `make
// test-servers` installs it into ./bin when npm is there. Each server
// listens on a free loopback port with its files in a temp dir and is
// stopped by t.Cleanup. Azurite is optional: without it the tests skip.
package azuritetest

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
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

	proc *testutil.Process
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
	s := &Server{Endpoint: fmt.Sprintf("http://127.0.0.1:%d/%s", port, Account)}
	s.proc, err = testutil.StartProcess("azurite", cmd, 30*time.Second, func(context.Context) bool {
		resp, err := http.Get(s.Endpoint + "?comp=list")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return true
	})
	if err != nil {
		t.Fatalf("azuritetest: %v", err)
	}
	t.Cleanup(s.Stop)
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
func (s *Server) Stop() { s.proc.Stop() }

// binary is ./bin/azurite-blob of the repository, else azurite-blob on
// PATH, else "".
func binary() string {
	if root, err := testutil.RepoRoot(); err == nil {
		if p := filepath.Join(root, "bin", "azurite-blob"); fileExists(p) {
			return p
		}
	}
	if p, err := exec.LookPath("azurite-blob"); err == nil {
		return p
	}
	return ""
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
