package seccomp

import (
	"errors"
	"os"
	"os/exec"
	"runtime"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TestMatchesKernel installs two filters that both make getppid fail, with
// different errnos, in a child process and checks that the kernel's answer
// is the one Action gives (the newest filter wins a tie).
func TestMatchesKernel(t *testing.T) {
	filters := [][]byte{deny(unix.SYS_GETPPID, unix.EPERM), deny(unix.SYS_GETPPID, unix.EACCES)}
	if os.Getenv("CKPTFS_SECCOMP_CHILD") == "1" {
		runtime.LockOSThread()
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			os.Exit(100)
		}
		for _, f := range filters {
			fprog := struct {
				len    uint16
				_      [6]byte
				filter *byte
			}{len: uint16(len(f) / insnSize), filter: &f[0]}
			if _, _, e := unix.RawSyscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, 0, uintptr(unsafe.Pointer(&fprog))); e != 0 {
				os.Exit(101)
			}
		}
		_, _, e := unix.RawSyscall(unix.SYS_GETPPID, 0, 0, 0)
		os.Exit(int(e))
	}
	cmd := exec.Command(os.Args[0], "-test.run", "^TestMatchesKernel$")
	cmd.Env = append(os.Environ(), "CKPTFS_SECCOMP_CHILD=1")
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("child: %v (want it to exit with getppid's errno)", err)
	}
	want, err := Action(filters, call(unix.SYS_GETPPID))
	if err != nil {
		t.Fatal(err)
	}
	if got := ee.ExitCode(); uint32(got) != want&unix.SECCOMP_RET_DATA || got >= 100 {
		t.Fatalf("kernel: getppid errno %d, Action says %#x", got, want)
	}
}
