package fs

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/dedup"
	"github.com/ckptfs/ckptfs/image"
)

// storeCheckpoint writes a checkpoint like testCheckpoint into repo (pages
// first, then Commit) and returns it with the expected content of its
// 64-page vma.
func storeCheckpoint(t testing.TB, repo dedup.Repo, name string, ntasks int) (*image.Checkpoint, []byte) {
	t.Helper()
	mem := newMemRepo()
	c, want := testCheckpoint(mem, "", name, time.Now(), ntasks)
	var hashes []image.Hash
	var pages [][]byte
	for _, tk := range c.Tasks {
		for _, v := range tk.VMAs {
			for i := range v.Pages {
				p := mem.pages[v.Pages[i].Hash]
				v.Pages[i].Hash = dedup.Sum(p)
				hashes = append(hashes, v.Pages[i].Hash)
				pages = append(pages, p)
			}
		}
	}
	if _, err := repo.PutPages(hashes, pages); err != nil {
		t.Fatal(err)
	}
	c.ID = ""
	if err := repo.Commit(c); err != nil {
		t.Fatal(err)
	}
	return c, want
}

// mountStore mounts storeDir in a temporary directory, unmounting at cleanup.
func mountStore(t testing.TB, storeDir string, opts Options) *Server {
	t.Helper()
	srv, err := Mount(storeDir, t.TempDir(), opts)
	if err != nil {
		t.Fatalf("mount: %v", err)
	}
	t.Cleanup(func() {
		if err := srv.Unmount(); err != nil {
			t.Errorf("unmount: %v", err)
			unix.Unmount(srv.Mountpoint(), unix.MNT_DETACH)
		}
	})
	return srv
}

func TestStoreMountLive(t *testing.T) {
	dir := t.TempDir()
	s, err := dedup.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	c1, want := storeCheckpoint(t, s, "one", 2)
	s.Close()

	srv := mountStore(t, dir, Options{})
	mnt := srv.Mountpoint()
	out, err := exec.Command("ls", "-lR", mnt).CombinedOutput()
	if err != nil {
		t.Fatalf("ls -lR: %v\n%s", err, out)
	}
	// A copy of a checkpoint directory is a plain tree.
	cp := filepath.Join(t.TempDir(), "copy")
	if out, err := exec.Command("cp", "-a", filepath.Join(mnt, c1.ID), cp).CombinedOutput(); err != nil {
		t.Fatalf("cp -a: %v\n%s", err, out)
	}
	if out, err := exec.Command("diff", "-r", "--no-dereference", filepath.Join(mnt, c1.ID), cp).CombinedOutput(); err != nil {
		t.Errorf("diff -r mount copy: %v\n%s", err, out)
	}
	for _, w := range []string{c1.ID, "latest", "by-name", "maps", "core", "pages", "regs"} {
		if !strings.Contains(string(out), w) {
			t.Errorf("ls -R lacks %q", w)
		}
	}
	info, err := exec.Command("cat", filepath.Join(mnt, "by-name", "one", "info")).Output()
	if err != nil || !strings.Contains(string(info), c1.ID) {
		t.Errorf("cat info: %q %v", info, err)
	}
	pages := filepath.Join(mnt, "latest", "tasks", "100", "vmas", "400000-440000", "pages")
	exp := filepath.Join(t.TempDir(), "want")
	os.WriteFile(exp, want, 0o644)
	if out, err := exec.Command("cmp", exp, pages).CombinedOutput(); err != nil {
		t.Errorf("cmp: %v\n%s", err, out)
	}
	if _, err := os.ReadFile(filepath.Join(mnt, "latest", "tasks", "100", "core")); err != nil {
		t.Errorf("read core: %v", err)
	}

	// A dump from another process reaches the store through the socket.
	client, err := dedup.OpenRepo(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	if _, ok := client.(*dedup.Client); !ok {
		t.Fatalf("OpenRepo gave %T while mounted", client)
	}
	// Prime a negative dentry and the listing.
	os.ReadDir(mnt)
	start := time.Now()
	c2, _ := storeCheckpoint(t, client, "two", 1)
	waitFor(t, "new checkpoint visible", func() bool {
		_, err := os.Stat(filepath.Join(mnt, c2.ID, "info"))
		return err == nil
	})
	t.Logf("commit to visible: %v", time.Since(start))
	waitFor(t, "latest -> new", func() bool {
		l, _ := os.Readlink(filepath.Join(mnt, "latest"))
		return l == c2.ID
	})
	waitFor(t, "by-name/two", func() bool {
		b, _ := os.ReadFile(filepath.Join(mnt, "by-name", "two", "info"))
		return bytes.Contains(b, []byte(c2.ID))
	})

	if err := client.Remove(c2.ID); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "removed checkpoint gone", func() bool {
		_, err := os.Stat(filepath.Join(mnt, c2.ID))
		return errors.Is(err, os.ErrNotExist)
	})
	waitFor(t, "latest -> first", func() bool {
		l, _ := os.Readlink(filepath.Join(mnt, "latest"))
		return l == c1.ID
	})
}

func TestStoreMountErrors(t *testing.T) {
	dir := t.TempDir()
	store := filepath.Join(dir, "store")
	s, err := dedup.Open(store)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	notStore := filepath.Join(dir, "junk")
	os.MkdirAll(notStore, 0o755)
	os.WriteFile(filepath.Join(notStore, "x"), nil, 0o644)

	check := func(storeDir, mnt, want string) {
		t.Helper()
		srv, err := Mount(storeDir, mnt, Options{})
		if err == nil {
			srv.Unmount()
			t.Errorf("mount %s on %s: no error, want %q", storeDir, mnt, want)
			return
		}
		if !strings.Contains(err.Error(), want) {
			t.Errorf("mount %s on %s: %v, want %q", storeDir, mnt, err, want)
		}
	}
	check(filepath.Join(dir, "nostore"), t.TempDir(), "does not exist")
	check(notStore, t.TempDir(), "not a ckptfs store")
	check(store, filepath.Join(dir, "nomnt"), "does not exist")
	check(store, dir, "inside the mountpoint")

	srv := mountStore(t, store, Options{})
	check(store, t.TempDir(), "in use")
	check(t.TempDir(), srv.Mountpoint(), "already a mount point")
	// The store works after the failed mounts.
	if _, err := os.ReadDir(srv.Mountpoint()); err != nil {
		t.Fatal(err)
	}
}

// After an unmount the store is free again (lock and socket released).
func TestStoreUnmountReleases(t *testing.T) {
	dir := t.TempDir()
	mnt := t.TempDir()
	srv, err := Mount(dir, mnt, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Unmount(); err != nil {
		t.Fatal(err)
	}
	if m, _ := isMountpoint(mnt); m {
		t.Fatal("still mounted")
	}
	if _, err := os.Stat(filepath.Join(dir, dedup.SocketName)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket left: %v", err)
	}
	s, err := dedup.Open(dir)
	if err != nil {
		t.Fatalf("store still locked: %v", err)
	}
	s.Close()
}
