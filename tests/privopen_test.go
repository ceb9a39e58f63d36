package tests

import (
	"bytes"
	"github.com/ckptfs/ckptfs/image"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// The tests of issue 16's "no privilege from image contents": a tree is
// restored with the credentials its tasks will have, so it opens only what
// their uid could open, and a non-root user restores only its own tasks.

const nobody = 65534

// privDirs is a directory layout for a uid-65534 program: base (root,
// 0755) holding own/ (65534's: output, socket, its file) and a root-only
// secret file.
type privDirs struct {
	base, own, file, sock, secret string
}

func newPrivDirs(t *testing.T) privDirs {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: runs a program as uid 65534 and restores it")
	}
	base, err := os.MkdirTemp("", "ckptfs-privopen-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	d := privDirs{base: base, own: filepath.Join(base, "own"), secret: filepath.Join(base, "secret")}
	d.file, d.sock = filepath.Join(d.own, "file"), filepath.Join(d.own, "sock")
	must(t, os.Chmod(base, 0o755))
	must(t, os.Mkdir(d.own, 0o755))
	must(t, os.Chown(d.own, nobody, nobody))
	must(t, os.WriteFile(d.file, make([]byte, 8), 0o600))
	must(t, os.Chown(d.file, nobody, nobody))
	must(t, os.WriteFile(d.secret, []byte("root's secret\n"), 0o600))
	return d
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// startNobody starts tests/progs/privopen.c as uid and gid 65534 with no
// supplementary groups, its output in a file of its own.
func startNobody(t *testing.T, d privDirs) *program {
	t.Helper()
	return startNobodyExe(t, d, buildProg(t, "privopen"))
}

func startNobodyExe(t *testing.T, d privDirs, exe string) *program {
	t.Helper()
	out := filepath.Join(d.own, "out")
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	must(t, f.Chown(nobody, nobody))
	devnull, _ := os.Open(os.DevNull)
	defer devnull.Close()
	cmd := exec.Command(exe, d.file, d.sock)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = devnull, f, f
	cmd.SysProcAttr = &unix.SysProcAttr{Setpgid: true,
		Credential: &syscall.Credential{Uid: nobody, Gid: nobody, Groups: []uint32{}}}
	must(t, cmd.Start())
	p := &program{Name: "privopen", Cmd: cmd, Out: out, Pid: cmd.Process.Pid}
	t.Cleanup(p.kill)
	p.waitTicks(t, 2)
	return p
}

// copyCheckpoint copies checkpoint dir with cp -a into a new directory
// under base and returns it.
func copyCheckpoint(t *testing.T, dir, base string) string {
	t.Helper()
	parent, err := os.MkdirTemp(base, "copy-")
	must(t, err)
	must(t, os.Chmod(parent, 0o755))
	to := filepath.Join(parent, "checkpoint")
	if out, err := exec.Command("cp", "-a", dir, to).CombinedOutput(); err != nil {
		t.Fatalf("cp -a: %v\n%s", err, out)
	}
	return to
}

// setTreeValue sets key to value in a "key: value" tree file (status,
// fdinfo/<n>). It writes a plain value; where image/ writes a value quoted
// (paths), this is the one place to write it the same way.
func setTreeValue(t *testing.T, file, key, value string) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	found := false
	for i, l := range lines {
		if k, old, ok := strings.Cut(l, ":"); ok && k == key {
			v := value
			if strings.HasPrefix(strings.TrimSpace(old), `"`) { // free text is quoted (format 2)
				v = image.QuoteText(value)
			}
			lines[i], found = key+": "+v, true
		}
	}
	if !found {
		t.Fatalf("%s has no %s line:\n%s", file, key, b)
	}
	must(t, os.WriteFile(file, []byte(strings.Join(lines, "\n")), 0o644))
}

// noProcess fails if pid exists: a refused restore creates nothing.
func noProcess(t *testing.T, pid int) {
	t.Helper()
	if _, err := os.Stat("/proc/" + itoa(pid)); err == nil {
		b, _ := os.ReadFile("/proc/" + itoa(pid) + "/status")
		t.Fatalf("pid %d exists after a refused restore:\n%s", pid, b)
	}
}

// TestRestoreSymlinkSwapRefused: the file a uid-65534 program held open
// is replaced, between dump --kill and restore, by a symlink to a root-only
// file: restore opens it as uid 65534 and refuses, and creates no process.
func TestRestoreSymlinkSwapRefused(t *testing.T) {
	d := newPrivDirs(t)
	p := startNobody(t, d)
	dir, _ := dumpKill(t, p.Pid)
	p.kill()
	must(t, os.Remove(d.file))
	must(t, os.Symlink(d.secret, d.file))
	_, errOut, err := ckptfsErr(t, "restore", dir)
	if err == nil {
		t.Fatalf("restore of a file swapped for a symlink to a root-only file succeeded")
	}
	want := "task " + itoa(p.Pid) + " fd 3: open " + d.file + " as uid 65534: permission denied"
	if !strings.Contains(errOut, want) {
		t.Fatalf("restore error:\n%s\nwant it to say %q", errOut, want)
	}
	noProcess(t, p.Pid)
	if b, _ := os.ReadFile(d.secret); string(b) != "root's secret\n" {
		t.Fatalf("secret now %q", b)
	}
}

// TestRestoreEditedPathRefused: a cp -a copy of a uid-65534 program's
// checkpoint edited so that fd 1 (its output, open for writing) says
// /tmp/../etc/passwd, or /etc/passwd, is refused; /etc/passwd is untouched.
func TestRestoreEditedPathRefused(t *testing.T) {
	d := newPrivDirs(t)
	p := startNobody(t, d)
	dir, _ := dumpKill(t, p.Pid)
	p.kill()
	before, err := os.ReadFile("/etc/passwd")
	must(t, err)
	var st0 unix.Stat_t
	must(t, unix.Stat("/etc/passwd", &st0))
	for _, tc := range []struct{ path, want string }{
		{"/tmp/../etc/passwd", "fd 1: path \"/tmp/../etc/passwd\" is not absolute and clean"},
		{"/etc/passwd", "task " + itoa(p.Pid) + " fd 1: open /etc/passwd as uid 65534: permission denied"},
	} {
		t.Run(strings.ReplaceAll(tc.path, "/", "_"), func(t *testing.T) {
			cp := copyCheckpoint(t, dir, d.base)
			setTreeValue(t, filepath.Join(cp, "tasks", itoa(p.Pid), "fdinfo", "1"), "path", tc.path)
			_, errOut, err := ckptfsErr(t, "restore", cp)
			if err == nil || !strings.Contains(errOut, tc.want) {
				t.Fatalf("restore: %v\n%s\nwant an error saying %q", err, errOut, tc.want)
			}
			noProcess(t, p.Pid)
			after, _ := os.ReadFile("/etc/passwd")
			var st unix.Stat_t
			must(t, unix.Stat("/etc/passwd", &st))
			if !bytes.Equal(before, after) || st.Mtim != st0.Mtim || st.Ctim != st0.Ctim {
				t.Fatalf("/etc/passwd changed")
			}
		})
	}
}

// TestRestoreNonRootRefusesUID0: a copy of a uid-65534 program's
// checkpoint edited to say uid 0, restored by uid 65534, is refused for
// its credentials before anything is created (a non-root restore cannot
// work here anyway: clone3 set_tid needs CAP_CHECKPOINT_RESTORE; the check
// comes first).
func TestRestoreNonRootRefusesUID0(t *testing.T) {
	d := newPrivDirs(t)
	p := startNobody(t, d)
	dir, _ := dumpKill(t, p.Pid)
	p.kill()
	cp := copyCheckpoint(t, dir, d.base)
	setTreeValue(t, filepath.Join(cp, "tasks", itoa(p.Pid), "status"), "Uid", "0 0 0 0")
	if out, err := exec.Command("chown", "-R", "65534:65534", cp).CombinedOutput(); err != nil {
		t.Fatalf("chown: %v %s", err, out)
	}
	var sock0 unix.Stat_t
	must(t, unix.Lstat(d.sock, &sock0)) // the killed program's socket file
	cmd := exec.Command("setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups",
		filepath.Join(built(t), "ckptfs"), "restore", cp)
	out, err := cmd.CombinedOutput()
	want := "task " + itoa(p.Pid) + ": Uid (real) is 0, but a restore by uid 65534"
	if err == nil || !strings.Contains(string(out), want) {
		t.Fatalf("non-root restore of a uid-0 task: %v\n%s\nwant an error saying %q", err, out, want)
	}
	noProcess(t, p.Pid)
	var st unix.Stat_t
	must(t, unix.Lstat(d.sock, &st))
	if st.Ino != sock0.Ino || st.Ctim != sock0.Ctim {
		t.Fatalf("the refused restore replaced the socket file %s", d.sock)
	}
	// Unedited, the copy passes the credential check; without
	// CAP_CHECKPOINT_RESTORE it then fails cleanly, leaving no process.
	cp2 := copyCheckpoint(t, dir, d.base)
	if out, err := exec.Command("chown", "-R", "65534:65534", cp2).CombinedOutput(); err != nil {
		t.Fatalf("chown: %v %s", err, out)
	}
	out, err = exec.Command("setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups",
		filepath.Join(built(t), "ckptfs"), "restore", cp2).CombinedOutput()
	t.Logf("non-root restore of its own tree: %v: %s", err, out)
	if err == nil {
		t.Cleanup(func() { unix.Kill(p.Pid, unix.SIGKILL); waitGone(t, p.Pid) })
	} else {
		if strings.Contains(string(out), "Uid (") {
			t.Fatalf("its own tree refused for its credentials: %s", out)
		}
		waitGone(t, p.Pid)
	}
}

// TestRestoreAsRootKeepsUID: a restore as root of a uid-65534 program
// gives a uid-65534 process whose files were opened as 65534: its own file
// in a directory only root can write to reopens, and the socket file it
// bound is created by 65534, with its recorded mode.
func TestRestoreAsRootKeepsUID(t *testing.T) {
	d := newPrivDirs(t)
	// Its file in a directory that only root can write to.
	rootDir := filepath.Join(d.base, "rootdir")
	must(t, os.Mkdir(rootDir, 0o755))
	must(t, os.Rename(d.file, filepath.Join(rootDir, "file")))
	d.file = filepath.Join(rootDir, "file")
	p := startNobody(t, d)
	var sock0 unix.Stat_t
	must(t, unix.Lstat(d.sock, &sock0))
	dir, pids := dumpKill(t, p.Pid)
	p.kill()
	restoreFrom(t, dir, pids)
	p.Pid = pids[0]
	p.waitTicks(t, 3)
	p.checkHealthy(t)
	status, err := os.ReadFile("/proc/" + itoa(p.Pid) + "/status")
	must(t, err)
	for _, l := range strings.Split(string(status), "\n") {
		k, v, _ := strings.Cut(l, ":")
		if (k == "Uid" || k == "Gid") && strings.Join(strings.Fields(v), " ") != "65534 65534 65534 65534" {
			t.Errorf("restored %s: %s", k, v)
		}
		if k == "Groups" && strings.TrimSpace(v) != "" {
			t.Errorf("restored Groups: %s", v)
		}
	}
	if l, _ := os.Readlink("/proc/" + itoa(p.Pid) + "/fd/3"); l != d.file {
		t.Errorf("fd 3 -> %s, want %s", l, d.file)
	}
	var st unix.Stat_t
	must(t, unix.Lstat(d.sock, &st))
	if st.Uid != nobody || st.Gid != nobody || st.Mode != sock0.Mode {
		t.Errorf("socket file after restore: owner %d:%d mode %o (was %o), want 65534:65534",
			st.Uid, st.Gid, st.Mode, sock0.Mode)
	}
	// The restored listener is the one bound there (the stale file of the
	// killed one was removed and bound again): a connection goes through.
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	must(t, err)
	defer unix.Close(fd)
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: d.sock}); err != nil {
		t.Errorf("connect to the restored listener %s: %v", d.sock, err)
	} else if cred, err := unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED); err != nil {
		t.Error(err)
	} else if cred.Uid != nobody || cred.Gid != nobody || int(cred.Pid) != p.Pid {
		// The listener's credentials are the task's, not the restorer's.
		t.Errorf("SO_PEERCRED of the restored listener: pid %d uid %d gid %d, want %d 65534 65534", cred.Pid, cred.Uid, cred.Gid, p.Pid)
	}
	p.waitTicks(t, 1)
	p.checkHealthy(t)
}

// TestRestoreSetuidExeGivesNothing: a uid-65534 program whose executable
// is made set-user-ID and set-group-ID root, with file capabilities, between
// dump and restore comes back with exactly its recorded credentials: the
// restorer never execs the tree's executable (the stub is its own memfd
// program) and the exe link grants nothing.
func TestRestoreSetuidExeGivesNothing(t *testing.T) {
	d := newPrivDirs(t)
	exe := filepath.Join(d.base, "privopen-exe")
	b, err := os.ReadFile(buildProg(t, "privopen"))
	must(t, err)
	must(t, os.WriteFile(exe, b, 0o755))
	p := startNobodyExe(t, d, exe)
	dir, pids := dumpKill(t, p.Pid)
	p.kill()
	must(t, os.Chmod(exe, 0o755|os.ModeSetuid|os.ModeSetgid))
	if out, err := exec.Command("setcap", "cap_sys_admin,cap_dac_override+eip", exe).CombinedOutput(); err != nil {
		t.Logf("setcap (file capabilities not tested): %v %s", err, out)
	}
	must(t, os.Chmod(exe, 0o755|os.ModeSetuid|os.ModeSetgid)) // setcap clears set-user-ID
	restoreFrom(t, dir, pids)
	p.Pid = pids[0]
	p.waitTicks(t, 2)
	p.checkHealthy(t)
	if l, _ := os.Readlink("/proc/" + itoa(p.Pid) + "/exe"); l != exe {
		t.Errorf("exe -> %s, want %s", l, exe)
	}
	status, err := os.ReadFile("/proc/" + itoa(p.Pid) + "/status")
	must(t, err)
	for _, l := range strings.Split(string(status), "\n") {
		k, v, _ := strings.Cut(l, ":")
		v = strings.Join(strings.Fields(v), " ")
		switch k {
		case "Uid", "Gid":
			if v != "65534 65534 65534 65534" {
				t.Errorf("restored %s: %s", k, v)
			}
		case "CapInh", "CapPrm", "CapEff", "CapAmb":
			if v != "0000000000000000" {
				t.Errorf("restored %s: %s", k, v)
			}
		}
	}
}
