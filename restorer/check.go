package restorer

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/image"
	"github.com/ckptfs/ckptfs/internal/proc"
)

// preflight checks everything that can be checked before a process is
// created: pids and tids free, paths canonical, a vdso layout this kernel
// has. The files themselves are opened and their sizes checked next, before
// any process too (preopen.go). In a new pid namespace (checkPids false)
// every pid is free.
func preflight(c *image.Checkpoint, own map[int]string, handed handedFDs, shellJob, checkPids bool) error {
	if err := checkSessions(c, shellJob); err != nil {
		return err
	}
	if err := checkPtys(c); err != nil { // kind_pty.go: image.PtyRefusal, which the dump applies too
		return err
	}
	if err := checkTerminals(c, shellJob); err != nil {
		return err
	}
	if err := checkUnixPaths(c); err != nil { // kind_unixsock.go
		return err
	}
	if err := checkShm(c); err != nil { // kind_sysvshm.go
		return err
	}
	for _, t := range c.Tasks {
		if t.State == "Z" {
			// Restored by creating it and making it exit: only its pid matters.
			if t.PID == c.RootPID {
				return fmt.Errorf("task %d: the root was a zombie when dumped", t.PID)
			}
			if !checkPids {
				continue
			}
			if err := idFree(t.PID); err != nil {
				return err
			}
			continue
		}
		for _, th := range t.Threads {
			if !checkPids {
				break
			}
			if err := idFree(th.TID); err != nil {
				return err
			}
		}
		if err := checkVdso(t); err != nil {
			return err
		}
		if err := image.VMARefusal(t); err != nil { // the dump applies it too
			return err
		}
		for _, v := range t.VMAs {
			if err := checkMappedFile(t, v); err != nil {
				return err
			}
		}
		for _, f := range t.FDs {
			if _, ok := handed.of(f); ok {
				continue // handed in by the user (inheritfd.go)
			}
			if err := checkFD(c, t, f, own); err != nil {
				return err
			}
		}
		if err := canonical(t.Exe); err != nil {
			return fmt.Errorf("task %d: executable: %w", t.PID, err)
		}
		if err := canonical(t.Cwd); err != nil {
			return fmt.Errorf("task %d: cwd: %w", t.PID, err)
		}
		if err := checkRoot(t); err != nil {
			return err
		}
	}
	return nil
}

// checkRoot refuses to chroot a task that is not root into a directory
// another user could write to: every component of its recorded root must be
// a root-owned directory (not a symlink) that only root may write to, the
// rule of OpenSSH's ChrootDirectory. Elsewhere the task could run a
// set-user-ID program (hard-linked there) with files of that user's choosing
// as its /etc; a task of uid 0 could chroot itself anywhere anyway.
func checkRoot(t *image.Task) error {
	if t.Root == "" || t.Root == "/" {
		return nil
	}
	if err := canonical(t.Root); err != nil {
		return fmt.Errorf("task %d: root: %w", t.PID, err)
	}
	if t.Creds.UID == [4]int{} {
		return nil
	}
	for p := t.Root; ; p = filepath.Dir(p) {
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return fmt.Errorf("task %d: root %s: %s: %w", t.PID, t.Root, p, err)
		}
		if st.Mode&unix.S_IFMT != unix.S_IFDIR || st.Uid != 0 || st.Mode&0o022 != 0 {
			return fmt.Errorf("task %d: root %s: %s is not a directory owned by root and writable only by root (mode %o, owner %d): a task of uid %d is not chrooted where another user could put files",
				t.PID, t.Root, p, st.Mode, st.Uid, t.Creds.UID[1])
		}
		if p == "/" {
			return nil
		}
	}
}

// pidHolder says who holds pid n, if anybody does (idFree adds a hint).
func pidHolder(n int) error {
	b, err := os.ReadFile(proc.Path(n, "status"))
	if err != nil {
		if os.IsNotExist(err) {
			return nil
		}
		return fmt.Errorf("pid %d: %w", n, err)
	}
	st := proc.KeyValues(b)
	comm := st["Name"]
	tgid, _ := strconv.Atoi(st["Tgid"])
	switch {
	case strings.HasPrefix(st["State"], "Z"):
		return fmt.Errorf("pid %d is still in use by %s (zombie not yet reaped)", n, comm)
	case tgid != n && tgid != 0:
		return fmt.Errorf("pid %d is still in use by a thread of %s (pid %d)", n, comm, tgid)
	}
	return fmt.Errorf("pid %d is still in use by %s", n, comm)
}

// mapsFile reports whether v is mapped from a file that restore must open.
func mapsFile(v *image.VMA) bool {
	return v.Kind == image.VMAFile
}

func checkMappedFile(t *image.Task, v *image.VMA) error {
	if !mapsFile(v) || strings.HasPrefix(v.Name, "/memfd:") && v.Inode != 0 {
		return nil // a memfd is recreated from its object (shmem.go)
	}
	if strings.HasSuffix(v.Name, " (deleted)") {
		return fmt.Errorf("task %d: vma %s maps %s, which was already deleted at dump time", t.PID, v.DirName(), v.Name)
	}
	if err := canonical(v.Name); err != nil {
		return fmt.Errorf("task %d: vma %s: %w", t.PID, v.DirName(), err)
	}
	return nil // opened and its size checked by preopen
}

// checkFD checks fd f of task t by its kind (check), then by the kind's
// image.Refusal rule, which the dump applied too.
func checkFD(c *image.Checkpoint, t *image.Task, f *image.FD, own map[int]string) error {
	if inheritFD(c, t.PID, f, own) || (f.Kind == image.FDChar && isTTY(f.Path) && f.Object == "") {
		return nil // terminals: checkTerminals
	}
	k, err := kindOf(c, f)
	if err == nil {
		err = k.check(c, t, f)
	}
	if errors.Is(err, errNoKind) {
		return fmt.Errorf("task %d: fd %d (%s %s): %w", t.PID, f.Num, f.Kind, f.Path, err)
	}
	if err == nil {
		err = image.Refusal(f)
	}
	if err != nil {
		return fmt.Errorf("task %d: fd %d: %w", t.PID, f.Num, err)
	}
	return nil
}

// ownFDs maps the restorer's own fd numbers to what they point at
// (readlink of /proc/self/fd/N).
func ownFDs() map[int]string {
	out := map[int]string{}
	ents, _ := os.ReadDir("/proc/self/fd")
	for _, e := range ents {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if l, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil {
			out[n] = l
		}
	}
	return out
}

// otherEndInside reports whether the object fd f of task pid refers to is
// also reached through another open file description of the checkpoint
// (the other end of a pipe, or a second open of it), or is a unix socket
// whose peer is in the checkpoint.
func otherEndInside(c *image.Checkpoint, pid int, f *image.FD) bool {
	if c == nil || f.Object == "" {
		return false
	}
	key := fdKey(pid, f)
	for _, t := range c.Tasks {
		for _, g := range t.FDs {
			if g.Object == f.Object && fdKey(t.PID, g) != key {
				return true
			}
		}
	}
	if o := c.Object(f.Object); o != nil && (o.Kind == image.ObjTCPSocket || o.Kind == image.ObjUDPSocket) {
		return true // recreated, never taken over
	}
	if o := c.Object(f.Object); o != nil && o.Kind == image.ObjUnixSocket {
		return !unixPeerOutside(c, o) // kind_unixsock.go: a listener, named or unconnected socket is recreated
	}
	return false
}

func isTTY(path string) bool {
	return strings.HasPrefix(path, "/dev/pts/") || strings.HasPrefix(path, "/dev/tty") || path == "/dev/console"
}

// pathErr strips the operation and path from an *os.PathError whose path
// the caller names itself.
func pathErr(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// grownOutput reports a file that only grew since the dump, typically an
// output or log the process (or an earlier restore of the same checkpoint)
// kept writing: reopening it is safe. A shorter file is an error.
func grownOutput(f *image.FD, size int64) bool {
	return size >= f.Size && size >= f.Pos
}
