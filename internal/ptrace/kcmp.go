//go:build linux && amd64

package ptrace

import (
	"fmt"

	"golang.org/x/sys/unix"
)

const kcmpFile = 0 // KCMP_FILE

// SameFile reports whether fd1 of pid1 and fd2 of pid2 are the same open
// file description (kcmp KCMP_FILE): shared offset and flags.
func SameFile(pid1, fd1, pid2, fd2 int) (bool, error) {
	c, err := CompareFile(pid1, fd1, pid2, fd2)
	return c == 0, err
}

// CompareFile orders the open file descriptions of fd1 of pid1 and fd2 of
// pid2 (kcmp KCMP_FILE): 0 if they are one, else -1 or 1, a total order
// the kernel keeps while both exist, so sorting fds by it groups those that
// share a description in O(n log n) comparisons.
func CompareFile(pid1, fd1, pid2, fd2 int) (int, error) {
	r, _, e := unix.Syscall6(unix.SYS_KCMP, uintptr(pid1), uintptr(pid2), kcmpFile, uintptr(fd1), uintptr(fd2), 0)
	if e != 0 {
		return 0, e
	}
	return kcmpOrder(pid1, pid2, r)
}

// kcmpOrder turns kcmp's answer (0 equal, 1 less, 2 greater) into -1/0/1.
func kcmpOrder(pid1, pid2 int, r uintptr) (int, error) {
	switch r {
	case 0:
		return 0, nil
	case 1:
		return -1, nil
	case 2:
		return 1, nil
	}
	return 0, fmt.Errorf("kcmp %d %d: unordered (%d)", pid1, pid2, r)
}

const kcmpFiles = 2 // KCMP_FILES

// SameFiles reports whether processes pid1 and pid2 share one fd table
// (kcmp KCMP_FILES): threads of a process do, and so do processes created
// with clone(CLONE_FILES) without CLONE_THREAD.
func SameFiles(pid1, pid2 int) (bool, error) {
	c, err := CompareFiles(pid1, pid2)
	return c == 0, err
}

// CompareFiles orders the fd tables of pid1 and pid2 (kcmp KCMP_FILES): 0
// if they are one table, else -1 or 1, a total order the kernel keeps
// while both exist, so sorting processes by it groups those that share a
// table in O(n log n) comparisons.
func CompareFiles(pid1, pid2 int) (int, error) {
	r, _, e := unix.Syscall6(unix.SYS_KCMP, uintptr(pid1), uintptr(pid2), kcmpFiles, 0, 0, 0)
	if e != 0 {
		return 0, e
	}
	return kcmpOrder(pid1, pid2, r)
}
