package tests

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ckptfs/ckptfs/internal/proc"
	"golang.org/x/sys/unix"
)

// treePids lists pid and its descendants (/proc children lists). A
// child is listed by the thread that forked it, not the main thread (a Go
// program forks from whichever thread runs the goroutine): every
// thread's list is read.
func treePids(pid int) []int {
	pids := []int{pid}
	for i := 0; i < len(pids); i++ {
		kids, _ := proc.Children(pids[i]) // gone meanwhile: none
		pids = append(pids, kids...)
	}
	return pids
}

// dumpKill dumps the tree of root with --kill into a mounted store, waits
// until every pid of it is free and returns the checkpoint's directory in
// the mount and the pids of the checkpoint's tasks: root first, then in
// the order the tree listed them before the dump, then those it did not
// list.
//
// The tree may change between that listing and the seize (a shell loop
// forks a command per line, and the command exits): a pid listed but not
// checkpointed is dropped (it may belong to another process by the time
// the test kills the restored tree), a task forked after the listing is
// added, and every one is waited for.
func dumpKill(t *testing.T, root int) (string, []int) {
	t.Helper()
	listed := treePids(root)
	m := mountStore(t, filepath.Join(t.TempDir(), "store"))
	id := lastLine(ckptfs(t, "dump", "-s", m.store, "--kill", itoa(root)))
	dir := filepath.Join(m.mnt, id)
	ents, err := os.ReadDir(filepath.Join(dir, "tasks"))
	if err != nil {
		t.Fatal(err)
	}
	inCheckpoint := map[int]bool{}
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			inCheckpoint[pid] = true
		}
	}
	if !inCheckpoint[root] {
		t.Fatalf("checkpoint %s has no task %d", id, root)
	}
	pids := []int{root}
	for _, pid := range listed {
		if pid != root && inCheckpoint[pid] {
			pids = append(pids, pid)
		}
	}
	var late []int
	for pid := range inCheckpoint {
		if pid != root && !slices.Contains(listed, pid) {
			late = append(late, pid)
		}
	}
	slices.Sort(late)
	pids = append(pids, late...)
	for _, pid := range pids {
		waitGone(t, pid)
	}
	return dir, pids
}

// restoreFrom restores the checkpoint directory dir, whose tree has pids
// (root first), with extra restore flags, and kills the restored tree when
// the test ends. The test process becomes a child subreaper so it can reap
// the restored processes.
func restoreFrom(t *testing.T, dir string, pids []int, flags ...string) {
	t.Helper()
	unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
	t.Cleanup(func() { unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0) })
	out, errOut, err := ckptfsErr(t, append(append([]string{"restore"}, flags...), dir)...)
	if err != nil {
		t.Fatalf("restore: %v\n%s%s", err, out, errOut)
	}
	if got := lastLine(out); got != itoa(pids[0]) {
		t.Fatalf("restore printed %q, want %d", got, pids[0])
	}
	t.Cleanup(func() {
		for _, pid := range pids {
			unix.Kill(pid, unix.SIGKILL)
		}
		for _, pid := range pids {
			waitGone(t, pid)
		}
	})
}

// killRestoreFromMount dumps the tree of root with --kill, restores it from
// the mount and returns the restored tree's pids.
func killRestoreFromMount(t *testing.T, root int) []int {
	t.Helper()
	dir, pids := dumpKill(t, root)
	restoreFrom(t, dir, pids)
	return pids
}

// TestRestoreIPC restores programs that hold the fds of issue 5: a parent
// and child over a socketpair and a pipe with data in flight, an
// epoll/eventfd/timerfd loop, MAP_SHARED memory between parent and child,
// and a deleted open file. Each must go on with its data intact.
func TestRestoreIPC(t *testing.T) {
	for _, kind := range []string{"ipc-pair", "ipc-loop", "ipc-shm", "ipc-deleted"} {
		t.Run(kind, func(t *testing.T) {
			p := startProgram(t, kind, 0)
			p.waitTicks(t, 3)
			killRestoreFromMount(t, p.Pid)
			p.waitTicks(t, 4)
			p.checkHealthy(t)
		})
	}
}

// TestRestorePipeline dumps `seq | gzip` mid-stream, kills and restores it;
// the output must decompress to exactly what seq prints.
func TestRestorePipeline(t *testing.T) {
	const n = 20000000
	dir := t.TempDir()
	out := filepath.Join(dir, "out.gz")
	cmd := exec.Command("sh", "-c", fmt.Sprintf("seq 1 %d | gzip -1 > %s", n, out))
	cmd.SysProcAttr = &unix.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	t.Cleanup(func() { unix.Kill(-pid, unix.SIGKILL); cmd.Wait() })
	// Let the pipeline get going, but dump long before it is done.
	for deadline := time.Now().Add(10 * time.Second); ; {
		if st, err := os.Stat(out); err == nil && st.Size() > 64<<10 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("pipeline wrote nothing")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if len(treePids(pid)) != 3 {
		t.Fatalf("pipeline tree %v", treePids(pid))
	}
	pids := killRestoreFromMount(t, pid)
	for _, p := range pids {
		waitGone(t, p) // the restored pipeline runs to its end
	}
	got, err := exec.Command("gzip", "-dc", out).Output()
	if err != nil {
		t.Fatalf("gzip -dc: %v", err)
	}
	want, _ := exec.Command("seq", "1", itoa(n)).Output()
	if !bytes.Equal(got, want) {
		t.Fatalf("restored pipeline output differs: %d bytes, want %d", len(got), len(want))
	}
}

// TestRestoreBashLoop restores a bash loop that forks an external command
// for every line.
func TestRestoreBashLoop(t *testing.T) {
	dir := t.TempDir()
	outPath := filepath.Join(dir, "bash.out")
	f, _ := os.Create(outPath)
	defer f.Close()
	cmd := exec.Command("bash", "-c", `i=0; while true; do i=$((i+1)); echo "bash $$ tick $i $(expr $i \* 2) ok"; sleep 0.1; done`)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &unix.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &program{Name: "bash", Cmd: cmd, Out: outPath, Pid: cmd.Process.Pid}
	t.Cleanup(p.kill)
	p.waitTicks(t, 3)
	killRestoreFromMount(t, p.Pid)
	lines := p.waitTicks(t, 4)
	p.checkHealthy(t)
	// The count goes on without a gap or a restart.
	for i, l := range lines {
		if f := strings.Fields(l); len(f) < 5 || f[3] != itoa(i+1) {
			t.Fatalf("line %d is %q", i+1, l)
		}
	}
}

// TestRestoreSharedAnonUnmappedPages: pages of MAP_SHARED|MAP_ANONYMOUS
// memory that only live in the shared memory object (the child wrote them,
// then dropped its page table entries with MADV_DONTNEED; the parent never
// touched them) come back: after the restore the parent checks them.
func TestRestoreSharedAnonUnmappedPages(t *testing.T) {
	p := startProgram(t, "ipc-shm", 0)
	p.waitTicks(t, 3)
	killRestoreFromMount(t, p.Pid)
	if err := unix.Kill(p.Pid, unix.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	p.waitTicks(t, 3)
	p.checkHealthy(t)
}
