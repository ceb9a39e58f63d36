// Package fileid names a file by what the kernel says it is, not by its
// path: its device, inode and file handle (name_to_handle_at: on ext4,
// xfs, btrfs and tmpfs the inode number and its generation, so a file
// created later in a reused inode has another handle). The dumper records
// the ID of a file an fd has open; the restorer, before it opens a file
// with more rights than its task has, checks that what a path leads to now
// is that same file (OpenSame).
package fileid

import (
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"

	"golang.org/x/sys/unix"
)

// ID identifies a file. Handle is "TYPE:HEX" (the handle's type and
// bytes), "" where the file system gives no handles.
type ID struct {
	Dev, Ino uint64
	Handle   string
}

func (id ID) String() string {
	return fmt.Sprintf("dev %d:%d ino %d handle %s", unix.Major(id.Dev), unix.Minor(id.Dev), id.Ino, id.Handle)
}

// ErrNoHandle says the file system of a file gives no file handles: its
// identity cannot be checked beyond the inode number.
var ErrNoHandle = errors.New("its file system gives no file handles (name_to_handle_at)")

// Of returns the ID of the file fd is on (fd may be O_PATH).
func Of(fd int) (ID, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return ID{}, fmt.Errorf("fstat: %w", err)
	}
	h, err := handle(fd, "", unix.AT_EMPTY_PATH)
	return ID{Dev: st.Dev, Ino: st.Ino, Handle: h}, err
}

// OfFD returns the ID of the file fd n of process pid has open, through
// its /proc link (which needs ptrace access to pid).
func OfFD(pid, n int) (ID, error) {
	path := fdPath(pid, n)
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return ID{}, fmt.Errorf("stat %s: %w", path, err)
	}
	return OfFDStat(pid, n, &st)
}

// OfFDStat is OfFD for a caller that has already stat'ed the fd: only the
// file handle is asked for.
func OfFDStat(pid, n int, st *unix.Stat_t) (ID, error) {
	h, err := handle(unix.AT_FDCWD, fdPath(pid, n), unix.AT_SYMLINK_FOLLOW)
	return ID{Dev: st.Dev, Ino: st.Ino, Handle: h}, err
}

func fdPath(pid, n int) string { return "/proc/" + strconv.Itoa(pid) + "/fd/" + strconv.Itoa(n) }

func handle(dirfd int, path string, flags int) (string, error) {
	fh, _, err := unix.NameToHandleAt(dirfd, path, flags)
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) {
		return "", ErrNoHandle
	}
	if err != nil {
		return "", fmt.Errorf("name_to_handle_at: %w", err)
	}
	return strconv.FormatInt(int64(fh.Type()), 10) + ":" + hex.EncodeToString(fh.Bytes()), nil
}

// Same says why the file fd is on is not want ("" if it is): another
// device, inode or handle, or no handle to compare.
func Same(fd int, want ID) (string, error) {
	got, err := Of(fd)
	if errors.Is(err, ErrNoHandle) {
		return "its file system gives no file handles to tell it from another file", nil
	}
	if err != nil {
		return "", err
	}
	switch {
	case want.Handle == "":
		return "the checkpoint records no file handle for it", nil
	case got.Dev != want.Dev || got.Ino != want.Ino:
		return fmt.Sprintf("it is another file (dev %d:%d ino %d, was dev %d:%d ino %d)",
			unix.Major(got.Dev), unix.Minor(got.Dev), got.Ino, unix.Major(want.Dev), unix.Minor(want.Dev), want.Ino), nil
	case got.Handle != want.Handle:
		return fmt.Sprintf("it is another file in the same inode (handle %s, was %s)", got.Handle, want.Handle), nil
	}
	return "", nil
}

// OpenSame opens path below dirfd (relative to it, or absolute with dirfd
// AT_FDCWD) with flags, with the caller's own credentials, only if it
// leads, without following any symlink, to a regular file that is want.
// It resolves path once, to an O_PATH fd (O_NOFOLLOW, RESOLVE_NO_SYMLINKS
// and RESOLVE_NO_MAGICLINKS, plus resolve), checks that file, then opens
// that same inode through the fd (no second lookup), so no rename or
// symlink between the check and the open can change what is opened.
func OpenSame(dirfd int, path string, resolve uint64, flags int, want ID) (int, error) {
	how := &unix.OpenHow{Flags: unix.O_PATH | unix.O_NOFOLLOW | unix.O_CLOEXEC,
		Resolve: resolve | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS}
	var opath int
	var err error
	for i := 0; ; i++ {
		opath, err = unix.Openat2(dirfd, path, how)
		if !errors.Is(err, unix.EAGAIN) || i == 8 {
			break
		}
	}
	if err != nil {
		return -1, fmt.Errorf("resolve %s without symlinks: %w", path, err)
	}
	defer unix.Close(opath)
	var st unix.Stat_t
	if err := unix.Fstat(opath, &st); err != nil {
		return -1, fmt.Errorf("fstat %s: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return -1, fmt.Errorf("%s is not a regular file (mode %o)", path, st.Mode)
	}
	why, err := Same(opath, want)
	if err != nil {
		return -1, fmt.Errorf("%s: %w", path, err)
	}
	if why != "" {
		return -1, fmt.Errorf("%s is not the file the task had open: %s", path, why)
	}
	fd, err := unix.Open("/proc/self/fd/"+strconv.Itoa(opath), flags|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
	if err != nil {
		return -1, fmt.Errorf("open %s: %w", path, err)
	}
	var st2 unix.Stat_t
	if err := unix.Fstat(fd, &st2); err != nil || st2.Dev != st.Dev || st2.Ino != st.Ino {
		unix.Close(fd)
		return -1, fmt.Errorf("open %s: the reopened file is not the one checked", path)
	}
	return fd, nil
}
