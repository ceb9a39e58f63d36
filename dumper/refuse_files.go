package dumper

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/image"
	"github.com/ckptfs/ckptfs/internal/fileid"
	"github.com/ckptfs/ckptfs/internal/fscreds"
	"github.com/ckptfs/ckptfs/internal/proc"
	"github.com/ckptfs/ckptfs/internal/ptrace"
)

// ErrFileNotReopenable says restore could not open a regular file a task
// holds: neither with the credentials of a task holding it nor, as the
// very file the task had open, with the restorer's own
// (restorer/privopen.go). The dump refuses it before seizing anything.
type ErrFileNotReopenable struct {
	PID, FD int
	Path    string
	AsTask  error  // the open with the task's credentials
	Why     string // why not as the same file; "" if restore would not try (not a permission error)
}

func (e *ErrFileNotReopenable) Error() string {
	if e.Why == "" {
		return fmt.Sprintf("process %d fd %d: %s: restore could not reopen it: %v", e.PID, e.FD, e.Path, e.AsTask)
	}
	return fmt.Sprintf("process %d fd %d: %s: restore could not reopen it: %v; nor as the same file with its own credentials: %s "+
		"(make the file one the task's user may open, or dump with --inherit-file %s and hand the file to the restore: restore --inherit-fd fd[N]:%s)",
		e.PID, e.FD, e.Path, e.AsTask, e.Why, e.Path, e.Path)
}

// reopenFlags are the open flags restore reopens an fd with.
const reopenFlags = ^uint32(unix.O_CREAT | unix.O_EXCL | unix.O_TRUNC | unix.O_CLOEXEC)

// fileHolder is a live task of the tree as restore will open its files:
// its file system credentials and its root.
type fileHolder struct {
	pid   int
	creds fscreds.Creds
	root  string
	uid0  bool // all four uids 0 (restorer checkRoot)
}

func holderOf(pid int) (fileHolder, error) {
	b, err := proc.Read(pid, "status")
	if err != nil {
		return fileHolder{}, err
	}
	kv := proc.KeyValues(b)
	uid, gid := proc.IDs(kv["Uid"]), proc.IDs(kv["Gid"])
	if len(uid) != 4 || len(gid) != 4 {
		return fileHolder{}, fmt.Errorf("process %d: status Uid %q Gid %q", pid, kv["Uid"], kv["Gid"])
	}
	eff, err := strconv.ParseUint(kv["CapEff"], 16, 64)
	if err != nil {
		return fileHolder{}, fmt.Errorf("process %d: status CapEff %q: %w", pid, kv["CapEff"], err)
	}
	root, err := os.Readlink(proc.Path(pid, "root"))
	if err != nil {
		return fileHolder{}, err
	}
	return fileHolder{pid: pid, creds: fscreds.Creds{UID: uid[3], GID: gid[3], Groups: proc.IDs(kv["Groups"]), Effective: &eff}, root: root,
		uid0: uid[0] == 0 && uid[1] == 0 && uid[2] == 0 && uid[3] == 0}, nil
}

// precheckFiles refuses, before anything is seized, every regular file fd
// of the live tasks that restore would refuse to open (restorer/preopen.go,
// privopen.go), but those on a path of inheritFiles (handed in at restore): it opens each as restore will, with the file system
// credentials of the tasks holding the same file with the same flags (a
// file a root parent opened before its child dropped to another uid opens
// as the parent), and where none may, checks what restore then checks
// with its own: a file handle recorded, and the path leading, without a
// symlink, to that same file.
func precheckFiles(live []int, byPid map[int][]*image.FD, inheritFiles []string) error {
	holders := map[int]fileHolder{}
	for _, pid := range live {
		h, err := holderOf(pid)
		if err != nil {
			continue // exited meanwhile: the frozen dump decides
		}
		holders[pid] = h
	}
	as := newTaskThreads()
	defer as.close()
	openAs := func(h fileHolder, f *image.FD) error {
		return as.open(h, f.Path, int(f.Flags&reopenFlags))
	}
	for _, pid := range live {
		h, ok := holders[pid]
		if !ok {
			continue
		}
		for _, f := range byPid[pid] {
			if f.Kind == image.FDInotify {
				if err := checkWatches(h, f, as); err != nil {
					return err
				}
				continue
			}
			if f.Kind != image.FDFile || f.Deleted || kindOf(f) != (fileKind{}) || slices.Contains(inheritFiles, f.Path) {
				continue // not reopened by path, or handed in by the user
			}
			if err := checkReopen(h, f, holders, byPid, openAs); err != nil {
				return err
			}
		}
		if err := checkTaskPaths(h, as); err != nil { // refuse_paths.go
			return err
		}
	}
	return nil
}

// taskThreads keeps one fscreds.Thread per set of credentials, and what
// each check made there found: the tasks of a tree share their
// credentials and map the same files, and every call on such a thread is
// two thread switches (on this kind of VM 100-200 µs), so the same
// check is made once a dump.
type taskThreads struct {
	threads map[string]*fscreds.Thread
	found   map[taskCheck]error
}

// taskCheck is one check a taskThreads makes: an open of path (or, with
// exe, restore's open of an executable) with flags, in root, as creds.
type taskCheck struct {
	creds, root, path string
	flags             int
	exe               bool
}

func newTaskThreads() *taskThreads {
	return &taskThreads{threads: map[string]*fscreds.Thread{}, found: map[taskCheck]error{}}
}

// do runs fn with h's file system credentials.
func (tt *taskThreads) do(h fileHolder, fn func() error) error {
	key := h.creds.String()
	th := tt.threads[key]
	if th == nil {
		var err error
		if th, err = fscreds.Start(h.creds); err != nil {
			return err
		}
		tt.threads[key] = th
	}
	return th.Do(fn)
}

// once runs check k with fn, unless it was made before: then it returns
// what it found then.
func (tt *taskThreads) once(h fileHolder, k taskCheck, fn func() error) error {
	k.creds, k.root = h.creds.String(), h.root
	if err, ok := tt.found[k]; ok {
		return err
	}
	err := tt.do(h, fn)
	tt.found[k] = err
	return err
}

// open opens path as restore opens it for h's task and closes it again.
// O_NONBLOCK: a lease another process holds gives EWOULDBLOCK instead of
// waiting for its break; the open was allowed.
func (tt *taskThreads) open(h fileHolder, path string, flags int) error {
	if flags&unix.O_PATH == 0 {
		flags |= unix.O_NONBLOCK | unix.O_NOCTTY
	}
	return tt.once(h, taskCheck{path: path, flags: flags}, func() error {
		fd, err := fileid.OpenInRoot(h.root, path, flags, 0)
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil
		}
		if err == nil {
			unix.Close(fd)
		}
		return err
	})
}

// openExe is restore's open of the executable exe for h's task.
func (tt *taskThreads) openExe(h fileHolder, exe string) error {
	return tt.once(h, taskCheck{path: exe, exe: true}, func() error { return openExe(h.root, exe) })
}

func (tt *taskThreads) close() {
	for _, th := range tt.threads {
		th.Close()
	}
}

func checkReopen(h fileHolder, f *image.FD, holders map[int]fileHolder, byPid map[int][]*image.FD, openAs func(fileHolder, *image.FD) error) error {
	asTask := openAs(h, f)
	if asTask == nil {
		return nil
	}
	if !errors.Is(asTask, unix.EACCES) && !errors.Is(asTask, unix.EPERM) {
		return &ErrFileNotReopenable{PID: h.pid, FD: f.Num, Path: f.Path, AsTask: fmt.Errorf("open as uid %d: %w", h.creds.UID, unwrapPath(asTask))}
	}
	tried := map[string]bool{h.creds.String(): true}
	for _, pid := range slices.Sorted(maps.Keys(byPid)) {
		o, ok := holders[pid]
		if !ok || tried[o.creds.String()] || !slices.ContainsFunc(byPid[pid], func(g *image.FD) bool {
			// The same open file description (restore opens it once, as
			// the first holder that may).
			same, err := ptrace.SameFile(h.pid, f.Num, pid, g.Num)
			return g.Kind == f.Kind && g.Ino == f.Ino && err == nil && same
		}) {
			continue
		}
		tried[o.creds.String()] = true
		if openAs(o, f) == nil {
			return nil
		}
	}
	why := sameFileOpens(h, f)
	if why == "" {
		return nil
	}
	return &ErrFileNotReopenable{PID: h.pid, FD: f.Num, Path: f.Path, AsTask: fmt.Errorf("open as uid %d: %w", h.creds.UID, unwrapPath(asTask)), Why: why}
}

// sameFileOpens says why restore could not open fd f of h's task as the
// same file with its own credentials ("" if it could).
func sameFileOpens(h fileHolder, f *image.FD) string {
	id, err := fileid.OfFD(h.pid, f.Num)
	if errors.Is(err, fileid.ErrNoHandle) {
		return err.Error()
	}
	if err != nil {
		return err.Error()
	}
	dirfd, rel, resolve, done, err := fileid.InRoot(h.root, f.Path)
	if err != nil {
		return err.Error()
	}
	defer done()
	fd, err := fileid.OpenSame(dirfd, rel, resolve, int(f.Flags&reopenFlags)|unix.O_NONBLOCK, id)
	if err != nil && !errors.Is(err, unix.EWOULDBLOCK) {
		return err.Error()
	}
	if err == nil {
		unix.Close(fd)
	}
	return ""
}

// unwrapPath strips an *os.PathError's operation and path.
func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// inotifyMaskBits are the watch mask bits a restore gives back
// (restorer/kind_inotify.go).
const inotifyMaskBits = unix.IN_ALL_EVENTS | unix.IN_ONESHOT | unix.IN_EXCL_UNLINK

// checkWatches adds, as restore will (as the task, IN_DONT_FOLLOW), every
// watch of inotify fd f to a throw-away instance: a watch needs read
// permission on what it watches, which a root parent that added it before
// its child dropped to another uid had and the task has not.
func checkWatches(h fileHolder, f *image.FD, as *taskThreads) error {
	ws, err := image.InotifyWatches(f)
	if err != nil || len(ws) == 0 {
		return nil // image.Refusal says what is wrong
	}
	return as.do(h, func() error {
		fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
		if err != nil {
			return fmt.Errorf("process %d fd %d: inotify_init1: %w", h.pid, f.Num, err)
		}
		defer unix.Close(fd)
		for _, w := range ws {
			if _, err := unix.InotifyAddWatch(fd, w.Path, w.Mask&inotifyMaskBits|unix.IN_DONT_FOLLOW); err != nil {
				return fmt.Errorf("process %d fd %d: inotify watch %d on %s: restore could not add it as uid %d: %w", h.pid, f.Num, w.WD, w.Path, h.creds.UID, err)
			}
		}
		return nil
	})
}
