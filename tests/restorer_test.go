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

// TestRestoreCLI is the whole user flow for every program kind: dump
// --kill into a store served by a FUSE mount, restore from the mount, kill
// the restored process, restore again from a `cp -a` copy of the
// checkpoint. Each time the program must continue its count with its pid,
// healthy memory and its output appended to the same file.
func TestRestoreCLI(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root")
	}
	for _, kind := range progKinds {
		t.Run(kind, func(t *testing.T) {
			p := startProgram(t, kind, 16)
			p.waitTicks(t, 1)
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
					t.Logf("mount daemon %d still runs 2s after umount: killed", daemon)
					unix.Kill(daemon, unix.SIGKILL)
				}
			})
			id := lastLine(ckptfs(t, "dump", "-s", store, "--kill", itoa(p.Pid)))
			waitGone(t, p.Pid)
			if kind == "go" {
				extras, _ := filepath.Glob(filepath.Join(mnt, id, "tasks", "*", "threads", "*", "extras"))
				if len(extras) == 0 {
					t.Skip("the dumper records no threads/<tid>/extras (sigaltstack): a restored Go program hangs on its first preemption signal (see restorer/extras.go)")
				}
			}
			copyDir := filepath.Join(dir, "copy")
			if out, err := exec.Command("cp", "-a", filepath.Join(mnt, id), copyDir).CombinedOutput(); err != nil {
				t.Fatalf("cp -a: %v\n%s", err, out)
			}
			// A restored process is the child of `ckptfs restore` until
			// that exits, then an orphan: collect it here (pid 1 reaps
			// late on these machines) and reap it once killed.
			unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
			defer unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
			for _, from := range []string{filepath.Join(mnt, id), copyDir} {
				before := len(p.ticks())
				out, log, err := ckptfsErr(t, "restore", "-v", from)
				if err != nil {
					t.Fatalf("restore %s: %v\n%s%s", from, err, out, log)
				}
				// From the mount, page data comes from the store's socket
				// (restorer/pagesource.go); a copy is read from its files.
				if fromStore := strings.Contains(log, "page data from store "+store); fromStore != (from != copyDir) {
					t.Errorf("restore -v %s: page data from the store: %v; log:\n%s", from, fromStore, log)
				}
				if got := lastLine(out); got != itoa(p.Pid) {
					t.Fatalf("restore %s printed %q, want pid %d", from, got, p.Pid)
				}
				lines := p.waitTicks(t, 3)
				p.checkHealthy(t)
				if ok, state := running(p.Pid); !ok {
					t.Fatalf("restored program state %s", state)
				}
				// The count goes on from where the checkpoint was.
				first := lines[before]
				if !strings.Contains(first, " tick ") {
					t.Fatalf("unexpected line %q", first)
				}
				t.Logf("%s: restored from %s, first line %q", kind, from, first)
				unix.Kill(p.Pid, unix.SIGKILL)
				var ws unix.WaitStatus
				unix.Wait4(p.Pid, &ws, 0, nil)
				waitGone(t, p.Pid)
			}
		})
	}
}
