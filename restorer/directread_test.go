package restorer

import (
	"fmt"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/image"
)

// TestRestoreDirectRead restores a checkpoint with every big pages file
// read directly (as a cold copy is): the process resumes where it was,
// and a flipped byte in a copy is still refused.
func TestRestoreDirectRead(t *testing.T) {
	if !useDirect {
		t.Skip("CKPTFS_NO_DIRECT_READ is set")
	}
	directAlways = true
	t.Cleanup(func() { directAlways = false })
	t.Run("Resumes", func(t *testing.T) {
		n := directReads.Load()
		testResume(t, "static", 16)
		if directReads.Load() == n {
			t.Fatal("no pages file was read directly")
		}
	})
	t.Run("FlippedByte", func(t *testing.T) {
		p := start(t, "static", 16)
		dir := dumpKill(t, p)
		before := children()
		c := copyTree(t, dir)
		path, v := anonPages(t, c, p.pid)
		if v.Len() < directMin {
			t.Fatalf("biggest anonymous vma is %d bytes: not read directly", v.Len())
		}
		pg := v.Pages[len(v.Pages)*3/4]
		flipByte(t, path, int64(pg.Index)*image.PageSize+77)
		restoreRefused(t, c, before, fmt.Sprintf("task %d: vma %s", p.pid, v.DirName()),
			fmt.Sprintf("page %#x", v.Start+uint64(pg.Index)*image.PageSize), "hashes to")
		rp := restore(t, dir)
		p.waitTicks(t, 2)
		checkSame(t, dir, rp)
		unix.Kill(rp, unix.SIGKILL)
	})
}
