package tests

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// A process of another user holding a file it could not open itself: a
// daemon started as root opens its log (root's, 0600) and its stdout and
// stderr are a root-owned file, then it drops to uid 65534 (postgres and
// nginx do this). Restore opens such a file with its own credentials only
// if it is the very file the task had open (restorer/privopen.go), and the
// dump refuses first where restore would refuse (dumper/refuse_files.go).

// rootFileProg is tests/progs/rootfile.c running as 65534 with LOG open.
type rootFileProg struct {
	*program
	dir, log string
}

// startRootFile starts rootfile as root, its log in logDir (created, root's
// 0755) under a directory other users can reach; it drops to 65534 itself.
func startRootFile(t *testing.T) rootFileProg {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: the program opens a root-only file, then drops to uid 65534")
	}
	base := sharedTempDir(t, "ckptfs-rootfile-")
	logDir := filepath.Join(base, "logdir")
	must(t, os.Mkdir(logDir, 0o755))
	log := filepath.Join(logDir, "log")
	p := startArgv(t, "rootfile", []string{buildProg(t, "rootfile"), log})
	p.waitTicks(t, 2)
	p.checkHealthy(t)
	var st unix.Stat_t
	must(t, unix.Stat(log, &st))
	if st.Uid != 0 || st.Mode&0o777 != 0o600 {
		t.Fatalf("%s: owner %d mode %o, want root's 0600", log, st.Uid, st.Mode&0o777)
	}
	return rootFileProg{program: p, dir: logDir, log: log}
}

// TestUserRootFileRestored: dumped with --kill and restored, the process is
// uid 65534 again, its fd 3 is the same root-owned log (and its stdout the
// same root-owned file), and it goes on appending and checking every line.
func TestUserRootFileRestored(t *testing.T) {
	p := startRootFile(t)
	var log0 unix.Stat_t
	must(t, unix.Stat(p.log, &log0))
	dir, pids := dumpKill(t, p.Pid)
	p.kill()
	restoreFrom(t, dir, pids)
	p.Pid = pids[0]
	p.waitTicks(t, 3)
	p.checkHealthy(t)
	status, err := os.ReadFile("/proc/" + itoa(p.Pid) + "/status")
	must(t, err)
	if !strings.Contains(string(status), "Uid:\t65534\t65534\t65534\t65534\n") {
		t.Fatalf("restored process is not uid 65534:\n%s", status)
	}
	var fd3, fd1 unix.Stat_t
	must(t, unix.Stat("/proc/"+itoa(p.Pid)+"/fd/3", &fd3))
	must(t, unix.Stat("/proc/"+itoa(p.Pid)+"/fd/1", &fd1))
	if fd3.Ino != log0.Ino || fd3.Dev != log0.Dev {
		t.Fatalf("restored fd 3 is inode %d, the log is %d", fd3.Ino, log0.Ino)
	}
	var out unix.Stat_t
	must(t, unix.Stat(p.Out, &out))
	if fd1.Ino != out.Ino || out.Uid != 0 {
		t.Fatalf("restored fd 1 is inode %d (owner of %s: %d), want %d", fd1.Ino, p.Out, out.Uid, out.Ino)
	}
	b, err := os.ReadFile(p.log)
	must(t, err)
	if n := strings.Count(string(b), "\n"); n < len(p.ticks()) {
		t.Fatalf("the log has %d lines, the program printed %d ticks", n, len(p.ticks()))
	}
}

// TestUserRootFileReplacedRefused: the log is replaced by another
// root-owned file at the same path between dump --kill and restore:
// restore refuses, naming the fd and why, and creates no process; neither
// file is touched.
func TestUserRootFileReplacedRefused(t *testing.T) {
	p := startRootFile(t)
	dir, _ := dumpKill(t, p.Pid)
	p.kill()
	other := filepath.Join(p.dir, "other")
	must(t, os.WriteFile(other, []byte("another file\n"), 0o600))
	old := filepath.Join(p.dir, "old")
	must(t, os.Rename(p.log, old))
	must(t, os.Rename(other, p.log))
	before, err := os.ReadFile(old)
	must(t, err)
	_, errOut, err := ckptfsErr(t, "restore", dir)
	if err == nil {
		t.Fatalf("restore with the log replaced succeeded")
	}
	for _, want := range []string{
		"task " + itoa(p.Pid) + " fd 3: open " + p.log + " as uid 65534: permission denied",
		p.log + " is not the file the task had open: it is another file",
		"--inherit-fd fd[N]:" + p.log,
	} {
		if !strings.Contains(errOut, want) {
			t.Fatalf("restore error:\n%s\nwant it to say %q", errOut, want)
		}
	}
	noProcess(t, p.Pid)
	if b, _ := os.ReadFile(p.log); string(b) != "another file\n" {
		t.Fatalf("the new file now holds %q", b)
	}
	if after, _ := os.ReadFile(old); string(after) != string(before) {
		t.Fatalf("the old log changed")
	}
}

// TestUserRootFileCopyRefused: a cp -a copy of the checkpoint is not
// restored: its record of the file's identity could have been written by
// anyone who can write the copy. Handed in with --inherit-fd, the file is
// the user's own choice, and the copy restores.
func TestUserRootFileCopyRefused(t *testing.T) {
	p := startRootFile(t)
	dir, pids := dumpKill(t, p.Pid)
	p.kill()
	cp := copyCheckpoint(t, dir, filepath.Dir(p.dir))
	_, errOut, err := ckptfsErr(t, "restore", cp)
	if err == nil || !strings.Contains(errOut, "was not read from its store") {
		t.Fatalf("restore of a copy: %v\n%s\nwant a refusal saying the checkpoint was not read from its store", err, errOut)
	}
	noProcess(t, p.Pid)

	// Handed in: fd 9 of restore on the log, fd 10 on the output.
	log, err := os.OpenFile(p.log, os.O_RDWR|os.O_APPEND, 0)
	must(t, err)
	defer log.Close()
	out, err := os.OpenFile(p.Out, os.O_WRONLY|os.O_APPEND, 0)
	must(t, err)
	defer out.Close()
	unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
	t.Cleanup(func() { unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0) })
	cmd := exec.Command(filepath.Join(built(t), "ckptfs"), "restore",
		"--inherit-fd", "fd[3]:"+p.log, "--inherit-fd", "fd[4]:"+p.Out, cp)
	cmd.ExtraFiles = []*os.File{log, out}
	b, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("restore of the copy with the files handed in: %v\n%s", err, b)
	}
	t.Cleanup(func() { unix.Kill(pids[0], unix.SIGKILL); waitGone(t, pids[0]) })
	p.Pid = pids[0]
	p.waitTicks(t, 3)
	p.checkHealthy(t)
}

// TestUserRootFileDumpRefused: the log's directory is covered by a tmpfs
// holding another root-owned "log" before the dump: restore could open
// neither the path as uid 65534 nor, as the same file, with its own
// credentials, so the dump refuses before seizing anything, naming pid,
// fd, path and why, and the program runs on unharmed.
func TestUserRootFileDumpRefused(t *testing.T) {
	p := startRootFile(t)
	if err := unix.Mount("ckptfs-test", p.dir, "tmpfs", 0, "mode=0755"); err != nil {
		t.Skipf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(p.dir, unix.MNT_DETACH) })
	must(t, os.WriteFile(p.log, []byte("another file\n"), 0o600))
	store := filepath.Join(t.TempDir(), "store")
	_, errOut, err := ckptfsErr(t, "dump", "-s", store, "--kill", itoa(p.Pid))
	if err == nil {
		t.Fatalf("dump of a task holding a covered root-only file succeeded")
	}
	for _, want := range []string{
		"process " + itoa(p.Pid) + " fd 3: " + p.log + ": restore could not reopen it: open as uid 65534: permission denied",
		"is not the file the task had open: it is another file",
		"dump with --inherit-file " + p.log + " and hand the file to the restore: restore --inherit-fd fd[N]:" + p.log,
	} {
		if !strings.Contains(errOut, want) {
			t.Fatalf("dump error:\n%s\nwant it to say %q", errOut, want)
		}
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 3 {
		t.Fatalf("dump exit status %v, want 3 (refused)", err)
	}
	p.checkUnharmed(t, store)

	// Promised to be handed in: the dump succeeds, and the restore, given
	// the very file (reached through the program's own fd, under the
	// tmpfs), brings the program back on it.
	hidden, err := os.OpenFile("/proc/"+itoa(p.Pid)+"/fd/3", os.O_RDWR|os.O_APPEND, 0)
	must(t, err)
	defer hidden.Close()
	m := mountStore(t, filepath.Join(t.TempDir(), "store"))
	id := lastLine(ckptfs(t, "dump", "-s", m.store, "--kill", "--inherit-file", p.log, itoa(p.Pid)))
	pid := p.Pid
	p.kill()
	dir := filepath.Join(m.mnt, id)
	if _, errOut, err := ckptfsErr(t, "restore", dir); err == nil || !strings.Contains(errOut, "task "+itoa(pid)+" fd 3: open "+p.log+" as uid 65534") {
		t.Fatalf("restore without the file handed in: %v\n%s", err, errOut)
	}
	noProcess(t, pid)
	unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
	t.Cleanup(func() { unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0) })
	cmd := exec.Command(filepath.Join(built(t), "ckptfs"), "restore", "--inherit-fd", "fd[3]:"+p.log, dir)
	cmd.ExtraFiles = []*os.File{hidden}
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("restore with the file handed in: %v\n%s", err, b)
	}
	t.Cleanup(func() { unix.Kill(pid, unix.SIGKILL); waitGone(t, pid) })
	p.Pid = pid
	p.waitTicks(t, 3)
	p.checkHealthy(t)
}
