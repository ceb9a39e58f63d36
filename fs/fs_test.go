package fs

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/image"
)

var t0 = time.Date(2025, 11, 25, 12, 0, 0, 0, time.UTC)

func TestTree(t *testing.T) {
	repo := newMemRepo()
	testCheckpoint(repo, "c1", "first", t0, 2)
	testCheckpoint(repo, "c2", "second", t0.Add(time.Minute), 1)
	srv := mountRepo(t, repo)
	mnt := srv.Mountpoint()

	out, err := exec.Command("ls", "-R", mnt).CombinedOutput()
	if err != nil {
		t.Fatalf("ls -R: %v\n%s", err, out)
	}
	for _, want := range []string{"c1", "c2", "latest", "by-name", "tasks", "100", "101", "vmas", "400000-440000", "pages", "status"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("ls -R lacks %q:\n%s", want, out)
		}
	}
	info, err := exec.Command("cat", filepath.Join(mnt, "c1", "info")).Output()
	if err != nil {
		t.Fatal(err)
	}
	if want := "id: c1\nname: first\ntasks: 2\n"; string(info) != want {
		t.Errorf("info = %q, want %q", info, want)
	}
	if l, err := os.Readlink(filepath.Join(mnt, "latest")); err != nil || l != "c2" {
		t.Errorf("latest -> %q, %v; want c2", l, err)
	}
	if l, err := os.Readlink(filepath.Join(mnt, "by-name", "first")); err != nil || l != "../c1" {
		t.Errorf("by-name/first -> %q, %v", l, err)
	}
	// Through the symlinks.
	if b, err := os.ReadFile(filepath.Join(mnt, "by-name", "first", "tasks", "101", "status")); err != nil || !bytes.Contains(b, []byte("comm: t1")) {
		t.Errorf("by-name/first/tasks/101/status = %q, %v", b, err)
	}
	if b, err := os.ReadFile(filepath.Join(mnt, "latest", "info")); err != nil || !bytes.Contains(b, []byte("id: c2")) {
		t.Errorf("latest/info = %q, %v", b, err)
	}
	if l, err := os.Readlink(filepath.Join(mnt, "c1", "tasks", "100", "exe")); err != nil || l != "/bin/true" {
		t.Errorf("exe -> %q, %v", l, err)
	}
	st, err := os.Stat(filepath.Join(mnt, "c1", "tasks", "100", "status"))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode() != 0o444 || !st.ModTime().Equal(t0) {
		t.Errorf("status: mode %v mtime %v", st.Mode(), st.ModTime())
	}
	st, err = os.Stat(filepath.Join(mnt, "c1", "tasks"))
	if err != nil || st.Mode() != os.ModeDir|0o555 {
		t.Errorf("tasks: %v %v", st.Mode(), err)
	}
	if _, err := os.Stat(filepath.Join(mnt, "nope")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stat nope: %v", err)
	}
	// The mount is read-only, named ckptfs.
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	var line string
	for _, l := range strings.Split(string(mi), "\n") {
		if f := strings.Fields(l); len(f) > 4 && f[4] == mnt {
			line = l
		}
	}
	if !strings.Contains(line, " ro,") || !strings.Contains(line, "fuse.ckptfs ckptfs") {
		t.Errorf("mountinfo: %q", line)
	}
}

func TestPagesContent(t *testing.T) {
	repo := newMemRepo()
	_, want := testCheckpoint(repo, "c1", "", t0, 1)
	srv := mountRepo(t, repo)
	p := filepath.Join(srv.Mountpoint(), "c1", "tasks", "100", "vmas", "400000-440000", "pages")

	exp := filepath.Join(t.TempDir(), "want")
	if err := os.WriteFile(exp, want, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("cmp", exp, p).CombinedOutput(); err != nil {
		t.Fatalf("cmp: %v\n%s", err, out)
	}
	got, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("ReadFile differs")
	}
	if !bytes.Equal(got[10*4096:20*4096], make([]byte, 10*4096)) {
		t.Fatal("hole is not zero")
	}
	// Unaligned reads.
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 10000)
	for _, off := range []int64{1, 4095, 9*4096 + 100, 63*4096 + 5} {
		n, _ := f.ReadAt(buf, off)
		if !bytes.Equal(buf[:n], want[off:min(int(off)+len(buf), len(want))]) {
			t.Errorf("ReadAt %d differs", off)
		}
	}
}

func TestSeekDataHole(t *testing.T) {
	repo := newMemRepo()
	testCheckpoint(repo, "c1", "", t0, 1)
	srv := mountRepo(t, repo)
	f, err := os.Open(filepath.Join(srv.Mountpoint(), "c1", "tasks", "100", "vmas", "400000-440000", "pages"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fd := int(f.Fd())
	const pg = 4096
	for _, c := range []struct {
		off    int64
		whence int
		want   int64
		err    error
	}{
		{0, unix.SEEK_DATA, 0, nil},
		{0, unix.SEEK_HOLE, 10 * pg, nil},
		{5 * pg, unix.SEEK_HOLE, 10 * pg, nil},
		{10 * pg, unix.SEEK_DATA, 20 * pg, nil},
		{12*pg + 7, unix.SEEK_DATA, 20 * pg, nil},
		{20 * pg, unix.SEEK_HOLE, 64 * pg, nil},
		{21*pg + 1, unix.SEEK_DATA, 21*pg + 1, nil},
		{64 * pg, unix.SEEK_DATA, 0, unix.ENXIO},
		{64 * pg, unix.SEEK_HOLE, 0, unix.ENXIO},
	} {
		got, err := unix.Seek(fd, c.off, c.whence)
		if !errors.Is(err, c.err) || (err == nil && got != c.want) {
			t.Errorf("seek(%d, %d) = %d, %v; want %d, %v", c.off, c.whence, got, err, c.want, c.err)
		}
	}
	// A text file is all data.
	g, err := os.Open(filepath.Join(srv.Mountpoint(), "c1", "info"))
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if h, err := unix.Seek(int(g.Fd()), 0, unix.SEEK_HOLE); err != nil || h == 0 {
		t.Errorf("SEEK_HOLE on info = %d, %v", h, err)
	}
}

func TestReadOnly(t *testing.T) {
	repo := newMemRepo()
	testCheckpoint(repo, "c1", "", t0, 1)
	srv := mountRepo(t, repo)
	mnt := srv.Mountpoint()
	ro := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, syscall.EROFS) && !errors.Is(err, syscall.EACCES) && !errors.Is(err, syscall.EPERM) {
			t.Errorf("%s: %v, want EROFS or EACCES", what, err)
		}
	}
	ro("write info", os.WriteFile(filepath.Join(mnt, "c1", "info"), []byte("x"), 0o644))
	_, err := os.OpenFile(filepath.Join(mnt, "c1", "info"), os.O_RDWR, 0)
	ro("open rw", err)
	ro("create", os.WriteFile(filepath.Join(mnt, "c1", "new"), []byte("x"), 0o644))
	ro("mkdir", os.Mkdir(filepath.Join(mnt, "d"), 0o755))
	ro("remove", os.Remove(filepath.Join(mnt, "c1", "info")))
	ro("rename", os.Rename(filepath.Join(mnt, "c1"), filepath.Join(mnt, "c9")))
	ro("chmod", os.Chmod(filepath.Join(mnt, "c1", "info"), 0o777))
	ro("symlink", os.Symlink("x", filepath.Join(mnt, "l")))
}

// waitFor polls cond for up to a second.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 1s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestLiveNotify(t *testing.T) {
	repo := newMemRepo()
	testCheckpoint(repo, "c1", "n", t0, 1)
	srv := mountRepo(t, repo)
	mnt := srv.Mountpoint()

	// Prime the kernel's caches, including a negative lookup of c2.
	if _, err := os.Stat(filepath.Join(mnt, "c2")); err == nil {
		t.Fatal("c2 exists early")
	}
	if l, _ := os.Readlink(filepath.Join(mnt, "latest")); l != "c1" {
		t.Fatalf("latest = %q", l)
	}
	os.ReadDir(mnt)

	testCheckpoint(repo, "c2", "n", t0.Add(time.Hour), 1)
	srv.Notify()
	waitFor(t, "c2 appears", func() bool {
		_, err := os.Stat(filepath.Join(mnt, "c2", "info"))
		return err == nil
	})
	waitFor(t, "latest -> c2", func() bool {
		l, _ := os.Readlink(filepath.Join(mnt, "latest"))
		return l == "c2"
	})
	waitFor(t, "by-name/n -> c2", func() bool {
		l, _ := os.Readlink(filepath.Join(mnt, "by-name", "n"))
		return l == "../c2"
	})
	waitFor(t, "readdir lists c2", func() bool {
		es, _ := os.ReadDir(mnt)
		for _, e := range es {
			if e.Name() == "c2" {
				return true
			}
		}
		return false
	})

	repo.remove("c2")
	srv.Notify()
	waitFor(t, "c2 vanishes", func() bool {
		_, err := os.Stat(filepath.Join(mnt, "c2"))
		return errors.Is(err, os.ErrNotExist)
	})
	waitFor(t, "latest -> c1", func() bool {
		l, _ := os.Readlink(filepath.Join(mnt, "latest"))
		return l == "c1"
	})
}

func TestMountpointErrors(t *testing.T) {
	repo := newMemRepo()
	dir := t.TempDir()
	file := filepath.Join(dir, "f")
	os.WriteFile(file, nil, 0o644)
	for _, c := range []struct{ mnt, want string }{
		{filepath.Join(dir, "missing"), "does not exist"},
		{file, "not a directory"},
	} {
		_, err := MountRepo(repo, c.mnt, Options{Render: fakeRender})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("mount on %s: %v, want %q", c.mnt, err, c.want)
		}
	}
	srv := mountRepo(t, repo)
	_, err := MountRepo(repo, srv.Mountpoint(), Options{Render: fakeRender})
	if err == nil || !strings.Contains(err.Error(), "already a mount point") {
		t.Errorf("second mount: %v", err)
	}
}

func TestUnmountCleans(t *testing.T) {
	repo := newMemRepo()
	testCheckpoint(repo, "c1", "", t0, 1)
	mnt := t.TempDir()
	srv, err := MountRepo(repo, mnt, Options{Render: fakeRender})
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	srv.onClose = func() error { closed = true; return nil }
	done := make(chan error, 1)
	go func() { done <- srv.Wait() }()
	if _, err := os.Stat(filepath.Join(mnt, "c1", "info")); err != nil {
		t.Fatal(err)
	}
	// An outside umount ends Wait.
	if err := unix.Unmount(mnt, 0); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Wait did not return after umount")
	}
	if !closed {
		t.Error("store not released")
	}
	if m, _ := isMountpoint(mnt); m {
		t.Error("still mounted")
	}
}

// A page the store cannot give reads as EIO, and the mount logs why.
func TestReadErrorEIO(t *testing.T) {
	repo := newMemRepo()
	c, _ := testCheckpoint(repo, "c1", "", t0, 1)
	c.Tasks[0].VMAs[0].Pages[3].Hash = image.Hash{1} // not stored
	var mu sync.Mutex
	var logged []string
	mnt := t.TempDir()
	srv, err := MountRepo(repo, mnt, Options{Render: fakeRender, Logf: func(f string, a ...any) {
		mu.Lock()
		logged = append(logged, fmt.Sprintf(f, a...))
		mu.Unlock()
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Unmount() })
	_, err = os.ReadFile(filepath.Join(mnt, "c1", "tasks", "100", "vmas", "400000-440000", "pages"))
	if !errors.Is(err, syscall.EIO) {
		t.Errorf("read: %v, want EIO", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(logged) == 0 || !strings.Contains(logged[0], "missing") {
		t.Errorf("logged %q", logged)
	}
}

// A busy mount is detached at once and goes away when its last user
// lets go.
func TestUnmountBusy(t *testing.T) {
	repo := newMemRepo()
	testCheckpoint(repo, "c1", "", t0, 1)
	mnt := t.TempDir()
	srv, err := MountRepo(repo, mnt, Options{Render: fakeRender})
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(mnt, "c1", "info"))
	if err != nil {
		srv.Unmount()
		t.Fatal(err)
	}
	closed := make(chan struct{})
	go func() {
		time.Sleep(200 * time.Millisecond)
		// Still readable while detached.
		if _, err := io.ReadAll(f); err != nil {
			t.Errorf("read while detached: %v", err)
		}
		f.Close()
		close(closed)
	}()
	err = srv.Unmount()
	if !errors.Is(err, ErrBusy) {
		t.Errorf("unmount busy: %v", err)
	}
	if m, _ := isMountpoint(mnt); m {
		t.Error("still in the tree after a busy unmount")
	}
	if err := srv.Wait(); err != nil {
		t.Error(err)
	}
	<-closed
	if m, _ := isMountpoint(mnt); m {
		t.Error("still mounted")
	}
}

// Renders dropped from the cache come back with the same inodes.
func TestRenderEviction(t *testing.T) {
	old := keepRendered
	keepRendered = 1
	t.Cleanup(func() { keepRendered = old })
	repo := newMemRepo()
	testCheckpoint(repo, "c1", "", t0, 1)
	testCheckpoint(repo, "c2", "", t0.Add(time.Second), 1)
	srv := mountRepo(t, repo)
	mnt := srv.Mountpoint()
	ino := func(p string) uint64 {
		st, err := os.Stat(filepath.Join(mnt, p))
		if err != nil {
			t.Fatal(err)
		}
		return st.Sys().(*syscall.Stat_t).Ino
	}
	i1 := ino("c1/tasks/100/status")
	ino("c2/tasks/100/status")
	srv.root.mu.Lock()
	kept := len(srv.root.rendered)
	srv.root.mu.Unlock()
	if kept != 1 {
		t.Errorf("%d renders kept", kept)
	}
	// Drop the kernel's entries so that lookups reach us again.
	srv.root.NotifyEntry("c1")
	if got := ino("c1/tasks/100/status"); got != i1 {
		t.Errorf("inode %d after a re-render, was %d", got, i1)
	}
	if b, err := os.ReadFile(filepath.Join(mnt, "c1", "tasks", "100", "status")); err != nil || !bytes.Contains(b, []byte("pid: 100")) {
		t.Errorf("status after re-render: %q %v", b, err)
	}
}
