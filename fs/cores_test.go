package fs

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ckptfs/ckptfs/dedup"
)

// TestCoresBesideCheckpoint: a task's core is served as
// MNT/cores/<id>/<pid>/core, MNT/<id>/tasks/<pid>/core is a symlink to it
// (readable through the mount), and `cp -a MNT/<id>` copies no core. The
// mount's source names the store (restorer/pagesource.go reads it).
func TestCoresBesideCheckpoint(t *testing.T) {
	dir := t.TempDir()
	s, err := dedup.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := storeCheckpoint(t, s, "one", 2)
	s.Close()
	srv := mountStore(t, dir, Options{})
	mnt := srv.Mountpoint()

	core := filepath.Join(mnt, "cores", c.ID, "100", "core")
	b, err := os.ReadFile(core)
	if err != nil || !bytes.HasPrefix(b, []byte("\x7fELF")) {
		t.Fatalf("read %s: %d bytes, %v", core, len(b), err)
	}
	link := filepath.Join(mnt, c.ID, "tasks", "100", "core")
	if target, err := os.Readlink(link); err != nil || target != "../../../cores/"+c.ID+"/100/core" {
		t.Errorf("readlink %s: %q, %v", link, target, err)
	}
	for _, via := range []string{link, filepath.Join(mnt, "latest", "tasks", "101", "core")} {
		if b2, err := os.ReadFile(via); err != nil || !bytes.HasPrefix(b2, []byte("\x7fELF")) {
			t.Errorf("read %s: %d bytes, %v", via, len(b2), err)
		}
	}
	ents, err := os.ReadDir(filepath.Join(mnt, "cores"))
	if err != nil || len(ents) != 1 || ents[0].Name() != c.ID {
		t.Errorf("cores/: %v, %v", ents, err)
	}
	top, _ := os.ReadDir(mnt)
	var names []string
	for _, e := range top {
		names = append(names, e.Name())
	}
	if !strings.Contains(strings.Join(names, " "), "cores") {
		t.Errorf("top level %v lacks cores", names)
	}

	cp := filepath.Join(t.TempDir(), "copy")
	if out, err := exec.Command("cp", "-a", filepath.Join(mnt, c.ID), cp).CombinedOutput(); err != nil {
		t.Fatalf("cp -a: %v\n%s", err, out)
	}
	filepath.Walk(cp, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Name() == "core" && fi.Mode().IsRegular() {
			t.Errorf("the copy holds a core file: %s", p)
		}
		return nil
	})

	mi, _ := os.ReadFile("/proc/self/mountinfo")
	if !strings.Contains(string(mi), " - fuse.ckptfs "+SourcePrefix+dir+" ") {
		t.Errorf("mountinfo has no source %s%s", SourcePrefix, dir)
	}
}
