package fs

import (
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/dedup"
	"github.com/ckptfs/ckptfs/image"
)

// memRepo is an in-memory Repo.
type memRepo struct {
	mu    sync.Mutex
	ckpts map[string]*image.Checkpoint
	pages map[image.Hash][]byte
}

func newMemRepo() *memRepo {
	return &memRepo{ckpts: map[string]*image.Checkpoint{}, pages: map[image.Hash][]byte{}}
}

func (m *memRepo) ReadPage(h image.Hash, buf []byte) error {
	m.mu.Lock()
	p, ok := m.pages[h]
	m.mu.Unlock()
	if !ok {
		return fmt.Errorf("page %s: missing", h)
	}
	copy(buf[:image.PageSize], p)
	return nil
}

func (m *memRepo) List() ([]dedup.Summary, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var l []dedup.Summary
	for _, c := range m.ckpts {
		l = append(l, dedup.Summary{ID: c.ID, Name: c.Name, Time: c.Time, RootPID: c.RootPID, Tasks: len(c.Tasks)})
	}
	sort.Slice(l, func(i, j int) bool { return l[i].Time.Before(l[j].Time) })
	return l, nil
}

func (m *memRepo) Load(id string) (*image.Checkpoint, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c, ok := m.ckpts[id]
	if !ok {
		return nil, fmt.Errorf("checkpoint %s not found", id)
	}
	return c, nil
}

func (m *memRepo) add(c *image.Checkpoint) {
	m.mu.Lock()
	m.ckpts[c.ID] = c
	m.mu.Unlock()
}

func (m *memRepo) remove(id string) {
	m.mu.Lock()
	delete(m.ckpts, id)
	m.mu.Unlock()
}

// putPage stores p and returns its hash.
func (m *memRepo) putPage(p []byte) image.Hash {
	h := image.Hash(sha256.Sum256(p))
	m.mu.Lock()
	m.pages[h] = append([]byte(nil), p...)
	m.mu.Unlock()
	return h
}

// pageContent is the content of page i of a test vma: non-zero, distinct.
func pageContent(seed, i int) []byte {
	p := make([]byte, image.PageSize)
	for j := 0; j < len(p); j += 8 {
		v := uint64(seed)<<40 ^ uint64(i)<<16 ^ uint64(j) ^ 0x5a5a5a5a
		for k := 0; k < 8; k++ {
			p[j+k] = byte(v >> (8 * k))
		}
	}
	return p
}

// addVMA adds a vma of n pages at start with every page saved except the
// pages in holes; it returns the expected content of the vma.
func (m *memRepo) addVMA(t *image.Task, start uint64, n int, seed int, holes func(i int) bool) []byte {
	v := &image.VMA{Start: start, End: start + uint64(n)*image.PageSize, Perms: "rw-p", Kind: image.VMAAnon}
	want := make([]byte, n*image.PageSize)
	for i := 0; i < n; i++ {
		if holes != nil && holes(i) {
			continue
		}
		p := pageContent(seed, i)
		copy(want[i*image.PageSize:], p)
		v.Pages = append(v.Pages, image.PageRef{Index: uint32(i), Hash: m.putPage(p)})
	}
	t.VMAs = append(t.VMAs, v)
	return want
}

// testCheckpoint makes a checkpoint with ntasks tasks, each with a small
// vma; the first task also has a vma of pages [0,64) with a hole [10,20).
func testCheckpoint(m *memRepo, id, name string, at time.Time, ntasks int) (*image.Checkpoint, []byte) {
	c := &image.Checkpoint{ID: id, Name: name, Time: at, Host: "h", Kernel: "6.18", RootPID: 100}
	var want []byte
	for i := 0; i < ntasks; i++ {
		t := &image.Task{PID: 100 + i, PPID: 1, Comm: "t" + strconv.Itoa(i), Exe: "/bin/true", Cwd: "/", Root: "/"}
		t.Threads = []*image.Thread{{TID: 100 + i, Comm: t.Comm}}
		if i == 0 {
			want = m.addVMA(t, 0x400000, 64, 1, func(i int) bool { return i >= 10 && i < 20 })
		}
		m.addVMA(t, 0x7f0000000000, 4, 2+i, nil)
		c.Tasks = append(c.Tasks, t)
	}
	m.add(c)
	return c, want
}

// fakeRender renders a small tree: info, tasks/<pid>/{status,exe,vmas/<range>/{info,pages}}.
func fakeRender(c *image.Checkpoint, src image.PageSource) *image.Dir {
	d := &image.Dir{}
	d.Add("info", image.Bytes(fmt.Sprintf("id: %s\nname: %s\ntasks: %d\n", c.ID, c.Name, len(c.Tasks))))
	tasks := &image.Dir{}
	for _, t := range c.Tasks {
		td := &image.Dir{}
		td.Add("status", image.Bytes(fmt.Sprintf("comm: %s\npid: %d\n", t.Comm, t.PID)))
		td.Add("exe", &image.Symlink{Target: t.Exe})
		vd := &image.Dir{}
		for _, v := range t.VMAs {
			one := &image.Dir{}
			one.Add("info", image.Bytes(fmt.Sprintf("perms: %s\n", v.Perms)))
			one.Add("pages", &pagesFile{v: v, src: src})
			vd.Add(v.DirName(), one)
		}
		td.Add("vmas", vd)
		tasks.Add(strconv.Itoa(t.PID), td)
	}
	d.Add("tasks", tasks)
	return d
}

// pagesFile reads a vma's saved pages, zeros in holes (a stand-in for the
// renderer's pages file).
type pagesFile struct {
	image.Bytes // for the image.Node marker method only
	v           *image.VMA
	src         image.PageSource
}

func (f *pagesFile) Size() (int64, error) { return int64(f.v.Len()), nil }

// find returns the position of the first saved page with index >= i.
func (f *pagesFile) find(i uint64) int {
	return sort.Search(len(f.v.Pages), func(k int) bool { return uint64(f.v.Pages[k].Index) >= i })
}

func (f *pagesFile) ReadAt(p []byte, off int64) (int, error) {
	size := int64(f.v.Len())
	if off >= size {
		return 0, io.EOF
	}
	want := len(p)
	if int64(want) > size-off {
		p = p[:size-off]
	}
	n := 0
	k := f.find(uint64(off) / image.PageSize)
	var tmp []byte
	for n < len(p) {
		cur := off + int64(n)
		idx := uint64(cur) / image.PageSize
		in := int(cur % image.PageSize)
		chunk := min(image.PageSize-in, len(p)-n)
		if k < len(f.v.Pages) && uint64(f.v.Pages[k].Index) == idx {
			if in == 0 && chunk == image.PageSize {
				if err := f.src.ReadPage(f.v.Pages[k].Hash, p[n:n+chunk]); err != nil {
					return n, err
				}
			} else {
				if tmp == nil {
					tmp = make([]byte, image.PageSize)
				}
				if err := f.src.ReadPage(f.v.Pages[k].Hash, tmp); err != nil {
					return n, err
				}
				copy(p[n:n+chunk], tmp[in:])
			}
			k++
		} else {
			clear(p[n : n+chunk])
		}
		n += chunk
	}
	if n < want {
		return n, io.EOF
	}
	return n, nil
}

func (f *pagesFile) NextData(off int64) (int64, bool) {
	k := f.find(uint64(off) / image.PageSize)
	if k == len(f.v.Pages) {
		return 0, false
	}
	return max(off, int64(f.v.Pages[k].Index)*image.PageSize), true
}

func (f *pagesFile) NextHole(off int64) int64 {
	idx := uint64(off) / image.PageSize
	k := f.find(idx)
	for k < len(f.v.Pages) && uint64(f.v.Pages[k].Index) == idx {
		k++
		idx++
	}
	return max(off, min(int64(idx)*image.PageSize, int64(f.v.Len())))
}

var _ image.SparseFile = (*pagesFile)(nil)

// mountRepo mounts repo in a temporary directory and unmounts it at cleanup.
func mountRepo(t testing.TB, repo Repo) *Server {
	t.Helper()
	if os.Getuid() != 0 {
		if _, err := os.Stat("/dev/fuse"); err != nil {
			t.Skip("no /dev/fuse")
		}
	}
	mnt := t.TempDir()
	srv, err := MountRepo(repo, mnt, Options{Render: fakeRender})
	if err != nil {
		t.Fatalf("mount: %v", err)
	}
	t.Cleanup(func() {
		if err := srv.Unmount(); err != nil {
			t.Errorf("unmount: %v", err)
			unix.Unmount(mnt, unix.MNT_DETACH)
		}
	})
	return srv
}
