//go:build unix

package api

import (
	"fmt"
	"syscall"
)

// checkDisk fails when dir is not a writable directory or its file system
// has less than min bytes available.
func checkDisk(dir string, min uint64) error {
	if err := syscall.Access(dir, 2 /* W_OK */); err != nil {
		return fmt.Errorf("data directory %s is not writable: %w", dir, err)
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return fmt.Errorf("statfs %s: %w", dir, err)
	}
	if free := uint64(st.Bavail) * uint64(st.Bsize); free < min {
		return fmt.Errorf("%w: %d bytes free in %s", errNoRoom, free, dir)
	}
	return nil
}
