//go:build !unix

package api

import (
	"fmt"
	"os"
)

// checkDisk fails when dir is not a directory (free space is not checked
// on this platform).
func checkDisk(dir string, _ uint64) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", dir)
	}
	return nil
}
