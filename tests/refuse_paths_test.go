package tests

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// Restore refusals the dump now makes first, before it seizes anything:
// an executable deleted since the program started (restore opens the
// exe), and a pty of the tree whose slave is the controlling terminal of
// a task whose session is led from outside the tree.

// TestDumpRefusesDeletedExe: the program's executable is removed while it
// runs: the dump refuses, naming the process and the executable, and the
// program runs on unharmed.
func TestDumpRefusesDeletedExe(t *testing.T) {
	dir := sharedTempDir(t, "ckptfs-deletedexe-")
	exe := filepath.Join(dir, "counter")
	b, err := os.ReadFile(filepath.Join(built(t), "counter-static"))
	must(t, err)
	must(t, os.WriteFile(exe, b, 0o755))
	p := startArgv(t, "deleted-exe", []string{exe, "1", "100", "0"})
	must(t, os.Remove(exe))
	store := filepath.Join(t.TempDir(), "store")
	_, errOut, err := ckptfsErr(t, "dump", "-s", store, "--kill", itoa(p.Pid))
	want := "process " + itoa(p.Pid) + ": executable " + exe + " (deleted): restore could not open it"
	if err == nil || !strings.Contains(errOut, want) {
		t.Fatalf("dump of a program whose exe was deleted: %v\n%s\nwant it to say %q", err, errOut, want)
	}
	p.checkUnharmed(t, store)
}

// TestDumpRefusesPtyCttyLedOutside: a session leader outside the dumped
// tree has a pty's slave as controlling terminal; its child, the dumped
// root, holds the pair's master and has the same controlling terminal.
// Restore could not give the child that terminal back (its session leader
// is not restored), so the dump refuses before seizing it: the child is
// left running and untraced, and no checkpoint is made.
func TestDumpRefusesPtyCttyLedOutside(t *testing.T) {
	script := `
import os, fcntl, termios, sys, time
os.setsid()
m, s = os.openpty()
fcntl.ioctl(s, termios.TIOCSCTTY, 0)
pid = os.fork()
if pid == 0:
    os.close(s)
    while True:
        time.sleep(1)
print(pid, os.ttyname(s), flush=True)
time.sleep(3600)
`
	cmd := exec.Command("python3", "-c", script)
	out, err := cmd.StdoutPipe()
	must(t, err)
	must(t, cmd.Start())
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("python: %v", err)
	}
	f := strings.Fields(line)
	child, err := strconv.Atoi(f[0])
	must(t, err)
	t.Cleanup(func() {
		unix.Kill(child, unix.SIGKILL)
		cmd.Process.Kill() // its parent, which does not reap it
		cmd.Wait()
		waitGone(t, child)
	})
	store := filepath.Join(t.TempDir(), "store")
	_, errOut, err := ckptfsErr(t, "dump", "-s", store, "--kill", itoa(child))
	want := "task " + itoa(child) + ": its controlling terminal " + f[1] + " is a pty of the checkpoint but its session " + itoa(cmd.Process.Pid) + " is led from outside it"
	if err == nil || !strings.Contains(errOut, want) {
		t.Fatalf("dump: %v\n%s\nwant it to say %q", err, errOut, want)
	}
	if ok, state := running(child); !ok {
		t.Fatalf("child %d in state %s after the refused dump", child, state)
	}
	status, _ := os.ReadFile("/proc/" + itoa(child) + "/status")
	if !strings.Contains(string(status), "TracerPid:\t0\n") {
		t.Fatalf("child %d still traced after the refused dump", child)
	}
	noCheckpoint(t, store)
}

// TestDumpRefusesWatchTaskCannotAdd: root adds an inotify watch on a
// root-only directory, then drops to uid 65534: restore adds watches as
// the task, which may not read the directory, so the dump refuses first,
// naming the watch, and the program runs on untraced.
func TestDumpRefusesWatchTaskCannotAdd(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: a root-only directory watched, then a drop to uid 65534")
	}
	dir := filepath.Join(sharedTempDir(t, "ckptfs-watch-"), "private")
	must(t, os.Mkdir(dir, 0o700))
	script := `
import ctypes, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
fd = libc.inotify_init1(0)
if fd < 0 or libc.inotify_add_watch(fd, sys.argv[1].encode(), 0x100) < 0:
    sys.exit("inotify: %d" % ctypes.get_errno())
os.setgroups([]); os.setgid(65534); os.setuid(65534)
print("ready", flush=True)
while True:
    time.sleep(1)
`
	cmd := exec.Command("python3", "-c", script, dir)
	out, err := cmd.StdoutPipe()
	must(t, err)
	cmd.SysProcAttr = &unix.SysProcAttr{Setpgid: true}
	must(t, cmd.Start())
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	if line, err := bufio.NewReader(out).ReadString('\n'); err != nil || line != "ready\n" {
		t.Fatalf("python: %q %v", line, err)
	}
	pid := cmd.Process.Pid
	store := filepath.Join(t.TempDir(), "store")
	_, errOut, err := ckptfsErr(t, "dump", "-s", store, "--kill", itoa(pid))
	want := "inotify watch 1 on " + dir + ": restore could not add it as uid 65534: permission denied"
	if err == nil || !strings.Contains(errOut, want) {
		t.Fatalf("dump: %v\n%s\nwant it to say %q", err, errOut, want)
	}
	if ok, state := running(pid); !ok {
		t.Fatalf("pid %d in state %s after the refused dump", pid, state)
	}
	status, _ := os.ReadFile("/proc/" + itoa(pid) + "/status")
	if !strings.Contains(string(status), "TracerPid:\t0\n") {
		t.Fatalf("pid %d still traced after the refused dump", pid)
	}
	noCheckpoint(t, store)
}
