package restorer

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/image"
)

// preopen opens every file the restore reopens by path before any process
// is created, each with the credentials of the task that will have it
// (taskcreds.go): the fds' files, directories and devices, every mapped
// file and every executable. A file the task's uid could not open now (a
// file swapped for a symlink to a root-only file, an edited path) is
// refused here, and the sizes are checked on what was opened, not on a
// path that could change in between. The cwd is resolved as the task too
// (O_PATH), and the task is moved there with fchdir.
func (fs *files) preopen(c *image.Checkpoint) error {
	for _, holders := range fdOpenOrder(c, fs.own) {
		if err := fs.preopenFD(c, holders); err != nil {
			return err
		}
	}
	for _, t := range c.Tasks {
		if t.State == "Z" {
			continue
		}
		for _, v := range t.VMAs {
			if !mapsFile(v) || memfdOf(c, v) != nil {
				continue
			}
			fd, err := fs.mappedFile(t, v)
			if err != nil {
				return err
			}
			var st unix.Stat_t
			if err := unix.Fstat(fd, &st); err != nil {
				return fmt.Errorf("task %d: vma %s: fstat %s: %w", t.PID, v.DirName(), v.Name, err)
			}
			if v.FileSize != 0 && st.Size != v.FileSize {
				return fmt.Errorf("task %d: vma %s maps %s, whose size changed from %d to %d bytes", t.PID, v.DirName(), v.Name, v.FileSize, st.Size)
			}
		}
		if _, err := fs.exe(t); err != nil {
			return err
		}
		if _, err := fs.cwd(t); err != nil {
			return err
		}
	}
	return nil
}

// cwd returns the restorer's O_PATH fd on task t's cwd, resolved as t.
func (fs *files) cwd(t *image.Task) (int, error) {
	if fd, ok := fs.cwds[t.PID]; ok {
		return fd, nil
	}
	fd, err := fs.openAs(t, t.Cwd, unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		return -1, fmt.Errorf("task %d: cwd: %w", t.PID, err)
	}
	fs.cwds[t.PID] = fs.keep(fd)
	return fd, nil
}

type taskFD struct {
	t *image.Task
	f *image.FD
}

// fdOpenOrder lists, once per open file description, the fds that are it
// (in checkpoint order) among those opened by path (files, directories,
// devices other than terminals).
func fdOpenOrder(c *image.Checkpoint, own map[int]string) [][]taskFD {
	var order []string
	byKey := map[string][]taskFD{}
	for _, t := range c.Tasks {
		if t.State == "Z" || t.FilesOf != 0 {
			continue
		}
		for _, f := range t.FDs {
			if !opensByPath(c, t, f, own) {
				continue
			}
			key := fdKey(t.PID, f)
			if byKey[key] == nil {
				order = append(order, key)
			}
			byKey[key] = append(byKey[key], taskFD{t, f})
		}
	}
	out := make([][]taskFD, len(order))
	for i, key := range order {
		out[i] = byKey[key]
	}
	return out
}

func opensByPath(c *image.Checkpoint, t *image.Task, f *image.FD, own map[int]string) bool {
	if f.Object != "" || inheritFD(c, t.PID, f, own) {
		return false
	}
	k, ok := fdKinds[f.Kind]
	return ok && k.preopens(f)
}

// preopenFD opens one open file description as the first of its holders
// whose credentials allow it (a file a root parent opened before its child
// dropped to another uid is opened as root), and checks its size.
func (fs *files) preopenFD(c *image.Checkpoint, holders []taskFD) error {
	first := holders[0]
	if _, ok := fs.handed.of(first.f); ok {
		return nil // the user's own fd (inheritfd.go): installed as it is
	}
	var firstErr error
	tried := map[string]bool{}
	for _, h := range holders {
		k := credKey(taskCreds(h.t))
		if tried[k] {
			continue
		}
		tried[k] = true
		fd, err := fs.source(c, h.t, h.f)
		if err == nil {
			return checkOpenedSize(h.t, h.f, fd)
		}
		if firstErr == nil {
			firstErr = err
		}
		if !errors.Is(err, unix.EACCES) && !errors.Is(err, unix.EPERM) {
			return fmt.Errorf("task %d fd %d: %w", first.t.PID, first.f.Num, firstErr)
		}
	}
	// No holder may open it: a file a more privileged process opened for
	// it. The restorer opens it only if it is that same file (privopen.go).
	if first.f.Kind != image.FDFile {
		return fmt.Errorf("task %d fd %d: %w", first.t.PID, first.f.Num, firstErr)
	}
	fd, err := fs.openDumpedFile(first.t, first.f)
	if err != nil {
		return fmt.Errorf("task %d fd %d: %w; nor can restore open it with its own credentials: %v; %s",
			first.t.PID, first.f.Num, firstErr, err, notOwnFileHint(first.f))
	}
	fs.byKey[fdKey(first.t.PID, first.f)] = fd
	return checkOpenedSize(first.t, first.f, fd)
}

func checkOpenedSize(t *image.Task, f *image.FD, fd int) error {
	if f.Kind != image.FDFile {
		return nil
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("task %d: fd %d: fstat %s: %w", t.PID, f.Num, f.Path, err)
	}
	if st.Size != f.Size && !grownOutput(f, st.Size) {
		return fmt.Errorf("task %d: fd %d: %s changed size from %d to %d bytes", t.PID, f.Num, f.Path, f.Size, st.Size)
	}
	return nil
}

// mapKey names a mapped file opened for task t with v's access mode.
func mapKey(t *image.Task, v *image.VMA) (string, int) {
	mode := unix.O_RDONLY
	if v.Shared() && v.Perms[1] == 'w' {
		mode = unix.O_RDWR
	}
	return credKey(taskCreds(t)) + " " + strconv.Itoa(mode) + " " + t.Root + " " + v.Name, mode
}

// mappedFile returns the restorer's fd on the file vma v of task t maps,
// opened as t (once per credentials, access mode and path).
func (fs *files) mappedFile(t *image.Task, v *image.VMA) (int, error) {
	key, mode := mapKey(t, v)
	if fd, ok := fs.mapped[key]; ok {
		return fd, nil
	}
	if strings.HasSuffix(v.Name, " (deleted)") {
		return -1, fmt.Errorf("task %d: vma %s maps %s, which was already deleted at dump time", t.PID, v.DirName(), v.Name)
	}
	fd, err := fs.openAs(t, v.Name, mode, 0)
	if err != nil {
		return -1, fmt.Errorf("task %d: vma %s maps %s: %w", t.PID, v.DirName(), v.Name, err)
	}
	fs.mapped[key] = fs.keep(fd)
	return fd, nil
}

// exe returns the restorer's fd on task t's executable, opened as t. An
// executable its uid may run but not read (mode 0711) is resolved as t,
// checked executable as t, and then reopened by the restorer: the exe link
// gives no access, only execve would, and nothing execs it.
func (fs *files) exe(t *image.Task) (int, error) {
	if fd, ok := fs.exes[t.PID]; ok {
		return fd, nil
	}
	fd, err := fs.openAs(t, t.Exe, unix.O_RDONLY, 0)
	if errors.Is(err, unix.EACCES) {
		fd, err = fs.exeNotReadable(t)
	}
	if err != nil {
		return -1, fmt.Errorf("task %d: executable: %w", t.PID, err)
	}
	fs.exes[t.PID] = fs.keep(fd)
	return fd, nil
}

func (fs *files) exeNotReadable(t *image.Task) (int, error) {
	opath, err := fs.openAs(t, t.Exe, unix.O_PATH, 0)
	if err != nil {
		return -1, err
	}
	defer unix.Close(opath)
	if err := isType(opath, unix.S_IFREG); err != nil {
		return -1, fmt.Errorf("%s: %w", t.Exe, err)
	}
	if err := fs.creds.as(t, func() error {
		return unix.Faccessat2(opath, "", unix.X_OK, unix.AT_EACCESS|unix.AT_EMPTY_PATH)
	}); err != nil {
		return -1, fmt.Errorf("%s is neither readable nor executable as uid %d: %w", t.Exe, t.Creds.UID[3], err)
	}
	fd, err := unix.Open("/proc/self/fd/"+strconv.Itoa(opath), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open %s: %w", t.Exe, err)
	}
	return fd, nil
}
