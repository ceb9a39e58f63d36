package restorer

import (
	"errors"
	"fmt"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/image"
)

// files holds the restorer's own open files that restored fds become: each
// open file description is opened (or created: pipes, socket pairs, deleted
// files) once here, then installed in every task and at every number that
// had it with an injected pidfd_getfd, so fds that shared an offset or a
// pipe share it again.
type files struct {
	byKey  map[string]int // fd key -> restorer fd
	objs   map[string]int // object id (or "id/end") -> restorer fd
	mapped map[string]int // mapped file (mapKey) -> restorer fd
	exes   map[int]int    // task pid -> restorer fd on its executable
	cwds   map[int]int    // task pid -> restorer O_PATH fd on its cwd
	own    map[int]string // the restorer's fds at start (ownFDs)
	open   []int          // fds to close when done
	creds  credThreads    // threads with the tasks' credentials (taskcreds.go)
}

func newFiles(own map[int]string) *files {
	return &files{byKey: map[string]int{}, objs: map[string]int{}, mapped: map[string]int{},
		exes: map[int]int{}, cwds: map[int]int{}, own: own, creds: credThreads{}}
}

func (fs *files) close() {
	for _, fd := range fs.open {
		unix.Close(fd)
	}
	fs.open = nil
	fs.creds.close()
}

func (fs *files) keep(fd int) int {
	fs.open = append(fs.open, fd)
	return fd
}

// fdKey names the open file description of fd f of task pid.
func fdKey(pid int, f *image.FD) string {
	if f.OFD != "" {
		return f.OFD
	}
	return strconv.Itoa(pid) + "/" + strconv.Itoa(f.Num)
}

// installedKind reports fds installed from a restorer file (the others,
// eventfd, epoll, timerfd, signalfd, are created inside the task).
func installedKind(f *image.FD) bool {
	switch f.Kind {
	case image.FDEventfd, image.FDEpoll, image.FDTimerfd, image.FDSignalfd:
		return false
	}
	return true
}

// source returns the restorer fd that fd f of task t becomes.
func (fs *files) source(c *image.Checkpoint, t *image.Task, f *image.FD) (int, error) {
	if inheritFD(c, t.PID, f, fs.own) {
		return f.Num, nil
	}
	key := fdKey(t.PID, f)
	if fd, ok := fs.byKey[key]; ok {
		return fd, nil
	}
	fd, err := fs.openFD(c, t, f)
	if err != nil {
		return -1, err
	}
	fs.byKey[key] = fd
	return fd, nil
}

const reopenMask = ^uint32(unix.O_CREAT | unix.O_EXCL | unix.O_TRUNC | unix.O_CLOEXEC)

// openFD opens (or creates) the file of fd f of task t, with t's
// credentials where it goes by a path.
func (fs *files) openFD(c *image.Checkpoint, t *image.Task, f *image.FD) (int, error) {
	flags := int(f.Flags&reopenMask) | unix.O_CLOEXEC
	switch {
	case f.Object != "":
		o := c.Object(f.Object)
		if o == nil {
			return -1, fmt.Errorf("object %s is not in the checkpoint", f.Object)
		}
		return fs.openObject(c, o, f)
	case f.Kind == image.FDInotify:
		return fs.inotify(t, f)
	case f.Kind == image.FDFile || f.Kind == image.FDDir || f.Kind == image.FDChar:
		if f.Kind == image.FDChar {
			flags |= unix.O_NOCTTY
		}
		fd, err := fs.openAs(t, f.Path, flags, 0)
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
	return -1, fmt.Errorf("cannot restore this kind of fd")
}

// openObject returns a restorer fd on object o with f's access mode and
// status flags, creating the object on first use.
func (fs *files) openObject(c *image.Checkpoint, o *image.Object, f *image.FD) (int, error) {
	var base int
	switch o.Kind {
	case image.ObjPipe:
		ends, err := fs.pipe(c, o)
		if err != nil {
			return -1, err
		}
		base = ends[1]
		if f.Flags&unix.O_ACCMODE == unix.O_RDONLY {
			base = ends[0]
		}
	case image.ObjUnixSocket:
		fd, err := fs.socket(c, o)
		if err != nil {
			return -1, err
		}
		base = fd
	case image.ObjDeletedFile:
		fd, err := fs.deletedFile(c, o)
		if err != nil {
			return -1, err
		}
		base = fd
	case image.ObjMemfd:
		fd, err := fs.memfd(c, o) // shmem.go
		if err != nil {
			return -1, err
		}
		base = fd
	default:
		return -1, fmt.Errorf("object %s of unknown kind %q", o.ID, o.Kind)
	}
	if o.Kind == image.ObjUnixSocket {
		// A socket has one file: flags are set on it.
		if err := setStatusFlags(base, f.Flags); err != nil {
			return -1, err
		}
		return base, nil
	}
	// Another open file description of the same object, with f's flags.
	fd, err := unix.Open("/proc/self/fd/"+strconv.Itoa(base), int(f.Flags&reopenMask)|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("reopen %s: %w", o.ID, err)
	}
	fs.keep(fd)
	if (o.Kind == image.ObjDeletedFile || o.Kind == image.ObjMemfd) && f.Pos != 0 {
		if _, err := unix.Seek(fd, f.Pos, 0); err != nil {
			return -1, err
		}
	}
	return fd, nil
}

func setStatusFlags(fd int, flags uint32) error {
	_, err := unix.FcntlInt(uintptr(fd), unix.F_SETFL, int(flags&(unix.O_NONBLOCK|unix.O_APPEND|unix.O_ASYNC)))
	return err
}

// objectHolder returns the first task (in checkpoint order) with an fd on
// object id: the object is created with its credentials.
func objectHolder(c *image.Checkpoint, id string) *image.Task {
	for _, t := range c.Tasks {
		for _, f := range t.FDs {
			if f.Object == id {
				return t
			}
		}
	}
	return nil
}

// objectUsers returns the fds (any task) that refer to object id.
func objectUsers(c *image.Checkpoint, id string) []*image.FD {
	var out []*image.FD
	for _, t := range c.Tasks {
		for _, f := range t.FDs {
			if f.Object == id {
				out = append(out, f)
			}
		}
	}
	return out
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
	if capa, err := strconv.Atoi(o.InfoValue("capacity")); err == nil && capa > 0 {
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

// socket: unixsock.go.

// deletedFile recreates a deleted file: at its old path, unlinked at once
// (so its fds read "<path> (deleted)" again), or as an O_TMPFILE in the
// same directory when the path is taken; either as the first task holding
// it, so only where that task could create a file, owned by it.
func (fs *files) deletedFile(c *image.Checkpoint, o *image.Object) (int, error) {
	if fd, ok := fs.objs[o.ID]; ok {
		return fd, nil
	}
	path, err := o.InfoText("path")
	if err != nil {
		return -1, err
	}
	mode, _ := strconv.ParseUint(o.InfoValue("mode"), 8, 32)
	t := objectHolder(c, o.ID)
	if t == nil {
		return -1, fmt.Errorf("deleted file %s: no fd holds it", o.ID)
	}
	mode &= 0o7777
	fd := -1
	err = fs.creds.as(t, func() error {
		var err error
		fd, err = openInRoot(t.Root, path, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL, uint32(mode))
		if err == nil {
			// The name it was created at: the thread's root is "/".
			unix.Unlink(path)
		} else if errors.Is(err, unix.EEXIST) {
			fd, err = openInRoot(t.Root, filepath.Dir(path), unix.O_RDWR|unix.O_TMPFILE, uint32(mode))
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
