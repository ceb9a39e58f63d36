package restorer

import (
	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/image"
)

// chrKind is a character device, reopened by path as its task: a memory
// device (the dump refuses others), or a terminal, which checkTerminals
// refuses unless --shell-job puts it on the restorer's own (session.go).
type chrKind struct{ kindBase }

func (chrKind) check(_ *image.Checkpoint, _ *image.Task, f *image.FD) error { return checkPath(f) }

// inherit: a device is always reopened (a terminal: session.go).
func (chrKind) inherit(*image.Checkpoint, int, *image.FD, map[int]string) bool { return false }

// preopens: a device by path; a terminal is opened by session.go.
func (chrKind) preopens(f *image.FD) bool { return !isTTY(f.Path) }

func (chrKind) open(fs *files, _ *image.Checkpoint, t *image.Task, f *image.FD) (int, error) {
	fd, err := fs.openAs(t, f.Path, int(f.Flags&reopenMask)|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
	if err != nil {
		return -1, err
	}
	return fs.keep(fd), nil
}
