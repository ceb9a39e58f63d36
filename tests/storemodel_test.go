package tests

import (
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/image"
	"github.com/ckptfs/ckptfs/restorer"
)

// TestMountStoreModel checks that the model a restore from a mount takes
// from the store (restorer/storemodel.go: the manifest over the store's
// socket, rendered and loaded in memory) is exactly the one image.Load of
// the mounted tree gives, and of a cp -a copy of it, on real checkpoints:
// threads, shared memory (memfd, SysV, shared anonymous), unix sockets and
// pipes, a zombie.
func TestMountStoreModel(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root (ptrace of the programs, FUSE mount)")
	}
	progs := []struct {
		name string
		argv func() []string
	}{
		{"pthreads", nil},
		{"ipc-pair", nil},
		{"ipc-shm", nil},
		{"zombie-files", nil},
		{"shm-memfd", func() []string { return []string{buildProg(t, "shm"), "memfd"} }},
		{"shm-sysv", func() []string { return []string{buildProg(t, "shm"), "sysv", "0"} }},
	}
	store := filepath.Join(t.TempDir(), "store")
	m := mountStore(t, store)
	for _, pr := range progs {
		t.Run(pr.name, func(t *testing.T) {
			var p *program
			if pr.argv != nil {
				p = startArgv(t, pr.name, pr.argv())
			} else {
				p = startProgram(t, pr.name, 4)
			}
			// The program's cleanup kills its pid only: a child that
			// shares the fd table (zombie-files) would wait on its pipe
			// forever under PID 1.
			kids := treePids(p.Pid)[1:]
			t.Cleanup(func() {
				for _, k := range kids {
					unix.Kill(k, unix.SIGKILL)
				}
			})
			id := lastLine(ckptfs(t, "dump", "-s", store, itoa(p.Pid)))
			dir := filepath.Join(m.mnt, id)
			waitVisible(t, dir)
			want, err := image.Load(dir)
			if err != nil {
				t.Fatalf("image.Load(%s): %v", dir, err)
			}
			got, fromStore, err := restorer.LoadTree(dir)
			if err != nil {
				t.Fatalf("restorer.LoadTree(%s): %v", dir, err)
			}
			if !fromStore {
				t.Fatalf("restorer.LoadTree(%s) read the mount's files, not the store", dir)
			}
			compareModels(t, "mount via store", got, want)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("models differ (reflect.DeepEqual) beyond what diffModel shows")
			}
			copyDir := filepath.Join(t.TempDir(), "copy")
			if out, err := exec.Command("cp", "-a", dir, copyDir).CombinedOutput(); err != nil {
				t.Fatalf("cp -a: %v\n%s", err, out)
			}
			fromCopy, fromStore, err := restorer.LoadTree(copyDir)
			if err != nil || fromStore {
				t.Fatalf("restorer.LoadTree(copy): from store %v, %v", fromStore, err)
			}
			compareModels(t, "copy", fromCopy, got)
		})
	}
}

func compareModels(t *testing.T, what string, a, b *image.Checkpoint) {
	t.Helper()
	var diffs []string
	diffModel("Checkpoint", reflect.ValueOf(a).Elem(), reflect.ValueOf(b).Elem(), &diffs)
	for i, d := range diffs {
		if i == 20 {
			t.Errorf("... and %d more differences", len(diffs)-20)
			break
		}
		t.Errorf("%s: %s", what, d)
	}
}
