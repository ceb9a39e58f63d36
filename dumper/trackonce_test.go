package dumper

import (
	"errors"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ckptfs/ckptfs/dedup"
	"github.com/ckptfs/ckptfs/image"
)

// TestPreCopyOnceSameAsFrozen: a pre-copy pass streamed through a single
// buffer (budget of one chunk: every copy thread waits for the workers),
// then the final dump of a one-dump tracking, give the same page tables
// as a dump copied frozen; the final dump copies almost nothing, and once
// the tracking is closed no vma of the target is registered any more.
func TestPreCopyOnceSameAsFrozen(t *testing.T) {
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("needs python3 for the target program")
	}
	// 16 MiB of distinct pages, then nothing changes.
	cmd := exec.Command("python3", "-c", "import os, sys, time\nx = os.urandom(16 << 20)\nprint('ready', flush=True)\ntime.sleep(60)")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	buf := make([]byte, 6)
	if _, err := out.Read(buf); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	pid := cmd.Process.Pid
	store, err := dedup.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	tables := func(id string) map[uint64][]image.PageRef {
		c, err := store.Load(id)
		if err != nil {
			t.Fatal(err)
		}
		m := map[uint64][]image.PageRef{}
		for _, v := range c.Tasks[0].VMAs {
			m[v.Start] = v.Pages
		}
		return m
	}
	frozen, err := Dump(store, pid, Options{})
	if err != nil {
		t.Fatal(err)
	}

	tr := NewTracking(pid)
	defer tr.Close()
	pass, err := Dump(store, pid, Options{Track: tr, PreCopy: true, MemoryBudget: 1})
	if errors.Is(err, ErrNotTracked) {
		t.Skipf("no write tracking here: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	if pass.Track.PagesCopied < 4096 {
		t.Fatalf("the pass copied %d pages, want the 16 MiB at least", pass.Track.PagesCopied)
	}
	if n := len(uwVMAs(t, pid)); n == 0 {
		t.Fatal("no vma registered after the pass")
	}
	final, err := Dump(store, pid, Options{Track: tr})
	if err != nil {
		t.Fatal(err)
	}
	tr.Close()
	if r := final.Track; r.PagesCopied > 512 || r.PagesReferenced < 4096 {
		t.Fatalf("final dump copied %d pages and took %d from the pass", r.PagesCopied, r.PagesReferenced)
	}
	if uw := uwVMAs(t, pid); len(uw) > 0 {
		t.Fatalf("vmas registered after the tracking was closed: %v", uw)
	}
	want, got := tables(frozen.Checkpoint.ID), tables(final.Checkpoint.ID)
	found := false
	for start, pages := range want {
		if len(pages) < 4096 {
			continue // python's heap and stack move with the interrupts
		}
		found = true
		if len(got[start]) != len(pages) {
			t.Fatalf("vma %#x: %d pages pre-copied, %d frozen", start, len(got[start]), len(pages))
		}
		for i := range pages {
			if pages[i] != got[start][i] {
				t.Fatalf("vma %#x page %d: pre-copied %v, frozen %v", start, i, got[start][i], pages[i])
			}
		}
	}
	if !found {
		t.Fatal("no vma holds the 16 MiB of random bytes")
	}
}

// uwVMAs lists the vmas of pid registered with a userfaultfd (VmFlags uw).
func uwVMAs(t *testing.T, pid int) []string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/smaps")
	if err != nil {
		t.Fatal(err)
	}
	var out, cur []string
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 1 && strings.Contains(f[0], "-") && !strings.HasSuffix(f[0], ":") {
			cur = f[:1]
		}
		if rest, ok := strings.CutPrefix(line, "VmFlags:"); ok && strings.Contains(" "+rest+" ", " uw ") {
			out = append(out, cur...)
		}
	}
	return out
}
