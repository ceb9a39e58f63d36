package tests

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// writeGoModule writes a small module: a main package using two packages
// of its own and a few of the standard library.
func writeGoModule(t *testing.T, dir string) {
	t.Helper()
	files := map[string]string{
		"go.mod":  "module example.com/ckptdemo\n\ngo 1.23\n",
		"main.go": "package main\n\nimport (\n\t\"fmt\"\n\n\t\"example.com/ckptdemo/a\"\n\t\"example.com/ckptdemo/b\"\n)\n\nfunc main() { fmt.Println(a.Sum(100), b.Words(\"x y z\")) }\n",
		"a/a.go":  "package a\n\nfunc Sum(n int) int {\n\ts := 0\n\tfor i := 0; i < n; i++ {\n\t\ts += i * i\n\t}\n\treturn s\n}\n",
		"b/b.go":  "package b\n\nimport (\n\t\"encoding/json\"\n\t\"strings\"\n)\n\nfunc Words(s string) string {\n\tb, _ := json.Marshal(strings.Fields(s))\n\treturn string(b)\n}\n",
	}
	for name, body := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// goBuildCmd is go build -trimpath of the module in dir with a build cache
// of its own (so the standard library is compiled too: the build lasts).
func goBuildCmd(t *testing.T, dir string) *exec.Cmd {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command")
	}
	cmd := exec.Command(goBin, "build", "-trimpath", "-o", "demo", ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOCACHE="+filepath.Join(dir, ".cache"), "CGO_ENABLED=0", "GOFLAGS=", "GOTOOLCHAIN=local", "GOMAXPROCS=2")
	return cmd
}

// startBuild starts cmd, a build writing its output to log, in a process
// group of its own, killed when the test ends.
func startBuild(t *testing.T, cmd *exec.Cmd, log string) *exec.Cmd {
	t.Helper()
	f, err := os.Create(log)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	devnull, _ := os.Open(os.DevNull)
	defer devnull.Close()
	cmd.Stdin, cmd.Stdout, cmd.Stderr = devnull, f, f
	cmd.SysProcAttr = &unix.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	t.Cleanup(func() { unix.Kill(-pid, unix.SIGKILL); cmd.Wait() })
	return cmd
}

// waitComm waits until a process named comm runs in the tree of pid.
func waitComm(t *testing.T, pid int, comm string, timeout time.Duration, failure string) {
	t.Helper()
	running := func() bool {
		for _, q := range treePids(pid) {
			if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", q)); strings.TrimSpace(string(b)) == comm {
				return true
			}
		}
		return false
	}
	for deadline := time.Now().Add(timeout); !running(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: tree %v", failure, treePids(pid))
		}
	}
}

// dumpBuildKill dumps the build tree of cmd with --kill into m, kills
// what is left of its group, reaps cmd, waits until every dumped pid is
// free and returns the checkpoint id and how many processes it holds.
func dumpBuildKill(t *testing.T, m *mountedStore, cmd *exec.Cmd) (string, int) {
	t.Helper()
	pid := cmd.Process.Pid
	id := lastLine(ckptfs(t, "dump", "-s", m.store, "--kill", itoa(pid)))
	unix.Kill(-pid, unix.SIGKILL)
	cmd.Wait()
	tasks, _ := os.ReadDir(filepath.Join(m.mnt, id, "tasks"))
	for _, e := range tasks {
		var q int
		if _, err := fmt.Sscan(e.Name(), &q); err == nil {
			waitGone(t, q)
		}
	}
	return id, len(tasks)
}

// TestRestoreGoBuild: go build of a small module (the go command runs its
// compiles through os/exec, so pidfds) dumped with --kill while a compile
// runs, restored, finishes with a binary byte-identical to a build never
// checkpointed.
func TestRestoreGoBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("two go builds of the standard library (~30 s of CPU): not in -short")
	}
	ref := t.TempDir()
	writeGoModule(t, ref)
	if out, err := goBuildCmd(t, ref).CombinedOutput(); err != nil {
		t.Fatalf("reference build: %v\n%s", err, out)
	}
	dir := t.TempDir()
	writeGoModule(t, dir)
	log := filepath.Join(dir, "build.log")
	cmd := startBuild(t, goBuildCmd(t, dir), log)
	pid := cmd.Process.Pid
	waitComm(t, pid, "compile", 60*time.Second, "go build ran no compile")
	m := mountStore(t, filepath.Join(t.TempDir(), "store"))
	t.Cleanup(func() { unmountSlow(t, m) })
	id, tasks := dumpBuildKill(t, m, cmd)
	pidfds := 0
	infos, _ := filepath.Glob(filepath.Join(m.mnt, id, "tasks", itoa(pid), "fdinfo", "*"))
	for _, p := range infos {
		if b, _ := os.ReadFile(p); fdinfoValue(string(b), "kind") == "pidfd" {
			pidfds++
		}
	}
	t.Logf("dumped %d processes of go build, the go command holding %d pidfds", tasks, pidfds)
	unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
	t.Cleanup(func() { unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0) })
	ckptfs(t, "restore", filepath.Join(m.mnt, id))
	var ws unix.WaitStatus
	if _, err := unix.Wait4(pid, &ws, 0, nil); err != nil {
		t.Fatalf("wait for restored go build %d: %v", pid, err)
	}
	b, _ := os.ReadFile(log)
	if !ws.Exited() || ws.ExitStatus() != 0 {
		t.Fatalf("restored go build: status %v\n%s", ws, b)
	}
	refBin, _ := os.ReadFile(filepath.Join(ref, "demo"))
	bin, err := os.ReadFile(filepath.Join(dir, "demo"))
	if err != nil || !bytes.Equal(refBin, bin) {
		t.Fatalf("binary (%d bytes, %v) differs from the reference build's (%d bytes)\n%s", len(bin), err, len(refBin), b)
	}
}

// unmountSlow unmounts m and gives its daemon a minute to close a store
// holding a checkpoint of go build (hundreds of MiB), rather than the 10 s
// of mountStore's cleanup, which a loaded machine does not always meet.
func unmountSlow(t *testing.T, m *mountedStore) {
	if m.done {
		return
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		err := unix.Unmount(m.mnt, 0)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EBUSY) || time.Now().After(deadline) {
			return // mountStore's cleanup reports it
		}
	}
	m.done = true
	for deadline := time.Now().Add(time.Minute); m.daemon > 0 && processAlive(m.daemon); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Errorf("mount daemon %d still running a minute after umount", m.daemon)
			unix.Kill(m.daemon, unix.SIGKILL)
			break
		}
	}
	os.Remove(m.mnt)
}
