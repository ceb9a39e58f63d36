package restorer

import (
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/image"
)

// pipeKind is a pipe or named FIFO (object pipe-<ino>): made once with
// its capacity and bytes in flight, then every fd is reopened from it with
// its own flags; a named FIFO is opened by its path instead (fifo).
type pipeKind struct{ kindBase }

// check: a pipe with one end outside the checkpoint (a pipe inherited
// from the shell, a jobserver pipe whose other end the tree closed) is
// recreated with no peer: the restorer's own copy of the missing end is
// closed once the tree runs, so a reader sees the bytes in flight and then
// EOF, and a writer EPIPE, as if the peer had exited. A named FIFO is
// reopened by its path (others may open it by name). restore --inherit-fd
// hands in a pipe of the user's instead (inheritfd.go).
func (pipeKind) check(*image.Checkpoint, *image.Task, *image.FD) error { return nil }

func (pipeKind) checksTreeOnly() {} // refusals.go

func (pipeKind) open(fs *files, c *image.Checkpoint, _ *image.Task, f *image.FD) (int, error) {
	o := c.Object(f.Object)
	ends, err := fs.pipe(c, o)
	if err != nil {
		return -1, err
	}
	base := ends[1]
	if f.Flags&unix.O_ACCMODE == unix.O_RDONLY {
		base = ends[0]
	}
	return fs.reopen(o, base, f, false)
}

// pipe creates the pipe of object o with its capacity and bytes in flight.
func (fs *files) pipe(c *image.Checkpoint, o *image.Object) ([2]int, error) {
	if r, ok := fs.objs[o.ID+"/r"]; ok {
		return [2]int{r, fs.objs[o.ID+"/w"]}, nil
	}
	if path, t := fifoPath(c, o); path != "" {
		return fs.fifo(c, t, o, path)
	}
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return p, fmt.Errorf("pipe %s: %w", o.ID, err)
	}
	fs.keep(p[0])
	fs.keep(p[1])
	pi, err := image.ParsePipe(o, false)
	if err != nil {
		return p, err
	}
	if capa := pi.Capacity; capa > 0 {
		if _, err := unix.FcntlInt(uintptr(p[1]), unix.F_SETPIPE_SZ, capa); err != nil {
			return p, fmt.Errorf("pipe %s: set capacity %d: %w", o.ID, capa, err)
		}
	}
	for data := o.Data; len(data) > 0; {
		n, err := unix.Write(p[1], data)
		if err != nil {
			return p, fmt.Errorf("pipe %s: refill %d bytes: %w", o.ID, len(o.Data), err)
		}
		data = data[n:]
	}
	fs.objs[o.ID+"/r"], fs.objs[o.ID+"/w"] = p[0], p[1]
	return p, nil
}

// fifoPath returns the path of the named FIFO that pipe object o is (its
// fds' path is a file name, not "pipe:[ino]") and the task of the first fd
// that has it, or "" for an anonymous pipe. A FIFO unlinked since it was
// opened is restored as a pipe.
func fifoPath(c *image.Checkpoint, o *image.Object) (string, *image.Task) {
	for _, t := range c.Tasks {
		for _, f := range t.FDs {
			if f.Object == o.ID && strings.HasPrefix(f.Path, "/") && !f.Deleted {
				return f.Path, t
			}
		}
	}
	return "", nil
}

// fifo opens the named FIFO at path for reading and writing (which does
// not wait for a peer) and puts the bytes in flight back in it. The path is
// resolved as task t (O_PATH) and every fd of the FIFO is checked against
// its own task's credentials (read, write or both, as it was open) before
// that resolved inode is opened. The fd serves as both ends: fds of the
// FIFO are reopened from it with their own flags, and it holds the FIFO's
// buffer until they are installed.
func (fs *files) fifo(c *image.Checkpoint, t *image.Task, o *image.Object, path string) ([2]int, error) {
	opath, err := fs.openAs(t, path, unix.O_PATH, 0)
	if err != nil {
		return [2]int{}, fmt.Errorf("named FIFO: %w", err)
	}
	defer unix.Close(opath)
	if err := isType(opath, unix.S_IFIFO); err != nil {
		return [2]int{}, fmt.Errorf("named FIFO %s: %w", path, err)
	}
	for _, u := range c.Tasks {
		for _, f := range u.FDs {
			if f.Object != o.ID {
				continue
			}
			if err := fs.creds.as(u, func() error { return mayOpen(opath, f.Flags) }); err != nil {
				return [2]int{}, fmt.Errorf("task %d fd %d: named FIFO %s as uid %d: %w", u.PID, f.Num, path, u.Creds.UID[3], err)
			}
		}
	}
	fd, err := unix.Open("/proc/self/fd/"+strconv.Itoa(opath), unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
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
	pi, err := image.ParsePipe(o, false)
	if err != nil {
		return [2]int{}, err
	}
	if capa := pi.Capacity; capa > 0 {
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

// isType checks that O_PATH fd opath is a file of type typ (S_IFIFO,
// S_IFREG): nothing else is opened through it.
func isType(opath int, typ uint32) error {
	var st unix.Stat_t
	if err := unix.Fstat(opath, &st); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT != typ {
		return fmt.Errorf("not a %s but file type %#o", map[uint32]string{unix.S_IFIFO: "FIFO", unix.S_IFREG: "regular file"}[typ], st.Mode&unix.S_IFMT)
	}
	return nil
}

// mayOpen checks, with the calling thread's credentials, that the file of
// O_PATH fd opath may be opened with the access mode of flags.
func mayOpen(opath int, flags uint32) error {
	mode := uint32(unix.R_OK)
	switch flags & unix.O_ACCMODE {
	case unix.O_WRONLY:
		mode = unix.W_OK
	case unix.O_RDWR:
		mode = unix.R_OK | unix.W_OK
	}
	return unix.Faccessat2(opath, "", mode, unix.AT_EACCESS|unix.AT_EMPTY_PATH)
}
