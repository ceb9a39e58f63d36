// Package wptrack finds the pages a process wrote since a point in time,
// with no help from the process and no signal: userfaultfd write-protect
// in async mode (UFFD_FEATURE_WP_ASYNC, the kernel resolves each first
// write itself, no fault message is ever queued) and the PAGEMAP_SCAN
// ioctl on /proc/<pid>/pagemap, which lists the pages written since they
// were protected and protects them again in the same walk
// (Documentation/admin-guide/mm/userfaultfd.rst, pagemap.rst).
//
// The userfaultfd must be created in the target (its mm is the one the
// fd serves); everything else (UFFDIO_API, UFFDIO_REGISTER,
// UFFDIO_WRITEPROTECT) works from any process that holds a copy of it,
// and PAGEMAP_SCAN from any process that may open the target's pagemap.
// Protection lasts as long as some process holds the fd open.
package wptrack

import (
	"errors"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/internal/uffd"
)

// userfaultfd (linux/userfaultfd.h); its ioctls are internal/uffd's.
const (
	// FeatureWPAsync: a write to a protected page is resolved by the
	// kernel (the protection of that page is dropped), no message.
	FeatureWPAsync = uffd.FeatureWPAsync

	UserModeOnly = 1 // UFFD_USER_MODE_ONLY: allowed without privilege
	OpenFlags    = unix.O_CLOEXEC | unix.O_NONBLOCK | UserModeOnly
)

// PAGEMAP_SCAN (linux/fs.h).
const (
	pagemapScan = 0xC0606610 // _IOWR('f', 16, struct pm_scan_arg)

	PageWPAllowed = 1 << 0 // PAGE_IS_WPALLOWED
	PageWritten   = 1 << 1 // PAGE_IS_WRITTEN
	PageFile      = 1 << 2
	PagePresent   = 1 << 3
	PageSwapped   = 1 << 4
	PagePFNZero   = 1 << 5

	scanWPMatching   = 1 << 0 // PM_SCAN_WP_MATCHING
	scanCheckWPAsync = 1 << 1 // PM_SCAN_CHECK_WPASYNC
)

const pageSize = 4096

// ErrNotTracked says a range holds memory that is not registered for
// async write-protection (PM_SCAN_CHECK_WPASYNC refused it).
var ErrNotTracked = errors.New("range not registered for async write-protect")

func ioctl(fd int, req uintptr, arg unsafe.Pointer) (uintptr, error) {
	for {
		r, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, uintptr(arg))
		if e == unix.EINTR || e == unix.EAGAIN {
			continue
		}
		if e != 0 {
			return r, e
		}
		return r, nil
	}
}

// EnableAsyncWP runs UFFDIO_API on ufd asking for async write-protect.
// It fails on a kernel without UFFD_FEATURE_WP_ASYNC (before 6.7).
func EnableAsyncWP(ufd int) error {
	a := uffd.APIArg(FeatureWPAsync)
	if _, err := ioctl(ufd, uffd.IoctlAPI, unsafe.Pointer(&a[0])); err != nil {
		return fmt.Errorf("UFFDIO_API with WP_ASYNC: %w", err)
	}
	return nil
}

// Register registers [start, start+length) of ufd's address space for
// write-protect tracking (UFFDIO_REGISTER_MODE_WP). The range must cover
// whole vmas the fd may track (private, writable).
func Register(ufd int, start, length uint64) error {
	return uffd.Register(ufd, start, length, uffd.RegisterWP)
}

// Protect write-protects the present pages of a registered range
// (UFFDIO_WRITEPROTECT): from now on a write to one of them marks it
// written (PageWritten) and is let through by the kernel.
func Protect(ufd int, start, length uint64) error {
	return uffd.WriteProtect(ufd, start, length)
}

type pmScanArg struct {
	size, flags, start, end, walkEnd, vec, vecLen, maxPages   uint64
	categoryInverted, categoryMask, categoryAnyof, returnMask uint64
}

// Region is a run of pages [Start, End) with the same categories.
type Region struct {
	Start, End uint64
	Categories uint64
}

// regionBatch is how many regions one PAGEMAP_SCAN call returns at most.
const regionBatch = 4096

// batchFor is the region buffer for [start, end): no more regions than
// pages (a dump scans every small vma of every process: 96 KiB each was
// 240 MiB of garbage for a 500-process tree).
func batchFor(start, end uint64) int {
	return int(max(min((end-start)/pageSize, regionBatch), 1))
}

// Written lists the pages of [start, end) written since they were last
// protected, as ascending regions, reading the pagemap file open at
// pagemapFD (the target's /proc/<pid>/pagemap). With rearm the same walk
// protects them again (PM_SCAN_WP_MATCHING), so a write that comes after
// is seen by the next call, one that came before by this one: nothing is
// lost between the two. The range must be registered for async
// write-protect: otherwise ErrNotTracked (PM_SCAN_CHECK_WPASYNC), and
// nothing of the range was protected again.
//
// An unpopulated page may be reported as written; the caller looks at
// whether a page is present at all (pagemap) before it copies it.
func Written(pagemapFD int, start, end uint64, rearm bool) ([]Region, error) {
	var out []Region
	buf := make([]Region, batchFor(start, end))
	for start < end {
		a := pmScanArg{size: uint64(unsafe.Sizeof(pmScanArg{})), flags: scanCheckWPAsync,
			start: start, end: end, vec: uint64(uintptr(unsafe.Pointer(&buf[0]))), vecLen: uint64(len(buf)),
			categoryMask: PageWritten, returnMask: PageWritten}
		if rearm {
			a.flags |= scanWPMatching
		}
		n, err := ioctl(pagemapFD, pagemapScan, unsafe.Pointer(&a))
		if err == unix.EPERM {
			return nil, fmt.Errorf("PAGEMAP_SCAN %#x-%#x: %w", start, end, ErrNotTracked)
		}
		if err != nil {
			return nil, fmt.Errorf("PAGEMAP_SCAN %#x-%#x: %w", start, end, err)
		}
		for _, r := range buf[:n] {
			if l := len(out); l > 0 && out[l-1].End == r.Start && out[l-1].Categories == r.Categories {
				out[l-1].End = r.End
				continue
			}
			out = append(out, r)
		}
		if a.walkEnd <= start {
			return nil, fmt.Errorf("PAGEMAP_SCAN %#x-%#x: walk did not advance", start, end)
		}
		start = a.walkEnd
	}
	return out, nil
}

// Pages lists the pages of [start, end) that are in any of the categories
// anyof (PagePresent|PageSwapped, say), as ascending regions with the
// categories of ret they have (PageFile, PagePFNZero, ...). It changes
// nothing and needs no registration. A uffd-wp marker (an unpopulated page
// whose protection was kept) counts as PageSwapped.
func Pages(pagemapFD int, start, end, anyof, ret uint64) ([]Region, error) {
	return scan(pagemapFD, start, end, pmScanArg{categoryAnyof: anyof, returnMask: ret})
}

func scan(pagemapFD int, start, end uint64, a pmScanArg) ([]Region, error) {
	var out []Region
	buf := make([]Region, batchFor(start, end))
	for start < end {
		a.size, a.start, a.end = uint64(unsafe.Sizeof(pmScanArg{})), start, end
		a.vec, a.vecLen = uint64(uintptr(unsafe.Pointer(&buf[0]))), uint64(len(buf))
		n, err := ioctl(pagemapFD, pagemapScan, unsafe.Pointer(&a))
		if err != nil {
			return nil, fmt.Errorf("PAGEMAP_SCAN %#x-%#x: %w", start, end, err)
		}
		for _, r := range buf[:n] {
			if l := len(out); l > 0 && out[l-1].End == r.Start && out[l-1].Categories == r.Categories {
				out[l-1].End = r.End
				continue
			}
			out = append(out, r)
		}
		if a.walkEnd <= start {
			return nil, fmt.Errorf("PAGEMAP_SCAN %#x-%#x: walk did not advance", start, end)
		}
		start = a.walkEnd
	}
	return out, nil
}

// Bitmap turns regions into one flag per page of [start, end).
func Bitmap(regions []Region, start, end uint64) []bool {
	n := (end - start) / pageSize
	b := make([]bool, n)
	for _, r := range regions {
		lo, hi := max(r.Start, start), min(r.End, end)
		for a := lo; a < hi; a += pageSize {
			b[(a-start)/pageSize] = true
		}
	}
	return b
}
