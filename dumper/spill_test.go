package dumper

import (
	"bytes"
	"os/exec"
	"testing"
	"time"

	"github.com/ckptfs/ckptfs/dedup"
	"github.com/ckptfs/ckptfs/image"
)

func TestSpillFileRoundTrip(t *testing.T) {
	s, err := newSpillFile(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	if err := s.prefault(3 * image.PageSize); err != nil {
		t.Fatal(err)
	}
	a := bytes.Repeat([]byte{1}, 2*image.PageSize)
	b := bytes.Repeat([]byte{2}, image.PageSize)
	offA, err := s.write(a)
	if err != nil {
		t.Fatal(err)
	}
	offB, err := s.write(b)
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.mapBack(offB, len(b))
	if err != nil || !bytes.Equal(got, b) {
		t.Fatalf("map back b: %v", err)
	}
	s.release(got, offB)
	got, err = s.mapBack(offA, len(a))
	if err != nil || !bytes.Equal(got, a) {
		t.Fatalf("map back a: %v", err)
	}
	s.release(got, offA)
	// Released: the file's blocks are punched out (reads give zeros).
	zero := make([]byte, len(a))
	if _, err := s.f.ReadAt(zero, offA); err != nil || !bytes.Equal(zero, make([]byte, len(a))) {
		t.Fatalf("after release: %v", err)
	}
}

// TestDumpSpilledSameAsInMemory dumps one sleeping process with a budget
// of one chunk (everything else spilled) and with a budget that holds it
// all, and compares every vma's page table.
func TestDumpSpilledSameAsInMemory(t *testing.T) {
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
	store, err := dedup.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	tables := func(budget int64) map[uint64][]image.PageRef {
		r, err := Dump(store, cmd.Process.Pid, Options{MemoryBudget: budget})
		if err != nil {
			t.Fatal(err)
		}
		c, err := store.Load(r.Checkpoint.ID) // the dump streamed its page tables
		if err != nil {
			t.Fatal(err)
		}
		m := map[uint64][]image.PageRef{}
		for _, v := range c.Tasks[0].VMAs {
			m[v.Start] = v.Pages
		}
		return m
	}
	spilled := tables(1) // rounds up to one chunk
	inMemory := tables(1 << 30)
	// Only the 16 MiB of random bytes (a mapping of their own) stay as
	// they are: the dump's interrupt makes python redo its sleep, which
	// writes its stack and heap.
	found := false
	for start, pages := range inMemory {
		if len(pages) < 4096 {
			continue
		}
		found = true
		if len(spilled[start]) != len(pages) {
			t.Fatalf("vma %#x: %d pages spilled, %d in memory", start, len(spilled[start]), len(pages))
		}
		for i := range pages {
			if pages[i] != spilled[start][i] {
				t.Fatalf("vma %#x page %d: spilled %v, in memory %v", start, i, spilled[start][i], pages[i])
			}
		}
	}
	if !found {
		t.Fatal("no vma holds the 16 MiB of random bytes")
	}
}
