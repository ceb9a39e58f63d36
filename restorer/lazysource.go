package restorer

import (
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/image"
)

// Lazy restore reads the saved pages of a vma through a PageSource: by
// default the vma's pages file in the checkpoint tree, mapped; a source
// reading straight from the store can take its place.

// PageSource opens the saved pages of one vma for the lazy page server.
type PageSource interface {
	Open(pagesPath string, size int64) (PageView, error)
}

// PageView gives the bytes of one vma's pages file.
type PageView interface {
	// Bytes returns the n bytes at offset off (both page aligned). The
	// result may be a mapping whose reading faults when the file became
	// unreadable: callers read it with debug.SetPanicOnFault.
	Bytes(off, n int64) ([]byte, error)
	Close() error
}

// treePages reads pages files of the tree, mapped (read into memory when
// a file cannot be mapped).
type treePages struct{}

func (treePages) Open(path string, size int64) (PageView, error) {
	f, err := image.OpenTreeFile(path)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("checkpoint file %s: %w", path, err)
	}
	if st.Size() != size {
		f.Close()
		return nil, fmt.Errorf("checkpoint file %s: %d bytes, want %d (the vma's length)", path, st.Size(), size)
	}
	m, err := unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return &readTreePages{f: f, path: path}, nil
	}
	f.Close()
	return &mappedPages{m: m}, nil
}

type mappedPages struct{ m []byte }

func (p *mappedPages) Bytes(off, n int64) ([]byte, error) { return p.m[off : off+n], nil }
func (p *mappedPages) Close() error                       { return unix.Munmap(p.m) }

type readTreePages struct {
	f    *os.File
	path string
}

func (p *readTreePages) Bytes(off, n int64) ([]byte, error) {
	b := make([]byte, n)
	if _, err := p.f.ReadAt(b, off); err != nil {
		return nil, fmt.Errorf("checkpoint file %s: %w", p.path, err)
	}
	return b, nil
}
func (p *readTreePages) Close() error { return p.f.Close() }

// lazySource is one vma of the checkpoint as the page server serves it:
// its pages and the hash of every saved page (from its pagemap).
//
// It is loaded (pagemap read, pages opened) in the background: a space
// serves a fault in it once it is ready, so a fault in a small vma does
// not wait for the pagemap of a large one.
type lazySource struct {
	task       int
	start, end uint64 // the vma at dump time
	pagesPath  string

	ready  chan struct{} // closed once loaded (err or the fields below)
	err    error
	view   PageView
	hashes []image.Hash // by page index; meaningful where listed
	listed bitset       // pages pagemap lists: those the server copies
	// storeChecked: the pages file is on a ckptfs mount of a local store,
	// which checks every page against its hash as it serves it (fs,
	// dedup.Store.ReadPages), so the server does not hash it again, as
	// an eager restore from a mount does not (pagesource.go).
	storeChecked bool
}

// wait waits until s is loaded.
func (s *lazySource) wait() error {
	<-s.ready
	return s.err
}

func (s *lazySource) pages() int { return int((s.end - s.start) / image.PageSize) }

func (s *lazySource) name() string {
	return fmt.Sprintf("vma %x-%x", s.start, s.end)
}

// newLazySource returns the source of vma v and starts loading it.
func newLazySource(src PageSource, task int, v lazyVMA) *lazySource {
	s := &lazySource{task: task, start: v.Start, end: v.End, pagesPath: v.Pages, ready: make(chan struct{})}
	go func() {
		defer close(s.ready)
		if s.err = s.load(src, v); s.err != nil {
			s.err = fmt.Errorf("%s: %w", s.name(), s.err)
		}
	}()
	return s
}

// load reads the pagemap of the vma and opens its pages.
func (s *lazySource) load(src PageSource, v lazyVMA) error {
	refs, err := readPagemap(v.Pagemap, &image.VMA{Start: v.Start, End: v.End})
	if err != nil {
		return err
	}
	s.hashes = make([]image.Hash, s.pages())
	s.listed = newBitset(s.pages())
	for _, r := range refs {
		s.hashes[r.Index] = r.Hash
		s.listed.set(int(r.Index))
	}
	_, s.storeChecked = mountedStore(filepath.Dir(v.Pages))
	s.view, err = src.Open(v.Pages, int64(v.End-v.Start))
	return err
}

// lazyVMA describes one registered vma in the restorer's message to the
// server.
type lazyVMA struct {
	Start, End     uint64
	Pages, Pagemap string
}

func lazyVMAOf(dir string, pid int, v *image.VMA) (lazyVMA, error) {
	pages, err := filepath.Abs(image.PagesPath(dir, pid, v))
	if err != nil {
		return lazyVMA{}, err
	}
	return lazyVMA{Start: v.Start, End: v.End, Pages: pages, Pagemap: filepath.Join(filepath.Dir(pages), "pagemap")}, nil
}

// bitset is a set of page indexes, safe for concurrent test and clear.
type bitset []uint64

func newBitset(n int) bitset { return make(bitset, (n+63)/64) }

// fullBitset has bits [0, n) set.
func fullBitset(n int) bitset {
	b := newBitset(n)
	for i := range b {
		b[i] = ^uint64(0)
	}
	if r := n & 63; r != 0 {
		b[len(b)-1] = 1<<r - 1
	}
	return b
}

func (b bitset) set(i int) { atomic.OrUint64(&b[i>>6], 1<<(i&63)) }

func (b bitset) test(i int) bool { return atomic.LoadUint64(&b[i>>6])&(1<<(i&63)) != 0 }

// clear clears bit i and says whether it was set.
func (b bitset) clear(i int) bool {
	m := uint64(1) << (i & 63)
	return atomic.AndUint64(&b[i>>6], ^m)&m != 0
}

func (b bitset) clone() bitset {
	c := make(bitset, len(b))
	for i := range b {
		c[i] = atomic.LoadUint64(&b[i])
	}
	return c
}

// any says whether a bit of [lo, hi) is set.
func (b bitset) any(lo, hi int) bool {
	for i := lo; i < hi; i++ {
		if i&63 == 0 && i+64 <= hi {
			if atomic.LoadUint64(&b[i>>6]) != 0 {
				return true
			}
			i += 63
			continue
		}
		if b.test(i) {
			return true
		}
	}
	return false
}
