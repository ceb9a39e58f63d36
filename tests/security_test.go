package tests

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestRestorePrivilegesCLI is issue 16 tried as a user would: a root
// program that dropped every capability, and one in a seccomp sandbox
// (no_new_privs, getppid denied), are dumped with --kill, restored from the
// mount and from a `cp -a` copy, and come back exactly as limited: the
// same Cap*, NoNewPrivs, Seccomp and Seccomp_filters lines, and the
// sandboxed program still sees getppid fail (it checks each tick).
func TestRestorePrivilegesCLI(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root: the programs drop capabilities a root process has")
	}
	exe := buildProg(t, "security", "-pthread")
	dir := t.TempDir()
	store, mnt := filepath.Join(dir, "store"), filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	os.Mkdir(store, 0o700)
	out, err := exec.Command(filepath.Join(built(t), "ckptfs"), "mount", "--daemon", "-s", store, mnt).CombinedOutput()
	if err != nil {
		t.Fatalf("mount: %v\n%s", err, out)
	}
	var daemon int
	if i := strings.Index(string(out), "daemon pid "); i >= 0 {
		fmt.Sscanf(string(out[i:]), "daemon pid %d", &daemon)
	}
	t.Cleanup(func() {
		exec.Command("umount", mnt).Run()
		for i := 0; i < 100 && daemon > 0 && unix.Kill(daemon, 0) == nil; i++ {
			time.Sleep(20 * time.Millisecond)
		}
		if daemon > 0 && unix.Kill(daemon, 0) == nil {
			unix.Kill(daemon, unix.SIGKILL)
		}
	})
	unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
	defer unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
	for _, mode := range []string{"caps", "seccomp"} {
		t.Run(mode, func(t *testing.T) {
			p := startArgv(t, "security-"+mode, []string{exe, mode})
			before := privStatus(t, p.Pid)
			id := lastLine(ckptfs(t, "dump", "-s", store, "--kill", itoa(p.Pid)))
			waitGone(t, p.Pid)
			copyDir := filepath.Join(t.TempDir(), "copy")
			if out, err := exec.Command("cp", "-a", filepath.Join(mnt, id), copyDir).CombinedOutput(); err != nil {
				t.Fatalf("cp -a: %v\n%s", err, out)
			}
			for _, from := range []string{filepath.Join(mnt, id), copyDir} {
				if got := lastLine(ckptfs(t, "restore", from)); got != itoa(p.Pid) {
					t.Fatalf("restore %s printed %q", from, got)
				}
				if after := privStatus(t, p.Pid); after != before {
					t.Errorf("restored from %s:\n%s\nbefore the dump:\n%s", from, after, before)
				}
				p.waitTicks(t, 2)
				p.checkHealthy(t)
				unix.Kill(p.Pid, unix.SIGKILL)
				var ws unix.WaitStatus
				unix.Wait4(p.Pid, &ws, 0, nil)
				waitGone(t, p.Pid)
			}
		})
	}
}

// privStatus returns the lines of /proc/<pid>/status that say what the
// process may do.
func privStatus(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	var keep []string
	for _, l := range strings.Split(string(b), "\n") {
		for _, k := range []string{"Uid:", "Cap", "NoNewPrivs:", "Seccomp:", "Seccomp_filters:"} {
			if strings.HasPrefix(l, k) {
				keep = append(keep, l)
			}
		}
	}
	return strings.Join(keep, "\n")
}
