package restorer

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/image"
)

// fileKind is a regular file or a directory, reopened by path as its task
// (preopen.go opens them all, and checks sizes, before any process is
// created), at its offset. A deleted file is an object (deletedFileKind).
type fileKind struct{ kindBase }

// check: the path must still be a path, canonical (opened, and its size
// checked, by preopen).
func (fileKind) check(_ *image.Checkpoint, _ *image.Task, f *image.FD) error {
	return checkPath(f)
}

func checkPath(f *image.FD) error {
	if f.Deleted {
		return fmt.Errorf("%s was deleted at dump time", f.Path)
	}
	return canonical(f.Path)
}

func (fileKind) inherit(*image.Checkpoint, int, *image.FD, map[int]string) bool { return false }
func (fileKind) preopens(*image.FD) bool                                        { return true }

func (fileKind) open(fs *files, _ *image.Checkpoint, t *image.Task, f *image.FD) (int, error) {
	fd, err := fs.openAs(t, f.Path, int(f.Flags&reopenMask)|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	fs.keep(fd)
	if f.Kind == image.FDFile && f.Pos != 0 && f.Flags&unix.O_PATH == 0 {
		if _, err := unix.Seek(fd, f.Pos, 0); err != nil {
			return -1, fmt.Errorf("seek %s: %w", f.Path, err)
		}
	}
	return fd, nil
}
