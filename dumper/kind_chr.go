package dumper

import (
	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/image"
	"github.com/ckptfs/ckptfs/internal/proc"
)

// chrKind is a character device: a memory device or a terminal, reopened
// by path (a terminal only with restore --shell-job, restorer/session.go).
type chrKind struct{ noOps }

func (chrKind) fdKind() string                        { return image.FDChar }
func (chrKind) classifies(_ string, mode uint32) bool { return isType(mode, unix.S_IFCHR) }
func (chrKind) owns(*image.FD) bool                   { return true }

// collect: a pty slave whose master is in the checkpoint refers to the
// pair's object (kind_pty.go).
func (chrKind) collect(cc *collection, t *image.Task, f *image.FD) error {
	ptySlave(cc, t, f)
	return nil
}

// refuse refuses devices that are not reopened by path.
func (chrKind) refuse(pid int, f *image.FD) error {
	var st unix.Stat_t
	if err := unix.Stat(proc.FDPath(pid, f.Num), &st); err == nil && !restorableDevice(st.Rdev) {
		kind := "a device"
		if unix.Major(st.Rdev) == 5 && unix.Minor(st.Rdev) == 2 {
			kind = "a pty master opened by another path than /dev/ptmx or /dev/pts/ptmx (only those are recreated)"
		}
		return &ErrUnsupported{PID: pid, FD: f.Num, Kind: kind, What: f.Path}
	}
	return nil
}

// Character devices that are reopened by path on restore: the memory
// devices (null, zero, full, random, urandom) and terminals.
func restorableDevice(rdev uint64) bool {
	major, minor := unix.Major(rdev), unix.Minor(rdev)
	switch major {
	case 1:
		return minor == 3 || minor == 5 || minor == 7 || minor == 8 || minor == 9
	case 5: // /dev/tty, /dev/console; not /dev/ptmx (5:2): a pty master
		return minor != 2
	case 4, 136: // tty*, pts
		return true
	}
	return false
}
