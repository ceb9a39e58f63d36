package dedup

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ckptfs/ckptfs/image"
)

// pageGen makes distinct pseudo-random pages: page n is always the same.
func page(seed, n uint64) []byte {
	r := rand.New(rand.NewPCG(seed, n))
	p := make([]byte, image.PageSize)
	for i := 0; i < len(p); i += 8 {
		v := r.Uint64()
		for j := 0; j < 8; j++ {
			p[i+j] = byte(v >> (8 * j))
		}
	}
	return p
}

// fakeVMA describes a vma to dump: its pages are page(seed, first..first+n).
type fakeVMA struct {
	seed, first uint64
	n           int
}

// dump stores the pages of vmas the way the dumper does (batches of 256:
// Missing, then PutPages of the missing ones) and commits a checkpoint of
// one task per vma list.
func dump(t testing.TB, r Repo, name string, tasks ...[]fakeVMA) *image.Checkpoint {
	t.Helper()
	c := &image.Checkpoint{Name: name, Host: "h", Kernel: "6.18", RootPID: 100}
	for ti, vmas := range tasks {
		task := &image.Task{PID: 100 + ti, PPID: 1, Comm: "t", State: "S", Cmdline: []byte("a\x00b\x00"),
			Threads: []*image.Thread{{TID: 100 + ti, Comm: "t", XState: []byte{1, 2, 3}}},
			FDs:     []*image.FD{{Num: 0, Kind: image.FDChar, Path: "/dev/null"}}}
		if ti > 0 {
			task.PPID = 100
		}
		addr := uint64(0x400000)
		for _, fv := range vmas {
			v := &image.VMA{Start: addr, End: addr + uint64(fv.n+2)*image.PageSize, Perms: "rw-p", Kind: image.VMAAnon}
			addr = v.End + 0x10000
			var hs []image.Hash
			var ps [][]byte
			flush := func() {
				miss, err := r.Missing(hs)
				if err != nil {
					t.Fatal(err)
				}
				var mh []image.Hash
				var mp [][]byte
				for i := range hs {
					if miss[i] {
						mh, mp = append(mh, hs[i]), append(mp, ps[i])
					}
				}
				if len(mh) > 0 {
					added, err := r.PutPages(mh, mp)
					if err != nil {
						t.Fatal(err)
					}
					c.Stats.BytesAdded += added
				}
				hs, ps = hs[:0], ps[:0]
			}
			for i := 0; i < fv.n; i++ {
				p := page(fv.seed, fv.first+uint64(i))
				h := Sum(p)
				// index i+1: page 0 of every vma is a hole
				v.Pages = append(v.Pages, image.PageRef{Index: uint32(i + 1), Hash: h})
				hs, ps = append(hs, h), append(ps, p)
				if len(hs) == 256 {
					flush()
				}
			}
			flush()
			task.VMAs = append(task.VMAs, v)
		}
		c.Tasks = append(c.Tasks, task)
	}
	c.Stats.PagesTotal = c.MemoryBytes() / image.PageSize
	if err := r.Commit(c); err != nil {
		t.Fatal(err)
	}
	return c
}

func openT(t testing.TB) *Store {
	t.Helper()
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// checkReadable reads every page of c back and compares with the generator.
func checkReadable(t *testing.T, r Repo, c *image.Checkpoint, tasks ...[]fakeVMA) {
	t.Helper()
	buf := make([]byte, image.PageSize)
	for ti, vmas := range tasks {
		for vi, fv := range vmas {
			v := c.Tasks[ti].VMAs[vi]
			if len(v.Pages) != fv.n {
				t.Fatalf("task %d vma %d: %d pages, want %d", ti, vi, len(v.Pages), fv.n)
			}
			for i, ref := range v.Pages {
				if err := r.ReadPage(ref.Hash, buf); err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(buf, page(fv.seed, fv.first+uint64(i))) {
					t.Fatalf("task %d vma %d page %d: wrong content", ti, vi, i)
				}
			}
		}
	}
}

func TestSumIsZero(t *testing.T) {
	z := make([]byte, image.PageSize)
	if !IsZero(z) || !IsZero(z[:100]) || !IsZero(nil) {
		t.Fatal("zero page not zero")
	}
	for _, i := range []int{0, 1, 2047, 4095} {
		z[i] = 1
		if IsZero(z) {
			t.Fatalf("byte %d set: IsZero true", i)
		}
		z[i] = 0
	}
	big := make([]byte, 3*image.PageSize+5)
	big[len(big)-1] = 1
	if IsZero(big) {
		t.Fatal("last byte set: IsZero true")
	}
	p := page(1, 1)
	if Sum(p) != Sum(bytes.Clone(p)) || Sum(p) == Sum(page(1, 2)) {
		t.Fatal("Sum is not a content hash")
	}
}

func TestPutReadDedup(t *testing.T) {
	s := openT(t)
	fi, err := os.Stat(s.Dir())
	if err != nil || fi.Mode().Perm() != 0700 {
		t.Fatalf("store dir mode %v, %v", fi.Mode(), err)
	}
	var hs []image.Hash
	var ps [][]byte
	for i := uint64(0); i < 10; i++ {
		ps = append(ps, page(1, i))
		hs = append(hs, Sum(ps[i]))
	}
	miss, err := s.Missing(hs)
	if err != nil || len(miss) != 10 || !miss[0] || !miss[9] {
		t.Fatalf("Missing on empty store: %v %v", miss, err)
	}
	// A batch with a duplicate inside counts it once.
	added, err := s.PutPages(append(hs[:5:5], hs[0]), append(ps[:5:5], ps[0]))
	if err != nil || added != 5*image.PageSize {
		t.Fatalf("PutPages added %d, %v", added, err)
	}
	added, err = s.PutPages(hs, ps)
	if err != nil || added != 5*image.PageSize {
		t.Fatalf("second PutPages added %d, want %d (%v)", added, 5*image.PageSize, err)
	}
	added, err = s.PutPages(hs, ps)
	if err != nil || added != 0 {
		t.Fatalf("repeated PutPages added %d, %v", added, err)
	}
	miss, _ = s.Missing(append(hs, Sum(page(2, 0))))
	for i, m := range miss {
		if m != (i == 10) {
			t.Fatalf("Missing = %v", miss)
		}
	}
	buf := make([]byte, image.PageSize)
	for i, h := range hs {
		if err := s.ReadPage(h, buf); err != nil || !bytes.Equal(buf, ps[i]) {
			t.Fatalf("ReadPage %d: %v", i, err)
		}
	}
	unknown := Sum(page(3, 3))
	err = s.ReadPage(unknown, buf)
	if !errors.Is(err, ErrPageMissing) || !strings.Contains(err.Error(), unknown.String()) {
		t.Fatalf("ReadPage of unknown page: %v", err)
	}
	z := make([]byte, image.PageSize)
	if _, err := s.PutPages([]image.Hash{Sum(z)}, [][]byte{z}); err == nil {
		t.Fatal("zero page accepted")
	}
	if _, err := s.PutPages([]image.Hash{Sum(z[:10])}, [][]byte{ps[0][:10]}); err == nil {
		t.Fatal("short page accepted")
	}
}

func TestCommitListLoad(t *testing.T) {
	s := openT(t)
	spec := [][]fakeVMA{{{1, 0, 300}, {1, 1000, 20}}, {{1, 0, 10}, {2, 0, 9000}}}
	c1 := dump(t, s, "first", spec...)
	if c1.ID == "" || len(c1.ID) != len("20261125-121314-3f2a") {
		t.Fatalf("id %q", c1.ID)
	}
	// Same pages again (under another id) add nothing.
	time.Sleep(10 * time.Millisecond)
	c2 := dump(t, s, "second", spec...)
	if c2.Stats.BytesAdded != 0 {
		t.Fatalf("second dump added %d bytes", c2.Stats.BytesAdded)
	}
	if c1.Stats.BytesAdded != (300+20+9000)*image.PageSize {
		t.Fatalf("first dump added %d bytes", c1.Stats.BytesAdded)
	}
	list, err := s.List()
	if err != nil || len(list) != 2 || list[0].ID != c1.ID || list[1].ID != c2.ID {
		t.Fatalf("List = %+v, %v", list, err)
	}
	l := list[0]
	if l.Name != "first" || !l.Time.Equal(c1.Time) || l.RootPID != 100 || l.Tasks != 2 ||
		l.MemoryBytes != (300+20+10+9000)*image.PageSize || l.BytesAdded != c1.Stats.BytesAdded {
		t.Fatalf("summary %+v", l)
	}

	for _, ref := range []string{c1.ID, "first", c1.ID[:len(c1.ID)-1]} {
		if c2.ID[:len(c2.ID)-1] == c1.ID[:len(c1.ID)-1] && ref != c1.ID && ref != "first" {
			continue // ids share the prefix
		}
		got, err := s.Load(ref)
		if err != nil {
			t.Fatalf("Load %q: %v", ref, err)
		}
		if !got.Time.Equal(c1.Time) {
			t.Fatalf("time %v, want %v", got.Time, c1.Time)
		}
		got.Time = c1.Time
		if !reflect.DeepEqual(got, c1) {
			t.Fatalf("Load %q differs:\n%+v\nwant\n%+v", ref, got, c1)
		}
		checkReadable(t, s, got, spec...)
	}
	if _, err := s.Load("2"); err == nil || !strings.Contains(err.Error(), "ambiguous") {
		t.Fatalf("ambiguous prefix: %v", err)
	}
	if _, err := s.Load("nope"); err == nil {
		t.Fatal("Load of unknown id succeeded")
	}
	c1.ID = list[1].ID
	if err := s.Commit(c1); err == nil {
		t.Fatal("Commit over an existing id succeeded")
	}
	// Survives a reopen.
	dir := s.Dir()
	s.Close()
	s2, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	got, err := s2.Load("second")
	if err != nil {
		t.Fatal(err)
	}
	checkReadable(t, s2, got, spec...)
}

func TestRemoveGC(t *testing.T) {
	s := openT(t)
	shared := []fakeVMA{{7, 0, 2000}}
	a := dump(t, s, "a", shared, []fakeVMA{{8, 0, 20000}}) // 80 MiB of its own
	b := dump(t, s, "b", shared, []fakeVMA{{9, 0, 3000}})
	// An interrupted dump: pages and tables but no manifest.
	func() {
		s.PutPages([]image.Hash{Sum(page(10, 0))}, [][]byte{page(10, 0)})
		wb := s.db.NewWriteBatch()
		wb.Set(tableKey("orphan", 0, 0, 0), encodeRefs([]image.PageRef{{Index: 0, Hash: Sum(page(10, 0))}}))
		if err := wb.Flush(); err != nil {
			t.Fatal(err)
		}
	}()
	st, err := s.Stats()
	if err != nil || st.Checkpoints != 2 || st.Pages != 2000+20000+3000+1 {
		t.Fatalf("stats %+v %v", st, err)
	}
	if want := float64(a.MemoryBytes()+b.MemoryBytes()) / float64(st.PageBytes); st.Ratio != want {
		t.Fatalf("ratio %v want %v", st.Ratio, want)
	}
	if err := s.Remove("a"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Load(a.ID); err == nil {
		t.Fatal("removed checkpoint loads")
	}
	res, err := s.GC()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("gc: %+v", res)
	// Tables: the orphan, the chunks of a's own vma (the shared one's
	// are b's too) and
	// its chunk list (one piece: 79 chunks).
	wantTables := int64(1 + (20000+tableChunk3-1)/tableChunk3 + 1)
	if res.Pages != 20000+1 || res.Bytes != res.Pages*image.PageSize || res.Tables != wantTables {
		t.Fatalf("gc freed %+v, want 20001 pages and %d tables", res, wantTables)
	}
	if res.DiskBefore-res.DiskAfter < 40<<20 {
		t.Errorf("gc gave back only %d bytes of %d freed", res.DiskBefore-res.DiskAfter, res.Bytes)
	}
	got, err := s.Load("b")
	if err != nil {
		t.Fatal(err)
	}
	checkReadable(t, s, got, shared, []fakeVMA{{9, 0, 3000}})
	if p, err := s.Verify(); err != nil || len(p) != 0 {
		t.Fatalf("verify after gc: %v %v", p, err)
	}
	res, err = s.GC()
	if err != nil || res.Pages != 0 {
		t.Fatalf("second gc: %+v %v", res, err)
	}
	st, _ = s.Stats()
	if st.Pages != 5000 || st.Checkpoints != 1 {
		t.Fatalf("stats after gc %+v", st)
	}
}

func TestVerify(t *testing.T) {
	s := openT(t)
	spec := [][]fakeVMA{{{1, 0, 50}}, {{2, 0, 50}}}
	c := dump(t, s, "x", spec...)
	if p, err := s.Verify(); err != nil || len(p) != 0 {
		t.Fatalf("verify of a sound store: %v %v", p, err)
	}
	bad := c.Tasks[0].VMAs[0].Pages[3].Hash
	gone := c.Tasks[1].VMAs[0].Pages[7].Hash
	flipPageByte(t, s, bad, 100)
	dropPageEntries(t, s, gone)
	buf := make([]byte, image.PageSize)
	if err := s.ReadPage(bad, buf); !errors.Is(err, ErrPageCorrupt) || !strings.Contains(err.Error(), bad.String()) {
		t.Fatalf("ReadPage of corrupt page: %v", err)
	}
	p, err := s.Verify()
	if err != nil {
		t.Fatal(err)
	}
	t.Log(strings.Join(p, "\n"))
	if len(p) != 2 {
		t.Fatalf("%d problems, want 2: %q", len(p), p)
	}
	v0, v1 := c.Tasks[0].VMAs[0], c.Tasks[1].VMAs[0]
	for _, want := range [][]string{
		{bad.String(), "corrupt", c.ID, "task 100", v0.DirName(), "page 4"},
		{gone.String(), "missing", c.ID, "task 101", v1.DirName(), "page 8"},
	} {
		found := false
		for _, line := range p {
			ok := true
			for _, w := range want {
				ok = ok && strings.Contains(line, w)
			}
			found = found || ok
		}
		if !found {
			t.Errorf("no problem line with %q in %q", want, p)
		}
	}
}

func TestErrLocked(t *testing.T) {
	s := openT(t)
	_, err := Open(s.Dir())
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), "pid") {
		t.Fatalf("second Open: %v", err)
	}
	// Locked, and a stale socket that nobody listens on.
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(s.Dir(), SocketName), Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	defer func(d time.Duration) { openRepoWait = d }(openRepoWait)
	openRepoWait = 200 * time.Millisecond
	_, err = OpenRepo(s.Dir())
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), "nobody serves it") {
		t.Fatalf("OpenRepo of a locked unserved store: %v", err)
	}
	// Unlocked with the stale socket: OpenRepo opens it locally.
	s.Close()
	r, err := OpenRepo(s.Dir())
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := r.(*Store); !ok {
		t.Fatalf("OpenRepo of a free store gave %T", r)
	}
	r.Close()
}

func TestClientServer(t *testing.T) {
	s := openT(t)
	var notified atomic.Int32
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, func() { notified.Add(1) }) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
		if _, err := os.Stat(filepath.Join(s.Dir(), SocketName)); !os.IsNotExist(err) {
			t.Errorf("socket left behind: %v", err)
		}
	}()

	var r Repo
	var err error
	for i := 0; ; i++ { // wait for the socket
		r, err = OpenRepo(s.Dir())
		if err == nil || i > 50 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, ok := r.(*Client); !ok {
		t.Fatalf("OpenRepo of a served store gave %T", r)
	}
	if miss, err := r.Missing(nil); err != nil || len(miss) != 0 {
		t.Fatalf("Missing(nil) over the socket: %v %v", miss, err)
	}
	if added, err := r.PutPages(nil, nil); err != nil || added != 0 {
		t.Fatalf("PutPages(nil) over the socket: %v %v", added, err)
	}
	fi, err := os.Stat(filepath.Join(s.Dir(), SocketName))
	if err != nil || fi.Mode().Perm() != 0600 {
		t.Fatalf("socket mode %v %v", fi.Mode(), err)
	}

	spec := [][]fakeVMA{{{1, 0, 1000}, {2, 0, 10}}, {{1, 0, 1000}}}
	c := dump(t, r, "remote", spec...)
	if c.ID == "" || c.Stats.BytesAdded != 1010*image.PageSize || notified.Load() != 1 {
		t.Fatalf("commit over the socket: id %q added %d notified %d", c.ID, c.Stats.BytesAdded, notified.Load())
	}
	list, err := r.List()
	if err != nil || len(list) != 1 || list[0].ID != c.ID {
		t.Fatalf("List %+v %v", list, err)
	}
	got, err := r.Load("remote")
	if err != nil {
		t.Fatal(err)
	}
	got.Time = c.Time
	if !reflect.DeepEqual(got, c) {
		t.Fatalf("Load over the socket differs")
	}
	checkReadable(t, r, got, spec...)
	// The server's own handle sees it too (that is what the mount reads).
	if _, err := s.Load(c.ID); err != nil {
		t.Fatal(err)
	}
	if err := r.ReadPage(Sum(page(5, 5)), make([]byte, image.PageSize)); err == nil ||
		!strings.Contains(err.Error(), Sum(page(5, 5)).String()) {
		t.Fatalf("ReadPage of a missing page over the socket: %v", err)
	}

	// A second client in the middle of a dump keeps GC away.
	r2, err := OpenRepo(s.Dir())
	if err != nil {
		t.Fatal(err)
	}
	h := Sum(page(3, 0))
	if _, err := r2.PutPages([]image.Hash{h}, [][]byte{page(3, 0)}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.GC(); err == nil || !strings.Contains(err.Error(), "dump is in progress") {
		t.Fatalf("GC during a dump: %v", err)
	}
	r2.Close() // the dump dies: its pages become garbage
	var res GCResult
	for i := 0; i < 100; i++ { // the server notices the hang-up asynchronously
		if res, err = r.GC(); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil || res.Pages != 1 {
		t.Fatalf("GC after the dump died: %+v %v", res, err)
	}
	if p, err := r.Verify(); err != nil || len(p) != 0 {
		t.Fatalf("Verify over the socket: %v %v", p, err)
	}
	st, err := r.Stats()
	if err != nil || st.Checkpoints != 1 || st.Pages != 1010 || st.Ratio < 1.98 {
		t.Fatalf("Stats over the socket %+v %v", st, err)
	}
	if err := r.Remove(c.ID[:10]); err != nil {
		t.Fatal(err)
	}
	if list, _ := r.List(); len(list) != 0 {
		t.Fatalf("after remove: %+v", list)
	}
	if n := notified.Load(); n != 3 {
		t.Fatalf("notified %d times, want 3 (commit, gc, remove)", n)
	}
}

func TestOpenRefusesForeignDir(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("x"), 0644); err != nil {
		t.Fatal(err)
	}
	if s, err := Open(dir); err == nil {
		s.Close()
		t.Fatal("Open of a non-empty foreign directory succeeded")
	}
}

func TestServeLongPath(t *testing.T) {
	dir := filepath.Join(t.TempDir(), strings.Repeat("a-rather-long-directory-name/", 5), "store")
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, nil) }()
	defer func() { cancel(); <-done }()
	var r Repo
	for i := 0; i < 100; i++ {
		if r, err = OpenRepo(dir); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, ok := r.(*Client); !ok {
		t.Fatalf("OpenRepo gave %T", r)
	}
	if _, err := r.List(); err != nil {
		t.Fatal(err)
	}
}

func TestOpenExistingRepoCreatesNothing(t *testing.T) {
	dir := t.TempDir()
	if _, err := OpenExistingRepo(dir); !errors.Is(err, ErrNotStore) {
		t.Fatalf("OpenExistingRepo of an empty directory: %v", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("OpenExistingRepo left %d files in an empty directory", len(ents))
	}
	missing := filepath.Join(dir, "nope")
	if _, err := OpenExistingRepo(missing); !errors.Is(err, ErrNotStore) {
		t.Fatalf("OpenExistingRepo of a missing directory: %v", err)
	}
	if _, err := os.Stat(missing); !os.IsNotExist(err) {
		t.Fatal("OpenExistingRepo created the missing directory")
	}
	s := openT(t)
	dump(t, s, "a", []fakeVMA{{1, 0, 1}})
	s.Close()
	r, err := OpenExistingRepo(s.Dir())
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
}

// flipPageByte flips byte off of the stored page h in its pack file.
func flipPageByte(t *testing.T, s *Store, h image.Hash, off int64) {
	t.Helper()
	loc, err := s.locate(h)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(packPath(s.dir, loc.pack), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := []byte{0}
	if _, err := f.ReadAt(b, loc.offset+off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 1
	if _, err := f.WriteAt(b, loc.offset+off); err != nil {
		t.Fatal(err)
	}
}
