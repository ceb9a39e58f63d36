package restorer

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/ckptfs/ckptfs/internal/proc"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/dedup"
	"github.com/ckptfs/ckptfs/image"
)

// Page data straight from the store. A tree below a ckptfs mount of a
// local store (`ckptfs mount STORE MNT`, restore MNT/<id>) is a rendering
// of the store: its pages files read, page by page through FUSE, what the
// store holds under the hashes of the vma's pagemap. Instead of reading
// them (and hashing every page again to verify it), the restorer asks the
// mount's process for the pages of each pagemap in large batches on the
// store's socket (dedup.Client.ReadPages, same handshake and SO_PEERCRED
// checks as every client); the store checks every page it serves against
// its hash, which is the check verify.go makes on a copy. A copy of the
// tree (`cp -a`), or a mount the restorer cannot use (another user's, an
// older server), is read from its files as before.

// storePages serves the page data of the vmas fillMemory writes from the
// store that a mounted tree renders.
type storePages struct {
	store  string
	client *dedup.Client
	packs  *dedup.PackReader // reads the store's packs itself; nil: pages over the socket
	tree   *image.Dir        // the rendering the model was loaded from (storemodel.go); nil: the mount's files
	pf     *prefetch         // the read-ahead's budget
	early  *earlyPages       // pages read while the model loads (earlypages.go); nil: none
}

// openStorePages returns the store source for tree dir, or nil (and why,
// for the log) when dir is not on a ckptfs mount of a local store or that
// store cannot be reached.
func openStorePages(dir string) (*storePages, string) {
	if os.Getenv("CKPTFS_NO_STORE_PAGES") != "" {
		return nil, "CKPTFS_NO_STORE_PAGES is set"
	}
	store, ok := mountedStore(dir)
	if !ok {
		return nil, ""
	}
	c, err := dedup.Dial(store)
	if err != nil {
		return nil, fmt.Sprintf("store %s: %v", store, err)
	}
	// An empty batch: a server without ReadPages (an older ckptfs) says
	// so now rather than in the middle of a restore.
	if err := c.HasReadPages(); err != nil {
		c.Close()
		return nil, fmt.Sprintf("store %s: %v", store, err)
	}
	sp := &storePages{store: store, client: c, pf: &prefetch{left: prefetchBudget}}
	if os.Getenv("CKPTFS_NO_DIRECT_PACKS") == "" {
		sp.packs, _ = dedup.NewPackReader(c) // else over the socket
	}
	return sp, ""
}

func (s *storePages) close() {
	if s != nil {
		s.early.drop()
		if s.packs != nil {
			s.packs.Close()
		}
		s.client.Close()
	}
}

// read fills dst with the pages refs name, in order.
func (s *storePages) read(refs []image.PageRef, dst []byte) error {
	return s.readHashes(refHashes(refs), dst)
}

// readHashes fills dst with the pages hashes name, in order: from the
// store's packs when this process reads them itself, else over the socket.
func (s *storePages) readHashes(hashes []image.Hash, dst []byte) error {
	var err error
	if s.packs != nil {
		err = s.packs.ReadPages(hashes, dst)
	} else {
		err = s.client.ReadPages(hashes, dst)
	}
	if err != nil {
		return fmt.Errorf("read pages from store %s: %w", s.store, err)
	}
	return nil
}

// prefetch has the pages refs name located and read ahead, in the
// background, when this process reads the store's packs itself.
func (s *storePages) prefetch(refs []image.PageRef) {
	if s.packs == nil {
		return
	}
	s.packs.Prefetch(refHashes(refs))
}

// refHashes returns the hashes of refs, in order.
func refHashes(refs []image.PageRef) []image.Hash {
	hashes := make([]image.Hash, len(refs))
	for i, r := range refs {
		hashes[i] = r.Hash
	}
	return hashes
}

// mountedStore says whether dir is on a ckptfs mount of a local store and
// returns the store's directory: the file system is FUSE, and the mount
// that holds dir (same device) is of type fuse.ckptfs with source
// "ckptfs:<store>" (fs.SourcePrefix).
func mountedStore(dir string) (string, bool) {
	if !onFUSE(dir) {
		return "", false
	}
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return "", false
	}
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "", false
	}
	return storeFromMountinfo(mi, unix.Major(st.Dev), unix.Minor(st.Dev))
}

// onFUSE says whether dir is on a FUSE file system.
func onFUSE(dir string) bool {
	var sfs unix.Statfs_t
	return unix.Statfs(dir, &sfs) == nil && sfs.Type == unix.FUSE_SUPER_MAGIC
}

// sourcePrefix is fs.SourcePrefix (the restorer does not link the FUSE
// server).
const sourcePrefix = "ckptfs:"

// storeFromMountinfo finds the mount of device major:minor in mountinfo
// and returns its store if it is a ckptfs mount of one.
func storeFromMountinfo(mi []byte, major, minor uint32) (string, bool) {
	dev := fmt.Sprintf("%d:%d", major, minor)
	sc := bufio.NewScanner(bytes.NewReader(mi))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		// id parent maj:min root mountpoint options [optional...] - fstype source superoptions
		f := strings.Fields(sc.Text())
		if len(f) < 3 || f[2] != dev {
			continue
		}
		sep := -1
		for i := 6; i < len(f); i++ {
			if f[i] == "-" {
				sep = i
				break
			}
		}
		if sep < 0 || sep+2 >= len(f) || f[sep+1] != "fuse.ckptfs" {
			return "", false
		}
		src := proc.UnescapeMountinfo(f[sep+2])
		store, ok := strings.CutPrefix(src, sourcePrefix)
		if !ok || !filepath.IsAbs(store) || filepath.Clean(store) != store {
			return "", false
		}
		return store, true
	}
	return "", false
}

// prefetchMax is the largest task whose pages scanStorePages reads ahead,
// all in one call; prefetchBudget bounds what is read ahead at once (the
// tracer frees a task's pages once it has written them).
const (
	prefetchMax    = 16 << 20
	prefetchBudget = 256 << 20
)

// prefetch reads the pages of the small tasks of a tree ahead of the
// tracer (scanStorePages): one call per task instead of one per chunk of
// each vma when the tracer gets to it, so a tree of many small processes
// does not wait a round trip to the store per vma.
type prefetch struct {
	mu   sync.Mutex
	left int64 // of prefetchBudget
}

// take reserves n bytes of the budget.
func (p *prefetch) take(n int64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if n > prefetchMax || n > p.left {
		return false
	}
	p.left -= n
	return true
}

// give returns n bytes to the budget.
func (p *prefetch) give(n int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.left += n
}

// fetchTask reads the pages of refs (every vma of a task) into one buffer
// and returns each vma's part of it, in the order of its refs.
func (s *storePages) fetchTask(t *image.Task, refs map[*image.VMA][]image.PageRef, n int64) (map[*image.VMA][]byte, error) {
	var all []image.PageRef
	var order []*image.VMA
	for _, v := range t.VMAs {
		if rs := refs[v]; rs != nil {
			all = append(all, rs...)
			order = append(order, v)
		}
	}
	buf := make([]byte, n)
	if err := s.read(all, buf); err != nil {
		return nil, err
	}
	data := make(map[*image.VMA][]byte, len(order))
	for _, v := range order {
		k := int64(len(refs[v])) * image.PageSize
		data[v], buf = buf[:k:k], buf[k:]
	}
	return data, nil
}

// scanStorePages is scanPages for a tree served from the store: the data
// ranges of each vma fillMemory writes are the runs of its pagemap's
// pages, and refs says which page goes where. The pages files are not
// read; with the rendering the model was loaded from (tree), neither are
// the pagemaps: their lines are the rendered vmas' pages.
func scanStorePages(dir string, t *image.Task, tree *image.Dir) (map[*image.VMA][][2]int64, map[*image.VMA][]image.PageRef, error) {
	ranges := map[*image.VMA][][2]int64{}
	refs := map[*image.VMA][]image.PageRef{}
	var rendered map[string]*image.VMA
	if tree != nil {
		var err error
		if rendered, err = renderedVMAs(tree, t.PID); err != nil {
			return nil, nil, err
		}
	}
	for _, v := range t.VMAs {
		if !filledVMA(v) {
			continue
		}
		var rs []image.PageRef
		var err error
		if tree != nil {
			rs, err = renderedRefs(rendered[v.DirName()], v)
		} else {
			pagesPath := image.PagesPath(dir, t.PID, v)
			rs, err = readPagemap(filepath.Join(filepath.Dir(pagesPath), "pagemap"), v)
		}
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", vmaName(t.PID, v), err)
		}
		if len(rs) == 0 {
			continue
		}
		refs[v] = rs
		ranges[v] = refRanges(rs)
	}
	return ranges, refs, nil
}

// refRanges merges the pages of refs (ascending) into [start, end) byte
// ranges of the vma.
func refRanges(refs []image.PageRef) [][2]int64 {
	var out [][2]int64
	for _, r := range refs {
		s := int64(r.Index) * image.PageSize
		if n := len(out); n > 0 && out[n-1][1] == s {
			out[n-1][1] += image.PageSize
			continue
		}
		out = append(out, [2]int64{s, s + image.PageSize})
	}
	return out
}
