package restorer

import (
	"errors"
	"fmt"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/image"
)

// deletedFileKind is a regular file deleted at dump time (object
// file-<ino>): made again with its contents, then every fd is reopened
// from it with its own flags, at its own offset.
type deletedFileKind struct{ kindBase }

func (deletedFileKind) open(fs *files, c *image.Checkpoint, _ *image.Task, f *image.FD) (int, error) {
	o := c.Object(f.Object)
	base, err := fs.deletedFile(c, o)
	if err != nil {
		return -1, err
	}
	return fs.reopen(o, base, f, true)
}

// deletedFile recreates a deleted file: at its old path, unlinked at once
// (so its fds read "<path> (deleted)" again), or as an O_TMPFILE in the
// same directory when the path is taken; either as the first task holding
// it, so only where that task could create a file, owned by it.
func (fs *files) deletedFile(c *image.Checkpoint, o *image.Object) (int, error) {
	if fd, ok := fs.objs[o.ID]; ok {
		return fd, nil
	}
	d, err := image.ParseDeletedFile(o, false)
	if err != nil {
		return -1, err
	}
	path, mode := d.Path, d.Mode
	t := objectHolder(c, o.ID)
	if t == nil {
		return -1, fmt.Errorf("deleted file %s: no fd holds it", o.ID)
	}
	mode &= 0o7777
	fd := -1
	err = fs.creds.as(t, func() error {
		var err error
		fd, err = openInRoot(t.Root, path, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL, mode)
		if err == nil {
			// The name it was created at: the thread's root is "/".
			unix.Unlink(path)
		} else if errors.Is(err, unix.EEXIST) {
			fd, err = openInRoot(t.Root, filepath.Dir(path), unix.O_RDWR|unix.O_TMPFILE, mode)
		}
		return err
	})
	if err != nil {
		return -1, fmt.Errorf("recreate deleted file %s as uid %d: %w", path, t.Creds.UID[3], err)
	}
	fs.keep(fd)
	for off := 0; off < len(o.Data); {
		n, err := unix.Pwrite(fd, o.Data[off:], int64(off))
		if err != nil {
			return -1, fmt.Errorf("recreate deleted file %s: %w", path, err)
		}
		off += n
	}
	fs.objs[o.ID] = fd
	return fd, nil
}
