package dumper

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/image"
)

// kind is the dumper's half of one kind of fd or shared object, after
// CRIU's fdtype_ops: each lives in kind_<name>.go, its schema in
// image/kind_<name>.go, its restore in restorer/kind_<name>.go. The
// drivers call the kinds: collectFDs (collect.go) classifies and dumps,
// checkFDs (refuse.go) refuses, collectObjects (objects.go) collects;
// ordering across kinds stays in the drivers. Embedding noOps gives the
// methods a kind does not need.
type kind interface {
	// fdKind is the image fd kind of the fds this kind owns.
	fdKind() string
	// classifies says whether an fd whose /proc link is link and whose
	// file has mode is of this kind's fdKind (kinds that share an fd kind,
	// memfd and deleted file with file, say no and tell by owns).
	classifies(link string, mode uint32) bool
	// owns says whether fd f, classified, is this kind's.
	owns(f *image.FD) bool
	// dump asks the kernel what fd f of pid's fdinfo lines (in f.Extra)
	// do not say, or says only raw (inotify watch handles, a timerfd's
	// missed periods); fdKindState then keeps of f.Extra what the kind's
	// schema reads, typed. It runs before the tree is seized (for refuse)
	// and again once it is frozen.
	dump(pid int, f *image.FD) error
	// refuse says, before anything is seized, why fd f of pid cannot be
	// checkpointed from what only the live kernel knows (a socket's
	// protocol, a device's number); the kind's image.Refusal rule, which
	// the restorer applies too, is checked after it.
	refuse(pid int, f *image.FD) error
	// collect records the object fd f of task t refers to, once per
	// checkpoint, while the tree is frozen.
	collect(cc *collection, t *image.Task, f *image.FD) error
}

// kinds is the one table of kinds: the first that owns an fd is its kind.
// SysV segments are reached by vmas only (collectShm, shm.go).
var kinds = []kind{
	memfdKind{}, deletedFileKind{}, fileKind{}, dirKind{}, ptyKind{}, chrKind{}, pipeKind{}, tcpKind{}, udpKind{}, unixKind{},
	eventfdKind{}, epollKind{}, timerfdKind{}, signalfdKind{}, inotifyKind{}, pidfdKind{}, otherKind{},
}

// noOps are the methods of a kind that has nothing to do at that step.
type noOps struct{}

func (noOps) classifies(string, uint32) bool                    { return false }
func (noOps) dump(int, *image.FD) error                         { return nil }
func (noOps) refuse(int, *image.FD) error                       { return nil }
func (noOps) collect(*collection, *image.Task, *image.FD) error { return nil }

// kindOf returns the kind of classified fd f.
func kindOf(f *image.FD) kind {
	for _, k := range kinds {
		if k.fdKind() == f.Kind && k.owns(f) {
			return k
		}
	}
	return otherKind{}
}

// fdKind classifies an fd by its /proc link and its file's mode.
func fdKind(link string, mode uint32) string {
	for _, k := range kinds {
		if k.classifies(link, mode) {
			return k.fdKind()
		}
	}
	return image.FDOther
}

// fdKindState records what the kind of fd f of pid needs from the kernel,
// then keeps of the kernel's fdinfo lines only what the kind's schema has
// (no raw fdinfo text is stored).
func fdKindState(pid int, f *image.FD) error { return fdKindStateStat(pid, f, nil, nil) }

// statKind is a kind whose dump uses the fd's stat and work shared by a
// process's fds of one file (fileIDs, kind_file.go).
type statKind interface {
	dumpStat(pid int, f *image.FD, st *unix.Stat_t, ids fileIDs) error
}

// fdKindStateStat is fdKindState given the fd's stat and its process's
// file identities (collectFDs).
func fdKindStateStat(pid int, f *image.FD, st *unix.Stat_t, ids fileIDs) error {
	k := kindOf(f)
	var err error
	if sk, ok := k.(statKind); ok && st != nil && ids != nil {
		err = sk.dumpStat(pid, f, st, ids)
	} else {
		err = k.dump(pid, f)
	}
	if err != nil {
		return err
	}
	lines, err := image.CanonicalLines(f)
	if err != nil {
		return fmt.Errorf("fdinfo: %w", err)
	}
	f.Extra = lines
	return nil
}

// otherKind is an fd of a kind ckptfs does not know (io_uring, a perf
// event...): image.Refusal refuses it.
type otherKind struct{ noOps }

func (otherKind) fdKind() string      { return image.FDOther }
func (otherKind) owns(*image.FD) bool { return true }

// isType says whether mode is of file type t (unix.S_IF*).
func isType(mode, t uint32) bool { return mode&unix.S_IFMT == t }

// commonLines returns the kernel lines every fd has (mnt_id, ino).
func commonLines(f *image.FD) []string {
	var out []string
	for _, l := range f.Extra {
		if image.CommonFDLine(l) {
			out = append(out, l)
		}
	}
	return out
}
