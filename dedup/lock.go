package dedup

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

const lockName = "ckptfs.lock"

// lockDir takes an exclusive flock on dir/ckptfs.lock and writes our pid in
// it. It returns ErrLocked (wrapped, naming the owner) if another process
// holds it.
func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, lockName), os.O_RDWR|os.O_CREATE, 0600)
	if err != nil {
		return nil, fmt.Errorf("open lock: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("store %s: %w (%s)", dir, ErrLocked, describeOwner(dir))
		}
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return f, nil
}

// lockOwner returns the pid recorded in the lock file, or 0.
func lockOwner(dir string) int {
	b, err := os.ReadFile(filepath.Join(dir, lockName))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

// describeOwner names the process holding the store: "pid N (comm)".
func describeOwner(dir string) string {
	pid := lockOwner(dir)
	if pid == 0 {
		return "owner unknown"
	}
	s := fmt.Sprintf("pid %d", pid)
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil && len(b) > 0 {
		s += " (" + strings.TrimSpace(strings.ReplaceAll(string(b), "\x00", " ")) + ")"
	}
	return s
}
