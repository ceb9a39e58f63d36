package tests

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Restores into pid namespaces (restore --pidns, docs/restore.md, *Pid
// namespaces*): copies of a checkpoint run with their recorded pids while
// the original still runs, and trees dumped inside a pid namespace come
// back with their inner pids.

func needRoot(t *testing.T) {
	t.Helper()
	if os.Getuid() != 0 {
		t.Skip("needs root: pid and mount namespaces, clone3 with set_tid")
	}
}

// startAppending starts argv with stdout and stderr appended to a file (a
// restored copy appends its own lines to it too), stdin /dev/null, in a
// process group of its own, and waits for its first tick. The group is
// killed when the test ends.
func startAppending(t *testing.T, name string, argv []string) *program {
	t.Helper()
	out := filepath.Join(t.TempDir(), name+".out")
	f, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	devnull, _ := os.Open(os.DevNull)
	defer devnull.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = devnull, f, f
	cmd.SysProcAttr = &unix.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &program{Name: name, Cmd: cmd, Out: out, Pid: cmd.Process.Pid}
	t.Cleanup(p.kill)
	// Its descendants too (sh's children outlive sh): the whole group,
	// before p.kill reaps p.
	t.Cleanup(func() { unix.Kill(-p.Pid, unix.SIGKILL) })
	p.waitTicks(t, 1)
	return p
}

// copyTicks waits until n tick numbers were printed twice: by the original
// and by a restored copy, which goes on from the checkpoint's tick and
// prints the same pid (its pid in its namespace).
func (p *program) copyTicks(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		seen := map[string]int{}
		twice := 0
		for _, l := range p.ticks() {
			f := strings.Fields(l)
			if len(f) >= 4 {
				if seen[f[3]]++; seen[f[3]] == 2 {
					twice++
				}
			}
		}
		if twice >= n {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	b, _ := os.ReadFile(p.Out)
	t.Fatalf("%s: no %d ticks from the restored copy in 20s; output:\n%s", p.Name, n, b)
}

// checkTicks fails unless every tick line is a good one (checkHealthy
// for output that has other lines too).
func (p *program) checkTicks(t *testing.T) {
	t.Helper()
	for _, l := range p.ticks() {
		if !strings.HasSuffix(l, " ok") {
			b, _ := os.ReadFile(p.Out)
			t.Fatalf("%s printed %q; output:\n%s", p.Name, l, b)
		}
	}
}

// nsCopy is a tree restored into a pid namespace.
type nsCopy struct {
	root int // the root's pid outside
	init int // the namespace's init outside; 0: the root is pid 1
}

// restoreNS runs `ckptfs restore --pidfile F flags... dir`, checks that the
// printed pid and the pidfile agree, and kills the namespace at the end.
// The test process is a child subreaper: the init, orphaned when restore
// exits, is its child (waitInit).
func restoreNS(t *testing.T, dir string, flags ...string) nsCopy {
	t.Helper()
	unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
	t.Cleanup(func() { unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0) })
	pidfile := filepath.Join(t.TempDir(), "pid")
	args := append(append([]string{"restore", "--pidfile", pidfile}, flags...), dir)
	out, errOut, err := ckptfsErr(t, args...)
	if err != nil {
		t.Fatalf("ckptfs %s: %v\n%s%s", strings.Join(args, " "), err, out, errOut)
	}
	return nsCopyOf(t, lastLine(out), pidfile)
}

func nsCopyOf(t *testing.T, printed, pidfile string) nsCopy {
	t.Helper()
	root, err := strconv.Atoi(printed)
	if err != nil {
		t.Fatalf("restore printed %q", printed)
	}
	if b, _ := os.ReadFile(pidfile); strings.TrimSpace(string(b)) != printed {
		t.Fatalf("pidfile holds %q, restore printed %q", b, printed)
	}
	c := nsCopy{root: root}
	if ids := nsPids(t, root, root); ids[len(ids)-1] != 1 {
		c.init = statusInt(t, root, "PPid")
		if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", c.init)); string(comm) != "ckptfs-init\n" {
			t.Fatalf("the root's parent %d is %q, not the namespace's init", c.init, comm)
		}
	}
	t.Cleanup(func() {
		top := c.init
		if top == 0 {
			top = c.root
		}
		unix.Kill(top, unix.SIGKILL) // pid 1: the whole namespace goes
		waitGone(t, top)
		waitGone(t, c.root)
	})
	return c
}

// waitInit waits for the copy's init and returns its exit code.
func (c nsCopy) waitInit(t *testing.T) int {
	t.Helper()
	var ws unix.WaitStatus
	if _, err := unix.Wait4(c.init, &ws, 0, nil); err != nil {
		t.Fatalf("wait for init %d: %v", c.init, err)
	}
	if !ws.Exited() {
		t.Fatalf("init %d ended with status %#x, want an exit", c.init, uint32(ws))
	}
	return ws.ExitStatus()
}

// nsPids returns /proc/<pid>/task/<tid>/status NSpid.
func nsPids(t *testing.T, pid, tid int) []int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/status", pid, tid))
	if err != nil {
		t.Fatal(err)
	}
	var ids []int
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "NSpid:"); ok {
			for _, f := range strings.Fields(v) {
				n, _ := strconv.Atoi(f)
				ids = append(ids, n)
			}
		}
	}
	if len(ids) == 0 {
		t.Fatalf("task %d: no NSpid", tid)
	}
	return ids
}

func statusInt(t *testing.T, pid int, key string) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, key+":"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	t.Fatalf("pid %d: no %s in status", pid, key)
	return 0
}

// children returns the child processes of pid (outer pids).
func children(pid int) []int {
	return treePids(pid)[1:]
}

// checkInnerPids checks that every task of the copy rooted at root has,
// inside its namespace, the pid of the original's task (original: the
// original's pids as its tasks see them, in the order of treePids). With
// threads (an original in the test's namespace), so are its threads' ids.
func checkInnerPids(t *testing.T, root int, original []int, threads bool) {
	t.Helper()
	got := treePids(root)
	if len(got) != len(original) {
		t.Fatalf("copy has %d processes %v, the original %d %v", len(got), got, len(original), original)
	}
	for i, pid := range got {
		ids := nsPids(t, pid, pid)
		if len(ids) != 2 || ids[1] != original[i] {
			t.Errorf("copy's task %d has NSpid %v, want [%d %d]", pid, ids, pid, original[i])
		}
		if !threads {
			continue
		}
		tids, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		otids, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", original[i]))
		if len(tids) != len(otids) {
			t.Errorf("copy's task %d has %d threads, the original %d", pid, len(tids), len(otids))
			continue
		}
		for j, e := range tids {
			tid, _ := strconv.Atoi(e.Name())
			if ids := nsPids(t, pid, tid); strconv.Itoa(ids[1]) != otids[j].Name() {
				t.Errorf("copy's thread %d has NSpid %v, the original's thread is %s", tid, ids, otids[j].Name())
			}
		}
	}
}

// dumpLive dumps the tree of pid (it keeps running) into a mounted store
// and returns the checkpoint's directory in the mount.
func dumpLive(t *testing.T, m *mountedStore, pid int) string {
	t.Helper()
	id := lastLine(ckptfs(t, "dump", "-s", m.store, itoa(pid)))
	return filepath.Join(m.mnt, id)
}

// TestRestorePidNS restores self-checking programs with --pidns while the
// original runs: each copy gets its recorded pids and tids inside, goes on
// counting with healthy memory next to the original, and its init passes
// SIGTERM on and the root's exit code out. A plain restore of the same
// checkpoint is refused, naming the holder of the pid and --pidns.
func TestRestorePidNS(t *testing.T) {
	needRoot(t)
	dir := built(t)
	m := mountStore(t, filepath.Join(t.TempDir(), "store"))

	t.Run("counter", func(t *testing.T) {
		p := startAppending(t, "counter", []string{filepath.Join(dir, "counter-pthreads"), "4", "100", "3"})
		ckpt := dumpLive(t, m, p.Pid)
		_, errOut, err := ckptfsErr(t, "restore", ckpt)
		want := fmt.Sprintf("pid %d is still in use by counter-pthread", p.Pid)
		if err == nil || !strings.Contains(errOut, want) || !strings.Contains(errOut, "--pidns") {
			t.Fatalf("plain restore while the original runs: %v\n%s\nwant %q and --pidns", err, errOut, want)
		}
		c := restoreNS(t, ckpt, "--pidns")
		checkInnerPids(t, c.root, []int{p.Pid}, true)
		p.copyTicks(t, 3)
		p.checkHealthy(t)
		// SIGTERM to the init reaches the root, which dies of it.
		if err := unix.Kill(c.init, unix.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if code := c.waitInit(t); code != 128+int(unix.SIGTERM) {
			t.Fatalf("init exited %d after SIGTERM, want %d", code, 128+int(unix.SIGTERM))
		}
		p.waitTicks(t, 2) // the original goes on
		p.checkHealthy(t)
	})

	t.Run("pidtree", func(t *testing.T) {
		p := startAppending(t, "pidtree", []string{buildProg(t, "pidtree"), "100"})
		orig := treePids(p.Pid)
		c := restoreNS(t, dumpLive(t, m, p.Pid), "--pidns")
		checkInnerPids(t, c.root, orig, true)
		p.copyTicks(t, 3)
		p.checkHealthy(t)
		// The copy's child dies: the copy's parent reaps it by its inner
		// pid and exits 7, and so does the init.
		kids := children(c.root)
		if err := unix.Kill(kids[0], unix.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if code := c.waitInit(t); code != 7 {
			t.Fatalf("init exited %d, want the root's 7", code)
		}
		b, _ := os.ReadFile(p.Out)
		if want := fmt.Sprintf("pidtree %d child %d exited %d\n", orig[0], orig[1], unix.SIGTERM); !strings.Contains(string(b), want) {
			t.Fatalf("no %q in the output:\n%s", want, b)
		}
		p.waitTicks(t, 2) // the original's child lives on
		p.checkTicks(t)
	})

	t.Run("orphans", func(t *testing.T) {
		// sh waits for pidtree, whose child is orphaned when pidtree is
		// killed in the copy: the copy's init must reap it when it ends.
		p := startAppending(t, "pidtree", []string{"sh", "-c", `"$0" 100; exec sleep 1000`, buildProg(t, "pidtree")})
		orig := treePids(p.Pid)
		c := restoreNS(t, dumpLive(t, m, p.Pid), "--pidns")
		checkInnerPids(t, c.root, orig, true)
		tree := treePids(c.root)
		if len(tree) != 3 {
			t.Fatalf("copy %v, want sh, pidtree and its child", tree)
		}
		if err := unix.Kill(tree[1], unix.SIGKILL); err != nil {
			t.Fatal(err)
		}
		waitGone(t, tree[2]) // reaped by the copy's init, not left a zombie
		if ok, state := running(c.init); !ok {
			t.Fatalf("init in state %s", state)
		}
		p.waitTicks(t, 2) // the original goes on
		p.checkTicks(t)   // (the copy's sh reported its child Killed)
	})

	t.Run("forktree", func(t *testing.T) {
		p := startAppending(t, "forktree", []string{buildProg(t, "forktree"), "4"})
		orig := treePids(p.Pid)
		c := restoreNS(t, dumpLive(t, m, p.Pid), "--pidns")
		checkInnerPids(t, c.root, orig, true)
		p.copyTicks(t, 3)
		p.checkHealthy(t)
	})
}

// TestRestorePidNSUnshared dumps programs living in a pid namespace of
// their own (unshare -pf --mount-proc) and restores them, without --pidns,
// into a new namespace with the same inner pids, while the originals run:
// the namespace's init itself (pid 1 inside), and a tree below an init
// that is not dumped (ours stands in). Trees restore cannot rebuild are
// refused at dump time: one spanning two namespaces, a nested namespace.
func TestRestorePidNSUnshared(t *testing.T) {
	needRoot(t)
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("no unshare (util-linux)")
	}
	m := mountStore(t, filepath.Join(t.TempDir(), "store"))
	pidtree := buildProg(t, "pidtree")
	// inside returns the first process of p's tree that is levels pid
	// namespaces below the test's, waiting for unshare to fork it. It is
	// killed when the test ends (killing unshare does not end it), and so
	// is its namespace when it is its init.
	inside := func(t *testing.T, p *program, levels int) int {
		t.Helper()
		unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) // to reap it once unshare is gone
		t.Cleanup(func() { unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0) })
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			for _, pid := range treePids(p.Pid) {
				if len(nsPids(t, pid, pid)) == levels+1 {
					t.Cleanup(func() {
						unix.Kill(pid, unix.SIGKILL)
						waitGone(t, pid)
					})
					return pid
				}
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Fatalf("no process of the tree %d pid namespaces below", levels)
		return 0
	}

	t.Run("init", func(t *testing.T) {
		p := startAppending(t, "pidtree", []string{"unshare", "-pf", "--mount-proc", pidtree, "100"})
		nsInit := inside(t, p, 1)
		orig := []int{1, 2} // pidtree and its child, inside
		ckpt := dumpLive(t, m, nsInit)
		if b, _ := os.ReadFile(filepath.Join(ckpt, "tree")); !strings.Contains(string(b), fmt.Sprintf("(%d) nspid=%d,1 ", nsInit, nsInit)) {
			t.Fatalf("tree:\n%s", b)
		}
		c := restoreNS(t, ckpt)
		if c.init != 0 {
			t.Fatalf("the root is not pid 1 of its namespace")
		}
		checkInnerPids(t, c.root, orig, false)
		p.copyTicks(t, 3)
		p.checkHealthy(t)
	})

	t.Run("below-init", func(t *testing.T) {
		p := startAppending(t, "pidtree", []string{"unshare", "-pf", "--mount-proc", "sh", "-c", `"$0" 100 & wait`, pidtree})
		sh := inside(t, p, 1)
		// sh waits for pidtree, which has forked its child once it ticks.
		kids := children(sh)
		if len(kids) != 2 {
			t.Fatalf("sh %d has descendants %v, want pidtree and its child", sh, kids)
		}
		root := kids[0]
		inner := []int{nsPids(t, root, root)[1]}
		inner = append(inner, nsPids(t, children(root)[0], children(root)[0])[1])
		c := restoreNS(t, dumpLive(t, m, root))
		checkInnerPids(t, c.root, inner, false)
		p.copyTicks(t, 3)
		p.checkHealthy(t)
	})

	t.Run("refused", func(t *testing.T) {
		p := startAppending(t, "spans", []string{"unshare", "-pf", "--mount-proc", pidtree, "100"})
		inside(t, p, 1)
		_, errOut, err := ckptfsErr(t, "dump", "-s", m.store, itoa(p.Pid))
		if err == nil || !strings.Contains(errOut, "spans pid namespaces") {
			t.Fatalf("dump of unshare and its namespace: %v\n%s", err, errOut)
		}
		p.checkHealthy(t)
		n := startAppending(t, "nested", []string{"unshare", "-pf", "unshare", "-pf", "--mount-proc", pidtree, "100"})
		inside(t, n, 1) // the inner unshare: killed last
		deep := inside(t, n, 2)
		_, errOut, err = ckptfsErr(t, "dump", "-s", m.store, itoa(deep))
		if err == nil || !strings.Contains(errOut, "nested pid namespaces are not restored") {
			t.Fatalf("dump of a nested namespace: %v\n%s", err, errOut)
		}
		n.checkHealthy(t)
	})
}

// TestRestorePidNSProcessGroups restores the session/group tree of
// TestRestoreProcessGroups with --pidns while the original runs: inside
// its namespace every task of the copy has the original's pgid and sid.
func TestRestorePidNSProcessGroups(t *testing.T) {
	needRoot(t)
	bin := buildProg(t, "session")
	out := filepath.Join(t.TempDir(), "groups.out")
	f, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command(bin, "groups")
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &unix.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &program{Name: "session-groups", Cmd: cmd, Out: out, Pid: cmd.Process.Pid}
	t.Cleanup(p.kill)
	p.waitTicks(t, 14)
	pids := treePids(p.Pid)
	t.Cleanup(func() {
		for _, pid := range pids {
			unix.Kill(pid, unix.SIGKILL)
		}
	})
	m := mountStore(t, filepath.Join(t.TempDir(), "store"))
	c := restoreNS(t, dumpLive(t, m, p.Pid), "--pidns")
	copies := treePids(c.root)
	if len(copies) != len(pids) {
		t.Fatalf("copy %v, original %v", copies, pids)
	}
	for i, pid := range copies {
		want := readSessionStat(t, pids[i])
		pgid, sid := nsLast(t, pid, "NSpgid"), nsLast(t, pid, "NSsid")
		if pgid != want.PGID || sid != want.SID {
			t.Errorf("copy of task %d: pgid %d sid %d inside, want %d %d", pids[i], pgid, sid, want.PGID, want.SID)
		}
	}
	p.waitTicks(t, 14)
	p.checkHealthy(t)
}

// nsLast returns the innermost id of a status line such as NSpgid.
func nsLast(t *testing.T, pid int, key string) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, key+":"); ok {
			f := strings.Fields(v)
			n, _ := strconv.Atoi(f[len(f)-1])
			return n
		}
	}
	t.Fatalf("pid %d: no %s", pid, key)
	return 0
}
