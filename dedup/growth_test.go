package dedup

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/ckptfs/ckptfs/image"
)

// TestSecondDumpGrowth: a second checkpoint of a process whose memory
// changed in 2 pages costs the store (du of the directory, store closed
// between dumps so that Badger has flushed and truncated its files) no
// more than 1.05x those pages plus 64 KiB: a vma whose pages did not
// change costs a reference, not a table (issue 11). 64 MiB of memory in
// one vma (32 page-table chunks) and in 16 small vmas.
func TestSecondDumpGrowth(t *testing.T) {
	for _, tc := range []struct {
		name string
		vmas []fakeVMA
	}{
		{"one-vma", []fakeVMA{{seed: 1, first: 0, n: 16384}}},
		{"16-vmas", func() []fakeVMA {
			var v []fakeVMA
			for i := range 16 {
				v = append(v, fakeVMA{seed: 1, first: uint64(i) * 1024, n: 1024})
			}
			return v
		}()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "store")
			s, err := Open(dir)
			if err != nil {
				t.Fatal(err)
			}
			dumpChanged(t, s, "first", tc.vmas, nil)
			s.Close()
			before := diskUsage(dir)
			if s, err = Open(dir); err != nil {
				t.Fatal(err)
			}
			// The same memory with 2 pages changed: the first vma's
			// first page and the last vma's last one.
			c := dumpChanged(t, s, "second", tc.vmas, map[[2]int]bool{{0, 0}: true, {len(tc.vmas) - 1, tc.vmas[len(tc.vmas)-1].n - 1}: true})
			s.Close()
			after := diskUsage(dir)
			growth := after - before
			limit := int64(2*4096*105/100 + 64<<10)
			t.Logf("second dump: %d bytes added (%d new pages), store grew %d bytes (limit %d)",
				c.Stats.BytesAdded, c.Stats.BytesAdded/4096, growth, limit)
			if c.Stats.BytesAdded != 2*4096 {
				t.Fatalf("second dump added %d bytes, want 2 pages", c.Stats.BytesAdded)
			}
			if growth > limit {
				ents, _ := os.ReadDir(dir)
				for _, e := range ents {
					fi, _ := e.Info()
					t.Logf("  %s %d", e.Name(), fi.Size())
				}
				t.Errorf("store grew %d bytes, more than %d", growth, limit)
			}
		})
	}
}

// dumpChanged is dump of one task with vmas, except that the pages at
// change ({vma, page}) hold other content.
func dumpChanged(t *testing.T, s *Store, name string, vmas []fakeVMA, change map[[2]int]bool) *image.Checkpoint {
	t.Helper()
	c := &image.Checkpoint{Name: name, Host: "h", Kernel: "6.18", RootPID: 100}
	task := &image.Task{PID: 100, PPID: 1, Comm: "t", State: "S", Threads: []*image.Thread{{TID: 100, Comm: "t"}}}
	addr := uint64(0x400000)
	for vi, fv := range vmas {
		v := &image.VMA{Start: addr, End: addr + uint64(fv.n+2)*image.PageSize, Perms: "rw-p", Kind: image.VMAAnon}
		addr = v.End + 0x10000
		var hs []image.Hash
		var ps [][]byte
		for i := 0; i < fv.n; i++ {
			p := page(fv.seed, fv.first+uint64(i))
			if change[[2]int{vi, i}] {
				p = page(99, uint64(vi)<<32|uint64(i))
			}
			h := Sum(p)
			v.Pages = append(v.Pages, image.PageRef{Index: uint32(i + 1), Hash: h})
			hs, ps = append(hs, h), append(ps, p)
		}
		for len(hs) > 0 {
			n := min(256, len(hs))
			miss, err := s.Missing(hs[:n])
			if err != nil {
				t.Fatal(err)
			}
			for i := range n {
				if miss[i] {
					added, err := s.PutPages(hs[i:i+1], ps[i:i+1])
					if err != nil {
						t.Fatal(err)
					}
					c.Stats.BytesAdded += added
				}
			}
			hs, ps = hs[n:], ps[n:]
		}
		task.VMAs = append(task.VMAs, v)
	}
	c.Tasks = []*image.Task{task}
	c.Stats.PagesTotal = c.MemoryBytes() / image.PageSize
	if err := s.Commit(c); err != nil {
		t.Fatal(err)
	}
	return c
}
