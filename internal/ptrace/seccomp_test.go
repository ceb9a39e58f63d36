//go:build linux && amd64

package ptrace

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"runtime"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Two filters that allow everything: the first installed (LOG) returns at
// once, the second loads the syscall number first.
var testFilters = []Filter{
	{Flags: unix.SECCOMP_FILTER_FLAG_LOG, Prog: []byte{0x06, 0, 0, 0, 0, 0, 0xff, 0x7f}},
	{Prog: []byte{0x20, 0, 0, 0, 0, 0, 0, 0, 0x06, 0, 0, 0, 0, 0, 0xff, 0x7f}},
}

// TestSeccompFilters reads the filters of a child that installed two (in
// every thread, TSYNC) and gets them back oldest first, with their flags.
func TestSeccompFilters(t *testing.T) {
	if os.Getenv("CKPTFS_SECCOMP_CHILD") == "1" {
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			os.Exit(100)
		}
		for _, f := range testFilters {
			fprog := struct {
				len    uint16
				_      [6]byte
				filter *byte
			}{len: uint16(len(f.Prog) / unix.SizeofSockFilter), filter: &f.Prog[0]}
			_, _, e := unix.RawSyscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER,
				uintptr(f.Flags|unix.SECCOMP_FILTER_FLAG_TSYNC), uintptr(unsafe.Pointer(&fprog)))
			if e != 0 {
				os.Exit(101)
			}
		}
		os.Stdout.WriteString("ready\n")
		time.Sleep(time.Minute)
		os.Exit(0)
	}
	if os.Getuid() != 0 {
		t.Skip("PTRACE_SECCOMP_GET_FILTER needs CAP_SYS_ADMIN")
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cmd := exec.Command(os.Args[0], "-test.run", "^TestSeccompFilters$")
	cmd.Env = append(os.Environ(), "CKPTFS_SECCOMP_CHILD=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	pid := cmd.Process.Pid
	if line, err := bufio.NewReader(out).ReadString('\n'); err != nil || line != "ready\n" {
		t.Fatalf("child said %q (%v), not ready", line, err)
	}
	if err := Seize(pid, 0); err != nil {
		t.Fatal(err)
	}
	if err := Interrupt(pid); err != nil {
		t.Fatal(err)
	}
	if _, err := Wait(pid); err != nil {
		t.Fatal(err)
	}
	got, err := SeccompFilters(pid, len(testFilters))
	if err != nil {
		t.Fatal(err)
	}
	for i, f := range testFilters {
		if got[i].Flags != f.Flags || !bytes.Equal(got[i].Prog, f.Prog) {
			t.Errorf("filter %d: got %+v, want %+v", i, got[i], f)
		}
	}
	if n, err := countSeccompFilters(pid); err != nil || n != len(testFilters) {
		t.Errorf("counted %d filters (%v), want %d", n, err, len(testFilters))
	}
	if _, err := SeccompFilters(pid, len(testFilters)+1); err == nil {
		t.Error("a third filter was read")
	}
	if err := SetOptions(pid, unix.PTRACE_O_SUSPEND_SECCOMP); err != nil {
		t.Errorf("suspend seccomp: %v", err)
	}
	if err := Detach(pid, 0); err != nil {
		t.Fatal(err)
	}
}
