package restorer

import (
	"strconv"

	"golang.org/x/sys/unix"
)

var sysNames = map[uintptr]string{
	unix.SYS_MMAP: "mmap", unix.SYS_MUNMAP: "munmap", unix.SYS_MREMAP: "mremap",
	unix.SYS_MPROTECT: "mprotect", unix.SYS_MADVISE: "madvise", unix.SYS_OPENAT: "openat",
	unix.SYS_CLOSE: "close", unix.SYS_DUP3: "dup3", unix.SYS_LSEEK: "lseek",
	unix.SYS_PRCTL: "prctl", unix.SYS_CLONE3: "clone3", unix.SYS_CHDIR: "chdir", unix.SYS_FCHDIR: "fchdir",
	unix.SYS_CHROOT: "chroot", unix.SYS_UMASK: "umask", unix.SYS_SETSID: "setsid",
	unix.SYS_SETPGID: "setpgid", unix.SYS_RT_SIGACTION: "rt_sigaction", unix.SYS_RSEQ: "rseq",
	unix.SYS_RT_SIGQUEUEINFO: "rt_sigqueueinfo", unix.SYS_RT_TGSIGQUEUEINFO: "rt_tgsigqueueinfo",
	unix.SYS_SETGROUPS: "setgroups", unix.SYS_SETRESGID: "setresgid", unix.SYS_SETRESUID: "setresuid",
	unix.SYS_EVENTFD2: "eventfd2", unix.SYS_EPOLL_CREATE1: "epoll_create1", unix.SYS_EPOLL_CTL: "epoll_ctl",
	unix.SYS_SIGNALFD4: "signalfd4", unix.SYS_TIMERFD_CREATE: "timerfd_create",
	unix.SYS_TIMERFD_SETTIME: "timerfd_settime", unix.SYS_PIDFD_OPEN: "pidfd_open",
	unix.SYS_PIDFD_GETFD: "pidfd_getfd", unix.SYS_FCNTL: "fcntl", unix.SYS_USERFAULTFD: "userfaultfd",
	unix.SYS_IOCTL: "ioctl", unix.SYS_LISTEN: "listen",
}

func sysName(nr uintptr) string {
	if s, ok := sysNames[nr]; ok {
		return s
	}
	return "syscall " + strconv.Itoa(int(nr))
}

// SyscallName names system call nr as the restorer's errors do ("mmap",
// or "syscall N" for one it does not name), for diagnostics logs.
func SyscallName(nr uintptr) string { return sysName(nr) }
