package dedup

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

const lockName = "ckptfs.lock"

// lockDir takes an exclusive flock on dir/ckptfs.lock and writes our pid in
// it. It returns ErrLocked (wrapped, naming the owner) if another process
// holds it. A lock taken on a file that was meanwhile removed or replaced
// (a failed first dump removing the store it created) is not the store's
// lock: it is taken again on the file now at the path.
func lockDir(dir string) (*os.File, error) {
	for {
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
		if !samePath(f, filepath.Join(dir, lockName)) {
			f.Close()
			continue
		}
		if err := f.Truncate(0); err == nil {
			f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
		}
		return f, nil
	}
}

// samePath reports whether f is still the file at path.
func samePath(f *os.File, path string) bool {
	var a, b unix.Stat_t
	if unix.Fstat(int(f.Fd()), &a) != nil || unix.Stat(path, &b) != nil {
		return false
	}
	return a.Dev == b.Dev && a.Ino == b.Ino
}

// WaitNotice is how long WaitRepo waits before it says that it waits.
var WaitNotice = 2 * time.Second

// WaitRepo is OpenRepo for a command that must not fail because another
// one is busy with the store (concurrent dumps into one store with no
// mount running): while the store is locked by a process that does not
// serve it, it waits its turn, telling notice once, with the owner, when
// the wait has lasted WaitNotice. It gives up only when ctx is done.
func WaitRepo(ctx context.Context, dir string, notice func(owner string)) (Repo, error) {
	start := time.Now()
	told := false
	for {
		r, err := tryRepo(dir)
		if !errors.Is(err, errBusy) {
			return r, err
		}
		if !told && notice != nil && time.Since(start) >= WaitNotice {
			told = true
			notice(describeOwner(dir))
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("store %s: gave up waiting for %s: %w", dir, describeOwner(dir), ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
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

// CloseAndRemove closes repo, the store in dir that the caller created for
// a first dump that failed, and removes the store unless another command
// opened it meanwhile (a dump that waited its turn): the directory is
// listed right after the close and again under the store's lock, and only
// an untouched store is removed. A command that waits for the lock then
// creates a fresh store (lockDir sees the lock file replaced).
func CloseAndRemove(repo Repo, dir string) error {
	repo.Close()
	before, err := dirState(dir)
	if err != nil {
		return err
	}
	lock, err := lockDir(dir)
	if err != nil {
		return err // held by another command: the store is theirs now
	}
	defer lock.Close()
	after, err := dirState(dir)
	if err != nil {
		return err
	}
	if after != before {
		return fmt.Errorf("store %s: opened by another command meanwhile, kept", dir)
	}
	aside := dir + ".removing-" + strconv.Itoa(os.Getpid())
	if err := os.Rename(dir, aside); err != nil {
		return fmt.Errorf("remove store %s: %w", dir, err)
	}
	return os.RemoveAll(aside)
}

// dirState describes the files of dir other than the lock: names, sizes,
// modification times.
func dirState(dir string) (string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	for _, e := range ents {
		if e.Name() == lockName {
			continue
		}
		info, err := e.Info()
		if err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "%s %d %d\n", e.Name(), info.Size(), info.ModTime().UnixNano())
	}
	return b.String(), nil
}
