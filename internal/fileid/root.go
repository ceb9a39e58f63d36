package fileid

import (
	"errors"
	"fmt"
	"strings"

	"golang.org/x/sys/unix"
)

// InRoot says how to resolve absolute path for a process whose root
// directory is root, as a restore does: from a dirfd on root with
// RESOLVE_IN_ROOT if path is beneath it ("..", absolute symlinks stay
// inside), else from "/" (a file opened before the chroot). done closes
// the dirfd.
func InRoot(root, path string) (dirfd int, rel string, resolve uint64, done func(), err error) {
	if root == "" || root == "/" || (path != root && !strings.HasPrefix(path, root+"/")) {
		return unix.AT_FDCWD, path, 0, func() {}, nil
	}
	rel = strings.TrimPrefix(strings.TrimPrefix(path, root), "/")
	if rel == "" {
		rel = "."
	}
	rfd, err := Openat2(unix.AT_FDCWD, root, &unix.OpenHow{Flags: unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC, Resolve: unix.RESOLVE_NO_MAGICLINKS})
	if err != nil {
		return -1, "", 0, nil, fmt.Errorf("root %s: %w", root, err)
	}
	return rfd, rel, unix.RESOLVE_IN_ROOT, func() { unix.Close(rfd) }, nil
}

// OpenInRoot opens path (absolute) with openat2 and RESOLVE_NO_MAGICLINKS
// (a /proc/<pid>/fd link in the path would be the caller's), in root as
// InRoot says, with the calling thread's credentials: the open a restore
// makes of a task's file, on a thread with the task's (internal/fscreds).
func OpenInRoot(root, path string, flags int, mode uint32) (int, error) {
	dirfd, rel, resolve, done, err := InRoot(root, path)
	if err != nil {
		return -1, err
	}
	defer done()
	return Openat2(dirfd, rel, &unix.OpenHow{Flags: uint64(flags | unix.O_CLOEXEC), Mode: uint64(mode), Resolve: resolve | unix.RESOLVE_NO_MAGICLINKS})
}

// Openat2 retries the EAGAIN that RESOLVE_IN_ROOT gives when a rename
// raced with the lookup.
func Openat2(dirfd int, path string, how *unix.OpenHow) (int, error) {
	for i := 0; ; i++ {
		fd, err := unix.Openat2(dirfd, path, how)
		if !errors.Is(err, unix.EAGAIN) || i == 8 {
			return fd, err
		}
	}
}
