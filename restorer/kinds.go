package restorer

import (
	"fmt"

	"github.com/ckptfs/ckptfs/image"
)

// kind is the restorer's half of one kind of fd or shared object, after
// CRIU's file_desc_ops: each lives in kind_<name>.go, its schema in
// image/kind_<name>.go, its dump in dumper/kind_<name>.go. The drivers call
// the kinds: preflight's checkFD (check.go) checks, files.source
// (files.go) opens, restoreFDs (fds.go) installs or creates, then
// post-opens. Ordering across kinds stays in the drivers: unix sockets
// are made all at once on the first one's open (kind_unixsock.go), a
// memfd is sealed after the last vma mapping it (shmem.go), a SysV
// segment is marked IPC_RMID after the last attach (kind_sysvshm.go).
// Embedding kindBase gives the methods a kind does not need.
type kind interface {
	// check says, before any process is created, why fd f of task t
	// cannot be restored (nil: it can). The driver applies the kind's
	// image.Refusal rule, the one the dump applied, after it.
	check(c *image.Checkpoint, t *image.Task, f *image.FD) error
	// inherit says whether fd f of task pid is taken over from the
	// restorer's own fd at that number instead of being made again.
	inherit(c *image.Checkpoint, pid int, f *image.FD, own map[int]string) bool
	// preopens says that f is opened by path, as its task, before any
	// process is created (preopen.go), so a file it may not open stops
	// the restore before it starts.
	preopens(f *image.FD) bool
	// open returns the restorer's file that f becomes, made on first use
	// (the driver installs it in every task and at every number that had
	// it, with pidfd_getfd). Not called for an inTask kind.
	open(fs *files, c *image.Checkpoint, t *image.Task, f *image.FD) (int, error)
	// inTask says that f is made inside the task instead (create).
	inTask() bool
	// create makes f inside the task p and returns its fd there.
	create(p *target, f *image.FD) (uint64, error)
	// late says that f is made after every other fd of its task (epoll:
	// its watches are the task's fds).
	late() bool
	// postOpen finishes f once it is at its number (epoll: its watches).
	postOpen(p *target, f *image.FD) error
}

// fdKinds are the kinds by fd kind; an fd that refers to an object
// (f.Object) is of its object's kind (objectKinds).
var fdKinds = map[string]kind{
	image.FDFile: fileKind{}, image.FDDir: fileKind{}, image.FDChar: chrKind{},
	image.FDPipe: endKind{}, image.FDSocket: endKind{},
	image.FDEventfd: eventfdKind{}, image.FDEpoll: epollKind{}, image.FDTimerfd: timerfdKind{},
	image.FDSignalfd: signalfdKind{}, image.FDInotify: inotifyKind{}, image.FDPidfd: pidfdKind{},
	image.FDPty: ptyKind{},
}

// objectKinds are the kinds by object kind. SysV segments are reached by
// vmas only (kind_sysvshm.go).
var objectKinds = map[string]kind{
	image.ObjPipe: pipeKind{}, image.ObjUnixSocket: unixKind{},
	image.ObjDeletedFile: deletedFileKind{}, image.ObjMemfd: memfdKind{},
	image.ObjTCPSocket: tcpKind{}, image.ObjUDPSocket: udpKind{},
	image.ObjPty: ptyKind{},
}

// errNoKind says an fd is of a kind the restorer does not make.
var errNoKind = fmt.Errorf("cannot restore this kind of fd")

// kindOf returns the kind of fd f: its object's, or its own.
func kindOf(c *image.Checkpoint, f *image.FD) (kind, error) {
	if f.Object != "" {
		o := c.Object(f.Object)
		if o == nil {
			return nil, fmt.Errorf("object %s is not in the checkpoint", f.Object)
		}
		k, ok := objectKinds[o.Kind]
		if !ok {
			return nil, fmt.Errorf("object %s of unknown kind %q", o.ID, o.Kind)
		}
		return k, nil
	}
	if k, ok := fdKinds[f.Kind]; ok {
		return k, nil
	}
	return nil, errNoKind
}

// kindBase are the methods of a kind that has nothing to do at that step.
type kindBase struct{}

func (kindBase) check(*image.Checkpoint, *image.Task, *image.FD) error { return nil }

// inherit: an fd the restorer holds at the same number on the very same
// file (the same pipe:[inode], inherited by both from a common ancestor)
// is taken over, unless its other end is in the checkpoint.
func (kindBase) inherit(c *image.Checkpoint, pid int, f *image.FD, own map[int]string) bool {
	return f.Num > 2 && own[f.Num] == f.Path && !otherEndInside(c, pid, f)
}

func (kindBase) open(*files, *image.Checkpoint, *image.Task, *image.FD) (int, error) {
	return -1, errNoKind
}
func (kindBase) preopens(*image.FD) bool                   { return false }
func (kindBase) inTask() bool                              { return false }
func (kindBase) create(*target, *image.FD) (uint64, error) { return 0, errNoKind }
func (kindBase) late() bool                                { return false }
func (kindBase) postOpen(*target, *image.FD) error         { return nil }

// inTaskKind is the base of kinds made inside the task.
type inTaskKind struct{ kindBase }

func (inTaskKind) inTask() bool { return true }

// endKind is a pipe or socket fd: with an object (its other end in the
// checkpoint, or named) it is the object's kind; without one it can only
// be taken over from the restorer (fds 0-2).
type endKind struct{ kindBase }

// inherit: a standard fd whose other end is outside the checkpoint (the
// restorer's own stdin, stdout, stderr) is taken over.
func (k endKind) inherit(c *image.Checkpoint, pid int, f *image.FD, own map[int]string) bool {
	if f.Num <= 2 {
		return !otherEndInside(c, pid, f)
	}
	return k.kindBase.inherit(c, pid, f, own)
}

func (endKind) check(*image.Checkpoint, *image.Task, *image.FD) error { return errNoKind }

// inheritFD reports an fd of task pid that the restored process takes from
// the restorer instead of recreating it (its kind's inherit). A pipe or
// socket with both ends in the checkpoint (seq | gzip) is always
// recreated; a terminal never is: it is refused, or with --shell-job
// reopened on the restorer's terminal (session.go).
func inheritFD(c *image.Checkpoint, pid int, f *image.FD, own map[int]string) bool {
	k, ok := fdKinds[f.Kind]
	if !ok {
		k = kindBase{}
	}
	return k.inherit(c, pid, f, own)
}
