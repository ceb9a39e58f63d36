// Package kcheck probes which kernel features and privileges ckptfs can
// use on this machine, like `criu check`: each probe makes the smallest
// call that tells (a system call with arguments it must refuse, an ioctl
// on a fresh descriptor) and changes nothing.
package kcheck

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Result is one probe's answer.
type Result struct {
	Name     string `json:"name"`
	OK       bool   `json:"ok"`
	Detail   string `json:"detail"`             // what was found
	Disables string `json:"disables,omitempty"` // what its absence takes away (only when !OK)
}

// Probe is one feature check.
type Probe struct {
	Name     string
	Disables string // what ckptfs cannot do without it
	Run      func() (ok bool, detail string)
}

// Probes are every check, in the order `ckptfs check` prints them.
var Probes = []Probe{
	{"clone3 set_tid", "restore (processes get their pids back through clone3 set_tid)", probeClone3},
	{"pidfd_getfd", "dump of fd state (flags, positions, sockets) and restore of fds", probePidfdGetfd},
	{"userfaultfd", "restore --lazy and the userfaultfd page fill of restore", probeUserfaultfd},
	{"userfaultfd WP_ASYNC", "dump --track and --pre-copy (write tracking of memory)", probeUffdWPAsync},
	{"PAGEMAP_SCAN", "dump --track and --pre-copy (finding the pages written since a dump)", probePagemapScan},
	{"TCP repair", "checkpointing TCP connections (ckptfs refuses them today; TCP repair is what it will need)", probeTCPRepair},
	{"FUSE", "ckptfs mount (the checkpoint tree; restore from a mount)", probeFUSE},
	{"ptrace scope", "dump of processes that are not children of ckptfs", probePtraceScope},
	{"CAP_CHECKPOINT_RESTORE", "restore by a user other than root (set_tid needs it or CAP_SYS_ADMIN)", probeCap(unix.CAP_CHECKPOINT_RESTORE, "CAP_CHECKPOINT_RESTORE")},
	{"CAP_SYS_RESOURCE", "restore of resource limits above the hard limit and of mm fields (PR_SET_MM) beyond its limits", probeCap(unix.CAP_SYS_RESOURCE, "CAP_SYS_RESOURCE")},
}

// Run runs every probe.
func Run() []Result {
	out := make([]Result, 0, len(Probes))
	for _, p := range Probes {
		ok, detail := p.Run()
		r := Result{Name: p.Name, OK: ok, Detail: detail}
		if !ok {
			r.Disables = p.Disables
		}
		out = append(out, r)
	}
	return out
}

// KernelRelease returns uname -r.
func KernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "unknown"
	}
	return unix.ByteSliceToString(u.Release[:])
}

// kernelAtLeast reports whether the running kernel is major.minor or newer.
func kernelAtLeast(major, minor int) bool {
	f := strings.FieldsFunc(KernelRelease(), func(r rune) bool { return r < '0' || r > '9' })
	if len(f) < 2 {
		return false
	}
	ma, _ := strconv.Atoi(f[0])
	mi, _ := strconv.Atoi(f[1])
	return ma > major || ma == major && mi >= minor
}

// probeClone3: clone3 with no arguments fails with EINVAL where it exists
// (ENOSYS where not); set_tid came with Linux 5.5.
func probeClone3() (bool, string) {
	_, _, e := unix.Syscall(unix.SYS_CLONE3, 0, 0, 0)
	if e == unix.ENOSYS {
		return false, "no clone3 system call (Linux 5.3+; set_tid 5.5+)"
	}
	if !kernelAtLeast(5, 5) {
		return false, "clone3 without set_tid (kernel " + KernelRelease() + " < 5.5)"
	}
	return true, "clone3 with set_tid (kernel " + KernelRelease() + ")"
}

// probePidfdGetfd: pidfd_getfd on a bad pidfd fails with EBADF where it
// exists.
func probePidfdGetfd() (bool, string) {
	_, _, e := unix.Syscall(unix.SYS_PIDFD_GETFD, ^uintptr(0), 0, 0)
	if e == unix.ENOSYS {
		return false, "no pidfd_getfd system call (Linux 5.6+)"
	}
	return true, "pidfd_getfd present"
}

// userfaultfd(2) and its API handshake (linux/userfaultfd.h).
const (
	uffdAPI            = 0xAA
	uffdioAPI          = 0xC018AA3F // _IOWR(0xAA, 0x3F, struct uffdio_api)
	uffdUserModeOnly   = 1          // UFFD_USER_MODE_ONLY
	uffdFeatureWPAsync = 1 << 15    // UFFD_FEATURE_WP_ASYNC
)

type uffdioAPIArg struct{ api, features, ioctls uint64 }

// uffdFeatures opens a userfaultfd and returns the features the kernel
// offers.
func uffdFeatures() (uint64, error) {
	fd, _, e := unix.Syscall(unix.SYS_USERFAULTFD, unix.O_CLOEXEC|unix.O_NONBLOCK, 0, 0)
	if e == unix.EPERM {
		// Unprivileged use may be limited to user-mode faults.
		fd, _, e = unix.Syscall(unix.SYS_USERFAULTFD, unix.O_CLOEXEC|unix.O_NONBLOCK|uffdUserModeOnly, 0, 0)
	}
	if e != 0 {
		return 0, e
	}
	defer unix.Close(int(fd))
	a := uffdioAPIArg{api: uffdAPI}
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, fd, uffdioAPI, uintptr(unsafe.Pointer(&a))); e != 0 {
		return 0, fmt.Errorf("UFFDIO_API: %w", e)
	}
	return a.features, nil
}

func probeUserfaultfd() (bool, string) {
	f, err := uffdFeatures()
	switch {
	case errors.Is(err, unix.ENOSYS):
		return false, "no userfaultfd system call (CONFIG_USERFAULTFD)"
	case errors.Is(err, unix.EPERM):
		return false, "userfaultfd not permitted (vm.unprivileged_userfaultfd=0 and no CAP_SYS_PTRACE)"
	case err != nil:
		return false, "userfaultfd: " + err.Error()
	}
	return true, fmt.Sprintf("userfaultfd, features %#x", f)
}

func probeUffdWPAsync() (bool, string) {
	f, err := uffdFeatures()
	if err != nil {
		return false, "no userfaultfd: " + err.Error()
	}
	if f&uffdFeatureWPAsync == 0 {
		return false, "userfaultfd without UFFD_FEATURE_WP_ASYNC (Linux 6.7+)"
	}
	return true, "UFFD_FEATURE_WP_ASYNC offered"
}

// pagemapScan is PAGEMAP_SCAN, _IOWR('f', 16, struct pm_scan_arg) (96
// bytes).
const pagemapScan = 0xC0606610

// probePagemapScan: PAGEMAP_SCAN with a zero-sized argument fails with
// EINVAL where the ioctl exists (ENOTTY where not).
func probePagemapScan() (bool, string) {
	f, err := os.Open("/proc/self/pagemap")
	if err != nil {
		return false, "open /proc/self/pagemap: " + err.Error()
	}
	defer f.Close()
	var arg [96]byte // size 0: refused
	_, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), pagemapScan, uintptr(unsafe.Pointer(&arg[0])))
	if e == unix.ENOTTY {
		return false, "no PAGEMAP_SCAN ioctl (Linux 6.7+)"
	}
	return true, "PAGEMAP_SCAN ioctl on /proc/PID/pagemap"
}

func probeTCPRepair() (bool, string) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return false, "tcp socket: " + err.Error()
	}
	defer unix.Close(fd)
	if err := unix.SetsockoptInt(fd, unix.SOL_TCP, unix.TCP_REPAIR, 1); err != nil {
		if errors.Is(err, unix.EPERM) {
			return false, "TCP_REPAIR not permitted (needs CAP_NET_ADMIN)"
		}
		return false, "TCP_REPAIR: " + err.Error()
	}
	return true, "TCP_REPAIR socket option"
}

func probeFUSE() (bool, string) {
	fs, _ := os.ReadFile("/proc/filesystems")
	if !strings.Contains(string(fs), "\tfuse\n") {
		return false, "no fuse file system (modprobe fuse)"
	}
	f, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0)
	if err != nil {
		return false, "/dev/fuse: " + err.Error()
	}
	f.Close()
	return true, "/dev/fuse opens"
}

func probePtraceScope() (bool, string) {
	b, err := os.ReadFile("/proc/sys/kernel/yama/ptrace_scope")
	if errors.Is(err, os.ErrNotExist) {
		return true, "no Yama: classic ptrace permissions"
	}
	if err != nil {
		return false, "ptrace_scope: " + err.Error()
	}
	scope := strings.TrimSpace(string(b))
	switch scope {
	case "0":
		return true, "kernel.yama.ptrace_scope = 0"
	case "1", "2":
		if hasCap(unix.CAP_SYS_PTRACE) {
			return true, "kernel.yama.ptrace_scope = " + scope + ", with CAP_SYS_PTRACE"
		}
		return false, "kernel.yama.ptrace_scope = " + scope + " without CAP_SYS_PTRACE: only descendants can be traced"
	default:
		return false, "kernel.yama.ptrace_scope = " + scope + ": no ptrace attach at all"
	}
}

// effectiveCaps returns the CapEff mask of this process.
func effectiveCaps() uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "CapEff:"); ok {
			m, _ := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return m
		}
	}
	return 0
}

func hasCap(c int) bool { return effectiveCaps()&(1<<uint(c)) != 0 }

func probeCap(c int, name string) func() (bool, string) {
	return func() (bool, string) {
		if hasCap(c) {
			return true, name + " in the effective set"
		}
		return false, "no " + name + " in the effective set"
	}
}
