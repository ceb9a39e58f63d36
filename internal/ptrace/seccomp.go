//go:build linux && amd64

package ptrace

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Filter is one seccomp filter: its raw struct sock_filter array and the
// flags the kernel reports for it (SECCOMP_FILTER_FLAG_LOG).
type Filter struct {
	Flags uint64
	Prog  []byte
}

// SeccompFilters returns the seccomp filters of the stopped thread tid,
// oldest first (PTRACE_SECCOMP_GET_FILTER's index 0 is the oldest: the
// kernel's get_nth_filter counts back from the newest by count-index), n
// being how many it has (/proc status Seccomp_filters), each with the
// flags PTRACE_GET_SECCOMP_METADATA reports (SECCOMP_FILTER_FLAG_LOG).
// Both requests need CAP_SYS_ADMIN and a tracer not under seccomp. n < 0:
// unknown (a kernel before 5.9 has no Seccomp_filters), they are counted.
func SeccompFilters(tid, n int) ([]Filter, error) {
	if n < 0 {
		var err error
		if n, err = countSeccompFilters(tid); err != nil {
			return nil, err
		}
	}
	out := make([]Filter, n)
	for idx := 0; idx < n; idx++ {
		prog, err := seccompFilter(tid, idx)
		if err != nil {
			return nil, err
		}
		flags, err := seccompFlags(tid, idx)
		if err != nil {
			return nil, err
		}
		out[idx] = Filter{Flags: flags, Prog: prog}
	}
	return out, nil
}

// countSeccompFilters asks for filters 0, 1, ... until the kernel says
// there is none (ENOENT).
func countSeccompFilters(tid int) (int, error) {
	for n := 0; ; n++ {
		_, _, e := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_SECCOMP_GET_FILTER, uintptr(tid), uintptr(n), 0, 0, 0)
		if e == unix.ENOENT {
			return n, nil
		}
		if e != 0 {
			return 0, fmt.Errorf("seccomp filter %d of %d: %w", n, tid, e)
		}
	}
}

// seccompFilter returns filter idx (0: the oldest) as raw sock_filter bytes.
func seccompFilter(tid, idx int) ([]byte, error) {
	cnt, _, e := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_SECCOMP_GET_FILTER, uintptr(tid), uintptr(idx), 0, 0, 0)
	if e != 0 {
		return nil, fmt.Errorf("seccomp filter %d of %d: %w", idx, tid, e)
	}
	if cnt == 0 || cnt > unix.BPF_MAXINSNS {
		return nil, fmt.Errorf("seccomp filter %d of %d: %d instructions", idx, tid, cnt)
	}
	buf := make([]byte, cnt*unix.SizeofSockFilter)
	got, _, e := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_SECCOMP_GET_FILTER, uintptr(tid), uintptr(idx),
		uintptr(unsafe.Pointer(&buf[0])), 0, 0)
	if e != 0 {
		return nil, fmt.Errorf("seccomp filter %d of %d: %w", idx, tid, e)
	}
	if got != cnt {
		return nil, fmt.Errorf("seccomp filter %d of %d: %d instructions, then %d", idx, tid, cnt, got)
	}
	return buf, nil
}

// seccompFlags returns the flags of filter idx (struct seccomp_metadata).
func seccompFlags(tid, idx int) (uint64, error) {
	md := [2]uint64{uint64(idx), 0} // filter_off, flags
	_, _, e := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_SECCOMP_GET_METADATA, uintptr(tid),
		unsafe.Sizeof(md), uintptr(unsafe.Pointer(&md)), 0, 0)
	if e != 0 {
		return 0, fmt.Errorf("seccomp metadata %d of %d: %w", idx, tid, e)
	}
	return md[1], nil
}

// SetOptions replaces the ptrace options of tid (PTRACE_SETOPTIONS), e.g.
// to add PTRACE_O_SUSPEND_SECCOMP: while it is set, the thread's seccomp
// filters let every syscall through, injected ones included; a detach
// clears it.
func SetOptions(tid, options int) error {
	if err := unix.PtraceSetOptions(tid, options); err != nil {
		return fmt.Errorf("ptrace setoptions %d %#x: %w", tid, options, err)
	}
	return nil
}
