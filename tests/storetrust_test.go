package tests

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// The tests of the store's and the mount's privacy and of the commands
// that must do no harm (docs/security.md).

// asNobodyCmd returns argv run as uid/gid 65534 with no groups, or skips.
func asNobodyCmd(t *testing.T, argv ...string) *exec.Cmd {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a command as another uid")
	}
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Skip("needs setpriv(1) to run a command as another uid")
	}
	return exec.Command(setpriv, append([]string{"--reuid", "65534", "--regid", "65534", "--clear-groups"}, argv...)...)
}

// ckptfsProcesses returns the pids of ckptfs processes whose arguments
// name arg.
func ckptfsProcesses(t *testing.T, arg string) []int {
	t.Helper()
	bin := filepath.Join(built(t), "ckptfs")
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		var pid int
		if _, err := fmt.Sscan(e.Name(), &pid); err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		if len(args) == 0 || args[0] != bin {
			continue
		}
		for _, a := range args[1:] {
			if a == arg {
				pids = append(pids, pid)
				break
			}
		}
	}
	return pids
}

// Every spelling of --daemon starts exactly one daemon.
func TestMountDaemonSpellings(t *testing.T) {
	for _, spelling := range [][]string{{"-ds"}, {"--daemon=1"}, {"-d"}, {"--daemon"}, {"--daemon=true"}, {"-d=true"}, {"-d", "-s"}} {
		t.Run(strings.Join(spelling, " "), func(t *testing.T) {
			store := filepath.Join(t.TempDir(), "store")
			if err := os.Mkdir(store, 0o700); err != nil {
				t.Fatal(err)
			}
			mnt := t.TempDir()
			args := append([]string{"mount"}, spelling...)
			if spelling[len(spelling)-1] != "-ds" && spelling[len(spelling)-1] != "-s" {
				args = append(args, "-s")
			}
			args = append(args, store, mnt)
			_, errOut, err := ckptfsErr(t, args...)
			if err != nil {
				t.Fatalf("ckptfs %v: %v\n%s", args, err, errOut)
			}
			m := &mountedStore{store: store, mnt: mnt}
			if _, err := fmt.Sscanf(strings.TrimSpace(errOut), "ckptfs: mounted (daemon pid %d)", &m.daemon); err != nil {
				t.Errorf("mount said %q", errOut)
			}
			defer m.unmount(t)
			pids := ckptfsProcesses(t, mnt)
			if len(pids) != 1 || pids[0] != m.daemon {
				t.Fatalf("ckptfs %v: ckptfs processes serving %s: %v, want only the daemon %d", args, mnt, pids, m.daemon)
			}
			if _, err := os.Stat(filepath.Join(mnt, "by-name")); err != nil {
				t.Fatalf("mount not served: %v", err)
			}
		})
	}
}

// ls, stats, verify, gc and rm on a directory that is not a store say so
// and create nothing.
func TestStoreCommandsRefuseNonStore(t *testing.T) {
	empty := t.TempDir()
	missing := filepath.Join(t.TempDir(), "missing")
	for _, dir := range []string{empty, missing} {
		for _, c := range [][]string{{"ls"}, {"stats"}, {"verify"}, {"gc"}, {"rm", "x"}} {
			args := append([]string{c[0], "-s", dir}, c[1:]...)
			_, errOut, err := ckptfsErr(t, args...)
			if err == nil || !strings.Contains(errOut, "not a ckptfs store") {
				t.Fatalf("ckptfs %v: %v, stderr %q; want a refusal saying it is not a store", args, err, errOut)
			}
		}
	}
	if ents, _ := os.ReadDir(empty); len(ents) != 0 {
		t.Fatalf("the commands left %d files in an empty directory", len(ents))
	}
	if _, err := os.Stat(missing); !os.IsNotExist(err) {
		t.Fatalf("the commands created %s", missing)
	}
}

// dump into a missing store says it creates one; into a directory of
// another user it refuses and leaves the program alone.
func TestDumpNewStoreAndForeignStore(t *testing.T) {
	p := startProgram(t, "static", 1)
	store := filepath.Join(t.TempDir(), "store")
	_, errOut, err := ckptfsErr(t, "dump", "-s", store, itoa(p.Pid))
	if err != nil || !strings.Contains(errOut, "creating new store at "+store) {
		t.Fatalf("first dump: %v\n%s", err, errOut)
	}
	_, errOut, err = ckptfsErr(t, "dump", "-s", store, itoa(p.Pid))
	if err != nil || strings.Contains(errOut, "creating new store") {
		t.Fatalf("second dump: %v\n%s", err, errOut)
	}
	st, err := os.Stat(store)
	if err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("store mode %v %v", st.Mode(), err)
	}
	ents, _ := os.ReadDir(store)
	for _, e := range ents {
		fi, _ := e.Info()
		if fi.Mode().IsRegular() && fi.Mode().Perm()&0o077 != 0 {
			t.Errorf("store file %s has mode %v", e.Name(), fi.Mode())
		}
	}

	if os.Geteuid() != 0 {
		return
	}
	theirs := t.TempDir()
	if err := os.Chown(theirs, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	_, errOut, err = ckptfsErr(t, "dump", "-s", theirs, itoa(p.Pid))
	if err == nil || !strings.Contains(errOut, "belongs to another user") {
		t.Fatalf("dump into nobody's directory: %v\n%s", err, errOut)
	}
	if ents, _ := os.ReadDir(theirs); len(ents) != 0 {
		t.Fatalf("the refused dump left %d files in nobody's directory", len(ents))
	}
	p.checkUnharmed(t, store+"-none")
}

// Another uid can read neither the mount nor the store.
func TestMountAndStorePrivate(t *testing.T) {
	p := startProgram(t, "static", 1)
	pub, err := os.MkdirTemp("", "ckptfs-public-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(pub)
	os.Chmod(pub, 0o755)
	store := filepath.Join(pub, "store")
	id := lastLine(ckptfs(t, "dump", "-s", store, itoa(p.Pid)))
	m := mountStore(t, store)
	// (The mount's root hides the mode of the directory under it: what
	// keeps other users out is the mount itself, no allow_other.)
	info := filepath.Join(m.mnt, id, "info")
	if _, err := os.ReadFile(info); err != nil {
		t.Fatalf("root cannot read its own mount: %v", err)
	}
	pages := filepath.Join(m.mnt, id, "tasks", itoa(p.Pid), "environ")
	for _, argv := range [][]string{{"cat", info}, {"cat", pages}, {"ls", m.mnt}} {
		out, err := asNobodyCmd(t, argv...).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "ermission denied") {
			t.Fatalf("uid 65534 %v: %v\n%s", argv, err, out)
		}
	}
	// The store: nobody can neither use it through ckptfs nor read it.
	out, err := asNobodyCmd(t, filepath.Join(built(t), "ckptfs"), "ls", "-s", store).CombinedOutput()
	if err == nil {
		t.Fatalf("uid 65534 listed root's store:\n%s", out)
	}
	t.Logf("uid 65534 ckptfs ls: %s", out)
	if out, err := asNobodyCmd(t, "ls", store).CombinedOutput(); err == nil {
		t.Fatalf("uid 65534 listed root's store directory:\n%s", out)
	}
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(store, "ckptfs.sock"), &st); err != nil || st.Mode&0o077 != 0 {
		t.Fatalf("store socket mode %o, %v", st.Mode, err)
	}
}
