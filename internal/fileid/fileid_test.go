package fileid

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestOpenSame: a file's ID read through an fd and through /proc agree;
// OpenSame opens the file while the path leads to it, and refuses a file
// put in its place, a symlink to it, and a directory.
func TestOpenSame(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f")
	if err := os.WriteFile(path, []byte("one"), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	id, err := Of(int(f.Fd()))
	if err == ErrNoHandle {
		t.Skipf("%s: %v", dir, err)
	}
	if err != nil {
		t.Fatal(err)
	}
	viaProc, err := OfFD(os.Getpid(), int(f.Fd()))
	if err != nil || viaProc != id {
		t.Fatalf("OfFD = %v, %v; Of = %v", viaProc, err, id)
	}
	fd, err := OpenSame(unix.AT_FDCWD, path, 0, unix.O_RDONLY, id)
	if err != nil {
		t.Fatalf("OpenSame of the same file: %v", err)
	}
	unix.Close(fd)

	link := filepath.Join(dir, "link")
	if err := os.Symlink(path, link); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenSame(unix.AT_FDCWD, link, 0, unix.O_RDONLY, id); err == nil || !strings.Contains(err.Error(), "is not a regular file (mode 120777)") {
		t.Errorf("OpenSame of a symlink: %v", err)
	}
	dirLink := filepath.Join(t.TempDir(), "d")
	if err := os.Symlink(dir, dirLink); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenSame(unix.AT_FDCWD, filepath.Join(dirLink, "f"), 0, unix.O_RDONLY, id); err == nil || !strings.Contains(err.Error(), "without symlinks") {
		t.Errorf("OpenSame through a symlinked directory: %v", err)
	}
	sub := filepath.Join(dir, "sub")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenSame(unix.AT_FDCWD, sub, 0, unix.O_RDONLY, id); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("OpenSame of a directory: %v", err)
	}
	// Replaced at its path by another file.
	other := filepath.Join(dir, "other")
	if err := os.WriteFile(other, []byte("two"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(other, path); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenSame(unix.AT_FDCWD, path, 0, unix.O_RDONLY, id); err == nil || !strings.Contains(err.Error(), "is not the file the task had open: it is another file") {
		t.Errorf("OpenSame of a replaced file: %v", err)
	}
	// Same inode number, another handle: a forged or stale record.
	again, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	now, err := Of(int(again.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	now.Handle = "1:00"
	if _, err := OpenSame(unix.AT_FDCWD, path, 0, unix.O_RDONLY, now); err == nil || !strings.Contains(err.Error(), "another file in the same inode") {
		t.Errorf("OpenSame with another handle: %v", err)
	}
	if _, err := OpenSame(unix.AT_FDCWD, path, 0, unix.O_RDONLY, ID{Dev: now.Dev, Ino: now.Ino}); err == nil || !strings.Contains(err.Error(), "records no file handle") {
		t.Errorf("OpenSame without a handle recorded: %v", err)
	}
}

// TestOpenInRoot: a path beneath root is resolved in it (an absolute
// symlink stays inside); a path outside it from "/".
func TestOpenInRoot(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "etc", "x"), []byte("inside"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc/x", filepath.Join(root, "l")); err != nil {
		t.Fatal(err)
	}
	fd, err := OpenInRoot(root, filepath.Join(root, "l"), unix.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 16)
	n, _ := unix.Read(fd, b)
	unix.Close(fd)
	if string(b[:n]) != "inside" {
		t.Errorf("the symlink led to %q, want the root's own /etc/x", b[:n])
	}
	fd, err = OpenInRoot(root, "/proc/self/status", unix.O_RDONLY, 0)
	if err != nil {
		t.Errorf("a path outside the root: %v", err)
	} else {
		unix.Close(fd)
	}
}
