package dumper

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/internal/fscreds"
)

// TestTaskThreadsOnce: the precheck opens each (credentials, root, path,
// flags) once a dump, and the answer for one set of credentials is not
// given to another.
func TestTaskThreadsOnce(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root: the check runs as another uid")
	}
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	secret := filepath.Join(dir, "secret")
	if err := os.WriteFile(secret, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	me, err := fscreds.Current()
	if err != nil {
		t.Fatal(err)
	}
	root := fileHolder{pid: 1, creds: me, root: "/"}
	nobody := fileHolder{pid: 2, creds: fscreds.Creds{UID: 65534, GID: 65534, Groups: []int{}}, root: "/"}
	tt := newTaskThreads()
	defer tt.close()

	for range 3 {
		if err := tt.open(nobody, secret, unix.O_RDONLY); !errors.Is(err, unix.EACCES) {
			t.Fatalf("open %s as uid 65534: %v, want EACCES", secret, err)
		}
		if err := tt.open(root, secret, unix.O_RDONLY); err != nil {
			t.Fatalf("open %s as root, after uid 65534 was refused: %v", secret, err)
		}
	}
	if len(tt.found) != 2 {
		t.Fatalf("%d checks recorded, want 2 (one per set of credentials)", len(tt.found))
	}

	runs := 0
	check := func() error { runs++; return unix.ENOENT }
	k := taskCheck{path: "/p", flags: unix.O_RDONLY}
	for range 2 {
		if err := tt.once(root, k, check); !errors.Is(err, unix.ENOENT) {
			t.Fatalf("once: %v, want the first run's ENOENT", err)
		}
	}
	other := root
	other.root = dir
	tt.once(other, k, check) // another root: checked again
	k.exe = true
	tt.once(root, k, check) // another kind of open: checked again
	if runs != 3 {
		t.Fatalf("check ran %d times, want 3", runs)
	}
}
