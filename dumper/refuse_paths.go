package dumper

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/image"
	"github.com/ckptfs/ckptfs/internal/fileid"
	"github.com/ckptfs/ckptfs/internal/proc"
)

// checkTaskPaths refuses, before anything is seized, a live task whose
// executable, cwd or mapped files restore could not open as the task
// (restorer/preopen.go: exe, cwd, mappedFile), or whose root it would not
// chroot it into (restorer/check.go checkRoot), or whose mappings
// image.VMARefusal refuses: a deleted executable or cwd, a file mapped
// that its uid may not open, a root another user could write to, a SysV
// attach whose first page was unmapped.
func checkTaskPaths(h fileHolder, as *taskThreads) error {
	exe, err := proc.Readlink(h.pid, "exe")
	if err != nil {
		return nil // exited, or a kernel thread: the frozen dump decides
	}
	if err := as.openExe(h, exe); err != nil {
		return fmt.Errorf("process %d: executable %s: restore could not open it as uid %d: %w", h.pid, exe, h.creds.UID, unwrapPath(err))
	}
	if cwd, err := proc.Readlink(h.pid, "cwd"); err == nil {
		if err := as.open(h, cwd, unix.O_PATH|unix.O_DIRECTORY); err != nil {
			return fmt.Errorf("process %d: cwd %s: restore could not open it as uid %d: %w", h.pid, cwd, h.creds.UID, unwrapPath(err))
		}
	}
	// maps alone, not proc.Maps: no VmFlags are needed here, and smaps
	// walks every page table of the process (2% of a 1 GiB dump's CPU).
	b, err := proc.Read(h.pid, "maps")
	if err != nil {
		return nil
	}
	maps, err := proc.ParseMaps(b)
	if err != nil {
		return nil
	}
	vmas := make([]*image.VMA, 0, len(maps))
	for _, m := range maps {
		v := &image.VMA{Start: m.Start, End: m.End, Perms: m.Perms, Offset: m.Offset, Dev: m.Dev, Inode: m.Inode, Name: m.Name, Flags: m.Flags}
		v.Name = deletedAsMemfd(v)
		v.Kind = vmaKind(v)
		vmas = append(vmas, v)
		if v.Kind != image.VMAFile || strings.HasPrefix(v.Name, "/memfd:") || strings.HasSuffix(v.Name, " (deleted)") || !strings.HasPrefix(v.Name, "/") {
			continue // recreated from its contents, or refused as a device (checkVMAs)
		}
		mode := unix.O_RDONLY
		if v.Shared() && v.Perms[1] == 'w' {
			mode = unix.O_RDWR
		}
		if err := as.open(h, v.Name, mode); err != nil {
			return fmt.Errorf("process %d: maps %s (%s): restore could not open it as uid %d: %w", h.pid, v.Name, v.DirName(), h.creds.UID, unwrapPath(err))
		}
	}
	if err := image.VMARefusal(&image.Task{PID: h.pid, VMAs: vmas}); err != nil {
		return err
	}
	return checkChrootChain(h)
}

// openExe is restore's open of an executable (restorer fs.exe): readable,
// or else a regular file the task may execute.
func openExe(root, exe string) error {
	fd, err := fileid.OpenInRoot(root, exe, unix.O_RDONLY|unix.O_NONBLOCK, 0)
	if err == nil {
		unix.Close(fd)
		return nil
	}
	if !errors.Is(err, unix.EACCES) {
		return err
	}
	opath, err := fileid.OpenInRoot(root, exe, unix.O_PATH, 0)
	if err != nil {
		return err
	}
	defer unix.Close(opath)
	var st unix.Stat_t
	if err := unix.Fstat(opath, &st); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return fmt.Errorf("not a regular file")
	}
	return unix.Faccessat2(opath, "", unix.X_OK, unix.AT_EACCESS|unix.AT_EMPTY_PATH)
}

// checkChrootChain is restore's rule for a task that is not uid 0 and has
// a root other than "/" (restorer checkRoot): every component of the root
// is a directory owned by root that only root may write to.
func checkChrootChain(h fileHolder) error {
	if h.root == "" || h.root == "/" || h.uid0 {
		return nil
	}
	for p := h.root; ; p = filepath.Dir(p) {
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return fmt.Errorf("process %d: root %s: %s: %w", h.pid, h.root, p, err)
		}
		if st.Mode&unix.S_IFMT != unix.S_IFDIR || st.Uid != 0 || st.Mode&0o022 != 0 {
			return fmt.Errorf("process %d: root %s: %s is not a directory owned by root and writable only by root (mode %o, owner %d): restore does not chroot a task of uid %d where another user could put files",
				h.pid, h.root, p, st.Mode, st.Uid, h.creds.UID)
		}
		if p == "/" {
			return nil
		}
	}
}
