package restorer

import (
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/image"
)

// fifoPath returns the path of the named FIFO that pipe object o is (its
// fds' path is a file name, not "pipe:[ino]"), or "" for an anonymous
// pipe. A FIFO unlinked since it was opened is restored as a pipe.
func fifoPath(c *image.Checkpoint, o *image.Object) string {
	for _, f := range objectUsers(c, o.ID) {
		if strings.HasPrefix(f.Path, "/") && !f.Deleted {
			return f.Path
		}
	}
	return ""
}

// fifo opens the named FIFO at path for reading and writing (which does
// not wait for a peer) and puts the bytes in flight back in it. The fd
// serves as both ends: fds of the FIFO are reopened from it with their own
// flags, and it holds the FIFO's buffer until they are installed.
func (fs *files) fifo(o *image.Object, path string) ([2]int, error) {
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return [2]int{}, fmt.Errorf("named FIFO %s: %w", path, err)
	}
	fs.keep(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return [2]int{}, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFIFO {
		return [2]int{}, fmt.Errorf("%s is no longer a named FIFO", path)
	}
	if n, err := unix.IoctlGetInt(fd, unix.TIOCINQ); err == nil && n > 0 {
		return [2]int{}, fmt.Errorf("named FIFO %s already holds %d bytes (is it open elsewhere?)", path, n)
	}
	if capa, err := strconv.Atoi(o.InfoValue("capacity")); err == nil && capa > 0 {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETPIPE_SZ, capa); err != nil {
			return [2]int{}, fmt.Errorf("named FIFO %s: set capacity %d: %w", path, capa, err)
		}
	}
	for data := o.Data; len(data) > 0; {
		n, err := unix.Write(fd, data)
		if err != nil {
			return [2]int{}, fmt.Errorf("named FIFO %s: refill %d bytes: %w", path, len(o.Data), err)
		}
		data = data[n:]
	}
	fs.objs[o.ID+"/r"], fs.objs[o.ID+"/w"] = fd, fd
	return [2]int{fd, fd}, nil
}
