package restorer

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/image"
)

// Mask bits a watch is added again with; IN_DONT_FOLLOW because the
// recorded path names the watched inode itself.
const inotifyMaskBits = unix.IN_ALL_EVENTS | unix.IN_ONESHOT | unix.IN_EXCL_UNLINK

// maxInotifyGap bounds the wd numbers skipped to give a watch its number
// (image.Refusal refuses a larger gap first, on both sides).
const maxInotifyGap = image.MaxInotifyGap

// inotifyKind is an inotify instance, made in the restorer with every
// watch at its wd, then installed.
type inotifyKind struct{ kindBase }

func (inotifyKind) check(_ *image.Checkpoint, _ *image.Task, f *image.FD) error {
	return checkInotify(f)
}

func (inotifyKind) open(fs *files, _ *image.Checkpoint, t *image.Task, f *image.FD) (int, error) {
	return fs.inotify(t, f)
}

// checkInotify checks, before anything is restored, that the watch lines
// of inotify fd f parse and every watched path exists.
func checkInotify(f *image.FD) error {
	ws, err := image.InotifyWatches(f)
	if err != nil {
		return err
	}
	for _, w := range ws {
		if _, err := os.Lstat(w.Path); err != nil {
			return fmt.Errorf("inotify watch %d: watched path %s: %w", w.WD, w.Path, pathErr(err))
		}
	}
	return nil
}

// inotify creates the inotify instance of f in the restorer, with every
// recorded watch at its recorded wd. The kernel hands out wds cyclically
// upward (idr_alloc_cyclic) and does not reuse a removed one until it
// wraps, so a gap before a wd is skipped by adding and removing a
// throw-away watch on a scratch directory once per missing number; the
// IN_IGNORED events those removals queue are read off before the fd is
// installed. Events that were pending at dump time are not restored.
func (fs *files) inotify(t *image.Task, f *image.FD) (int, error) {
	if err := checkInotify(f); err != nil {
		return -1, err
	}
	ws, err := image.InotifyWatches(f)
	if err != nil {
		return -1, err
	}
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return -1, fmt.Errorf("inotify_init1: %w", err)
	}
	fs.keep(fd)
	scratch := ""
	defer func() {
		if scratch != "" {
			os.Remove(scratch)
		}
	}()
	next := 1 // the wd the kernel hands out next in a new instance
	for _, w := range ws {
		if w.WD-next > maxInotifyGap {
			return -1, fmt.Errorf("inotify watch %d: gap of %d wds is too large to skip", w.WD, w.WD-next)
		}
		for next < w.WD {
			if scratch == "" {
				if scratch, err = os.MkdirTemp("", "ckptfs-inotify-"); err != nil {
					return -1, err
				}
			}
			tmp, err := unix.InotifyAddWatch(fd, scratch, unix.IN_ATTRIB)
			if err != nil {
				return -1, fmt.Errorf("inotify: skip wd %d: %w", next, err)
			}
			if _, err := unix.InotifyRmWatch(fd, uint32(tmp)); err != nil {
				return -1, fmt.Errorf("inotify: skip wd %d: %w", next, err)
			}
			if tmp != next {
				return -1, fmt.Errorf("inotify: skipping wd %d gave wd %d", next, tmp)
			}
			next++
			if (next-1)%1024 == 0 {
				if err := drainInotify(fd); err != nil {
					return -1, err
				}
			}
		}
		// As the task: a watch needs read permission on what it watches.
		var got int
		err := fs.creds.as(t, func() error {
			var err error
			got, err = unix.InotifyAddWatch(fd, w.Path, w.Mask&inotifyMaskBits|unix.IN_DONT_FOLLOW)
			return err
		})
		if err != nil {
			return -1, fmt.Errorf("inotify watch %d on %s as uid %d: %w", w.WD, w.Path, t.Creds.UID[3], err)
		}
		if got != w.WD {
			return -1, fmt.Errorf("inotify watch on %s got wd %d, want %d", w.Path, got, w.WD)
		}
		next = got + 1
	}
	if scratch != "" {
		os.Remove(scratch)
		scratch = ""
	}
	if err := drainInotify(fd); err != nil {
		return -1, err
	}
	if err := setStatusFlags(fd, f.Flags); err != nil {
		return -1, fmt.Errorf("inotify flags: %w", err)
	}
	return fd, nil
}

// drainInotify reads the queued events of a non-blocking inotify fd.
func drainInotify(fd int) error {
	buf := make([]byte, 64<<10)
	for {
		_, err := unix.Read(fd, buf)
		if errors.Is(err, unix.EAGAIN) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("inotify: read skipped watches' events: %w", err)
		}
	}
}
