package image

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"

	"golang.org/x/sys/unix"
)

// Tree files are opened without following them anywhere: a copy of a tree
// is untrusted input, and a symlink, FIFO or device in place of a file must
// give an error, not another file's contents or a hang.

// OpenTreeFile opens a regular file of a checkpoint tree for reading (say a
// vma's pages, image.PagesPath): O_NOFOLLOW and O_NONBLOCK, then fstat; a
// symlink, FIFO, device, socket or directory is an error naming path.
func OpenTreeFile(path string) (*os.File, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, treeOpenErr(path, err)
	}
	return regularFile(fd, path)
}

// regularFile checks that fd is a regular file, makes it blocking again and
// wraps it; it closes fd on error.
func regularFile(fd int, path string) (*os.File, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("checkpoint file %s: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		return nil, fmt.Errorf("checkpoint file %s is %s, not a regular file", path, fileType(st.Mode))
	}
	if err := unix.SetNonblock(fd, false); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("checkpoint file %s: %w", path, err)
	}
	return os.NewFile(uintptr(fd), path), nil
}

func treeOpenErr(path string, err error) error {
	if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.EXDEV) {
		return fmt.Errorf("checkpoint file %s: is or passes through a symlink, which a tree file may not: %w", path, err)
	}
	return fmt.Errorf("checkpoint file %s: %w", path, &os.PathError{Op: "open", Path: path, Err: err})
}

func fileType(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFIFO:
		return "a FIFO"
	case unix.S_IFCHR:
		return "a character device"
	case unix.S_IFBLK:
		return "a block device"
	case unix.S_IFSOCK:
		return "a socket"
	case unix.S_IFDIR:
		return "a directory"
	case unix.S_IFLNK:
		return "a symlink"
	case unix.S_IFREG:
		return "a regular file"
	}
	return fmt.Sprintf("of type %#o", mode&unix.S_IFMT)
}

// treeRoot resolves paths below one tree directory with openat2: never
// above it, never through a symlink (RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS).
type treeRoot struct {
	dir string // as given, for errors
	fd  int
}

const treeResolve = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS

func openTreeRoot(dir string) (*treeRoot, error) {
	// The directory itself may be a symlink (MNT/latest, by-name/x): the
	// caller named it.
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("checkpoint %s: %w", dir, &os.PathError{Op: "open", Path: dir, Err: err})
	}
	return &treeRoot{dir: dir, fd: fd}, nil
}

func (r *treeRoot) close() { unix.Close(r.fd) }

func (r *treeRoot) path(rel string) string { return filepath.Join(r.dir, rel) }

func (r *treeRoot) openat(rel string, flags uint64) (int, error) {
	for {
		fd, err := unix.Openat2(r.fd, rel, &unix.OpenHow{Flags: flags | unix.O_CLOEXEC, Resolve: treeResolve})
		if err == unix.EINTR || err == unix.EAGAIN { // EAGAIN: a rename raced the lookup
			continue
		}
		if err != nil {
			return -1, treeOpenErr(r.path(rel), err)
		}
		return fd, nil
	}
}

// readFile reads the regular file rel.
func (r *treeRoot) readFile(rel string) ([]byte, error) {
	fd, err := r.openat(rel, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK)
	if err != nil {
		return nil, err
	}
	f, err := regularFile(fd, r.path(rel))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		return nil, fmt.Errorf("checkpoint file %s: %w", r.path(rel), err)
	}
	return b, nil
}

// lstat returns the file type of rel (S_IFREG, S_IFLNK, ...), or 0 if rel
// does not exist.
func (r *treeRoot) lstat(rel string) (uint32, error) {
	fd, err := r.openat(rel, unix.O_PATH|unix.O_NOFOLLOW)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return 0, nil
		}
		return 0, err
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return 0, fmt.Errorf("checkpoint file %s: %w", r.path(rel), err)
	}
	return st.Mode & unix.S_IFMT, nil
}

// readlink reads the symlink rel itself.
func (r *treeRoot) readlink(rel string) (string, error) {
	fd, err := r.openat(rel, unix.O_PATH|unix.O_NOFOLLOW)
	if err != nil {
		return "", err
	}
	defer unix.Close(fd)
	buf := make([]byte, unix.PathMax+1)
	n, err := unix.Readlinkat(fd, "", buf)
	if err != nil {
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
			return "", fmt.Errorf("checkpoint file %s is not a symlink", r.path(rel))
		}
		return "", fmt.Errorf("checkpoint file %s: %w", r.path(rel), err)
	}
	if n >= len(buf) {
		return "", fmt.Errorf("checkpoint file %s: symlink target longer than %d bytes", r.path(rel), unix.PathMax)
	}
	return string(buf[:n]), nil
}

// readDir lists the directory rel (no symlink to one).
func (r *treeRoot) readDir(rel string) ([]string, error) {
	fd, err := r.openat(rel, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), r.path(rel))
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("checkpoint dir %s: %w", r.path(rel), err)
	}
	sort.Strings(names)
	return names, nil
}
