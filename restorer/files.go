package restorer

import (
	"fmt"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/image"
	"github.com/ckptfs/ckptfs/internal/fileid"
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
	handed handedFDs      // fds handed in with --inherit-fd (inheritfd.go)
	// ids gives the identity the store records for a regular file fd
	// (privopen.go); nil: none can be trusted.
	ids func(t *image.Task, f *image.FD) (fileid.ID, error)
	// exitedPidfds are pidfds of an exited process, by O_NONBLOCK, and
	// restoredPid maps a recorded pid to the restored process's pid as
	// the restorer sees it (kind_pidfd.go).
	exitedPidfds map[bool]int
	restoredPid  func(pid int) (int, bool)
	open         []int       // fds to close when done
	creds        credThreads // threads with the tasks' credentials (taskcreds.go)

	tcpClose bool // --tcp-close: established connections come back reset (kind_tcp.go)
}

func newFiles(own map[int]string) *files {
	return &files{byKey: map[string]int{}, objs: map[string]int{}, mapped: map[string]int{},
		exes: map[int]int{}, cwds: map[int]int{}, own: own, creds: credThreads{},
		exitedPidfds: map[bool]int{}, restoredPid: func(int) (int, bool) { return 0, false }}
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

// source returns the restorer fd that fd f of task t becomes.
func (fs *files) source(c *image.Checkpoint, t *image.Task, f *image.FD) (int, error) {
	if n, ok := fs.handed.of(f); ok {
		return n, nil
	}
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

// openFD opens (or creates) the file of fd f of task t: its kind's open.
func (fs *files) openFD(c *image.Checkpoint, t *image.Task, f *image.FD) (int, error) {
	k, err := kindOf(c, f)
	if err != nil {
		return -1, err
	}
	return k.open(fs, c, t, f)
}

// reopen returns another open file description of the object the
// restorer's fd base is on, with f's access mode and status flags (and at
// f's offset when seek says so).
func (fs *files) reopen(o *image.Object, base int, f *image.FD, seek bool) (int, error) {
	fd, err := unix.Open("/proc/self/fd/"+strconv.Itoa(base), int(f.Flags&reopenMask)|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("reopen %s: %w", o.ID, err)
	}
	fs.keep(fd)
	if seek && f.Pos != 0 {
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
