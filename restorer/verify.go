package restorer

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/dedup"
	"github.com/ckptfs/ckptfs/image"
)

// Page verification: every page restore writes is checked against its
// hash in the vma's pagemap (`<address> <hash>` per saved page,
// docs/tree-format.md). A copy of a checkpoint with a flipped byte, a page
// missing (a hole where pagemap has a page) or data where pagemap has none
// is refused, naming the task, the vma and the page. Before any process is
// created, the pagemaps are checked against the pages files' data ranges
// and the pages of file and shared mappings are hashed; the pages of
// anonymous memory (most of a checkpoint) are hashed by fillMemory just
// before it writes them, so that each is read once: a mismatch there
// fails the restore, which kills every process it created before any
// ran. Options.NoVerifyPages skips this for a copy edited on purpose.

// ErrPageMismatch says a page of a checkpoint tree is not what its
// pagemap says (wrapped, with task, vma and address in the message).
var ErrPageMismatch = errors.New("page does not match its pagemap")

// pageSum is the page hash of the store (dedup.Sum): BLAKE3-256.
func pageSum(page []byte) image.Hash { return dedup.Sum(page) }

// verifiedVMA says whether restore writes vma v from its pages file: not
// the vdso unit and not shared file mappings (the file holds their
// contents).
func verifiedVMA(v *image.VMA) bool {
	switch v.Kind {
	case image.VMAVdso, image.VMAVvar, image.VMAVsyscall:
		return false
	}
	return !(v.Kind == image.VMAFile && v.Shared())
}

// zeroFillOK says whether a zero page of v that pagemap does not list may
// be written as zeros: true for anonymous memory (where it was zero
// anyway); false where a hole means "keep what is there" (a private file
// mapping keeps the file's page, a memfd or SysV segment its data).
func zeroFillOK(v *image.VMA) bool {
	switch v.Kind {
	case image.VMAAnon, image.VMAHeap, image.VMAStack:
		return true
	}
	return v.SharedAnon()
}

// pageCheck is a piece of one vma's pages file to check.
type pageCheck struct {
	pid  int
	v    *image.VMA
	off  int64  // offset of buf in the vma
	buf  []byte // the pages
	refs []image.PageRef
	// droppable: zeros pagemap does not list may be left out of what
	// fillMemory writes (a copy that lost its holes: git, tar, cp
	// without sparse detection) rather than refused.
	droppable bool
}

// verifyPages checks every page restore writes for checkpoint c in dir,
// hashing on every CPU. scans gives the data ranges of the vmas fillMemory
// writes; those of shared memory vmas are found here. With fromStore,
// fillMemory reads its vmas from the store, which checks them
// (pagesource.go): only shared memory is checked, and scans are not
// waited for. The vmas skip selects are not checked here either (a lazy
// restore's page server checks those as it serves them). Without skip,
// the pages of anonymous memory are not read here: only their pagemap is
// checked against the data ranges, and the scan of their task gets the
// pagemap entries (pageScan.checks) for fillMemory, which hashes each
// chunk just before it writes it (checkChunk).
func verifyPages(dir string, c *image.Checkpoint, scans pageScans, fromStore bool, skip func(*image.VMA) bool) error {
	v := &pageVerifier{work: make(chan pageCheck, 2*writers), skip: skip,
		owner: map[*image.VMA]map[*image.VMA][][2]int64{}, unlisted: map[*image.VMA][]int64{}}
	var wg sync.WaitGroup
	for range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// The pages files are mapped: a read error (EIO from a
			// mount whose store lost the page) is a SIGBUS, made a
			// panic that check recovers.
			debug.SetPanicOnFault(true)
			for pc := range v.work {
				if !v.failed.Load() {
					v.check(pc)
					addProgress(c, int64(len(pc.buf))) // progress.go
				}
			}
		}()
	}
	err := v.feed(dir, c, scans, fromStore)
	close(v.work)
	wg.Wait()
	v.readahead.Wait()
	for _, m := range v.maps {
		unix.Munmap(m)
	}
	if err != nil {
		return fmt.Errorf("%w\n(restore --no-verify-pages skips the page check)", err)
	}
	if err := v.err(); err != nil {
		return err
	}
	v.dropUnlisted()
	return nil
}

// dropUnlisted takes the zero pages pagemap does not list out of the data
// ranges fillMemory writes, where writing them would overwrite what the
// mapping holds (a private file mapping's page of the file).
func (v *pageVerifier) dropUnlisted() {
	for vma, offs := range v.unlisted {
		slices.Sort(offs)
		ranges := v.owner[vma]
		var out [][2]int64
		for _, r := range ranges[vma] {
			start := r[0]
			for _, o := range offs {
				if o < start || o >= r[1] {
					continue
				}
				if o > start {
					out = append(out, [2]int64{start, o})
				}
				start = min(o+image.PageSize, r[1])
			}
			if start < r[1] {
				out = append(out, [2]int64{start, r[1]})
			}
		}
		ranges[vma] = out
	}
}

type pageVerifier struct {
	work   chan pageCheck
	skip   func(*image.VMA) bool // vmas not checked here (verifyPagesExcept)
	failed atomic.Bool
	maps   [][]byte
	// readahead counts the readAhead goroutines still using maps.
	readahead sync.WaitGroup
	// owner maps a written vma to the ranges map fillMemory takes it from.
	owner map[*image.VMA]map[*image.VMA][][2]int64
	// unlisted are offsets of zero pages pagemap does not list, per vma
	// (under mu), for dropUnlisted.
	unlisted map[*image.VMA][]int64

	mu   sync.Mutex
	errs []error
	more int // mismatches found after the first few
}

func (v *pageVerifier) fail(err error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.failed.Store(true)
	if len(v.errs) < 3 {
		v.errs = append(v.errs, err)
	} else {
		v.more++
	}
}

func (v *pageVerifier) err() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if len(v.errs) == 0 {
		return nil
	}
	err := errors.Join(v.errs...)
	if v.more > 0 {
		err = fmt.Errorf("%w\n(and %d more)", err, v.more)
	}
	return fmt.Errorf("%w\nthe checkpoint's pages are damaged; if the copy was changed on purpose, restore it with --no-verify-pages", err)
}

// vmaName names vma v of task pid for a message; pid 0 leaves the task
// out (the caller's error names it).
func vmaName(pid int, v *image.VMA) string {
	s := "vma " + v.DirName()
	if pid != 0 {
		s = fmt.Sprintf("task %d: %s", pid, s)
	}
	if v.Name != "" {
		s += " (" + v.Name + ")"
	}
	return s
}

// feedParallel is how many tasks feed reads at once: on a cold copy each
// vma costs a few small reads (pagemap, the pages file's extents) that
// overlap.
const feedParallel = 16

// feed queues every page of the checkpoint to check, vma by vma, tasks
// feedParallel at a time.
func (v *pageVerifier) feed(dir string, c *image.Checkpoint, scans pageScans, fromStore bool) error {
	sem := make(chan struct{}, feedParallel)
	errs := make([]error, len(c.Tasks))
	var wg sync.WaitGroup
	for i, t := range c.Tasks {
		if t.State == "Z" {
			continue
		}
		if v.failed.Load() {
			break
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			errs[i] = v.feedTask(dir, t, scans, fromStore)
			if errs[i] != nil {
				v.failed.Store(true)
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (v *pageVerifier) feedTask(dir string, t *image.Task, scans pageScans, fromStore bool) error {
	var scanned map[*image.VMA][][2]int64
	if !fromStore {
		var err error
		if scanned, err = scans.get(t.PID); err != nil {
			return err
		}
	}
	deferred := map[*image.VMA][]image.PageRef{}
	for _, vma := range t.VMAs {
		if !verifiedVMA(vma) || fromStore && filledVMA(vma) {
			continue // not written, or checked by the store (pagesource.go)
		}
		if v.failed.Load() {
			return nil
		}
		rs, ok := scanned[vma]
		if ok && v.skip != nil && v.skip(vma) {
			continue
		}
		if ok {
			v.mu.Lock()
			v.owner[vma] = scanned
			v.mu.Unlock()
		}
		if !ok && isShmem(vma) {
			var err error
			if rs, err = dataRanges(image.PagesPath(dir, t.PID, vma), int64(vma.Len())); err != nil {
				return err
			}
		}
		// The pages of anonymous memory fillMemory writes are hashed
		// as it writes them (checkChunk), each read once: here only
		// that pagemap and the data ranges agree.
		deferOK := ok && v.skip == nil && filledVMA(vma) && zeroFillOK(vma)
		refs, err := v.feedVMA(dir, t.PID, vma, rs, deferOK)
		if err != nil {
			return fmt.Errorf("%s: %w", vmaName(t.PID, vma), err)
		}
		if deferOK {
			deferred[vma] = refs
		}
	}
	if sc := scans[t.PID]; sc != nil && len(deferred) > 0 {
		sc.checks = deferred
	}
	return nil
}

// feedVMA queues the data ranges rs of one vma's pages file with the
// pagemap entries they hold; a pagemap entry in a hole is a missing page.
// With deferred, the pages are not read (fillMemory checks them): only
// that every pagemap entry lies in a data range. It returns the vma's
// pagemap entries.
func (v *pageVerifier) feedVMA(dir string, pid int, vma *image.VMA, rs [][2]int64, deferred bool) ([]image.PageRef, error) {
	pagesPath := image.PagesPath(dir, pid, vma)
	refs, err := readPagemap(filepath.Join(filepath.Dir(pagesPath), "pagemap"), vma)
	if err != nil {
		return nil, err
	}
	if len(rs) == 0 && len(refs) == 0 {
		return refs, nil
	}
	if deferred {
		return refs, refsInRanges(vma, refs, rs)
	}
	f, err := image.OpenTreeFile(pagesPath)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	m, merr := unix.Mmap(int(f.Fd()), 0, int(vma.Len()), unix.PROT_READ, unix.MAP_SHARED)
	if merr == nil {
		v.mu.Lock()
		v.maps = append(v.maps, m)
		v.mu.Unlock()
		v.readAhead(m, rs)
	}
	missing := func(r image.PageRef) error {
		return fmt.Errorf("page %#x: %w: pagemap lists it (hash %s) but pages has a hole there", vma.Start+uint64(r.Index)*image.PageSize, ErrPageMismatch, r.Hash)
	}
	j := 0
	for _, r := range rs {
		for off := r[0]; off < r[1]; {
			n := min(r[1]-off, chunkSize)
			if j < len(refs) && int64(refs[j].Index)*image.PageSize < off {
				return nil, missing(refs[j])
			}
			k := j
			for j < len(refs) && int64(refs[j].Index)*image.PageSize < off+n {
				j++
			}
			v.mu.Lock()
			droppable := v.owner[vma] != nil
			v.mu.Unlock()
			pc := pageCheck{pid: pid, v: vma, off: off, refs: refs[k:j], droppable: droppable}
			if merr == nil {
				pc.buf = m[off : off+n]
			} else {
				pc.buf = make([]byte, n)
				if _, err := f.ReadAt(pc.buf, off); err != nil && err != io.EOF {
					return nil, fmt.Errorf("checkpoint file %s: %w", pagesPath, err)
				}
			}
			v.work <- pc
			off += n
		}
	}
	if j < len(refs) {
		return nil, missing(refs[j])
	}
	return refs, nil
}

// refsInRanges says which pagemap entry of refs (ascending) lies in no
// data range of rs (ascending, page aligned starts): a missing page.
func refsInRanges(vma *image.VMA, refs []image.PageRef, rs [][2]int64) error {
	k := 0
	for _, r := range refs {
		off := int64(r.Index) * image.PageSize
		for k < len(rs) && rs[k][1] <= off {
			k++
		}
		if k == len(rs) || off < rs[k][0] {
			return fmt.Errorf("page %#x: %w: pagemap lists it (hash %s) but pages has a hole there", vma.Start+uint64(off), ErrPageMismatch, r.Hash)
		}
	}
	return nil
}

// checkChunk checks buf, the bytes at off of vma v that
// fillMemory is about to write, against refs (the pagemap entries of
// buf's pages, ascending) as verifyPages does: a listed page must hash to
// its entry, an unlisted one must be zero. Only for vmas whose zero pages
// may be written (zeroFillOK). A fault reading buf (a mapped file that
// shrank) is a mismatch, given the goroutine runs with SetPanicOnFault.
func checkChunk(v *image.VMA, off int64, buf []byte, refs []image.PageRef) error {
	pv := &pageVerifier{}
	pv.check(pageCheck{v: v, off: off, buf: buf, refs: refs}) // the restore's error names the task
	return pv.err()
}

// readaheadStep is how much of a mapped pages file one MADV_WILLNEED asks
// the kernel to read.
const readaheadStep = 16 << 20

// readAhead asks the kernel to read the data ranges rs of the mapped pages
// file m while the workers hash what is already in. Without it every page
// fault on a file not in the page cache waits for a read of 128 KiB: a
// cold 1 GiB pages file took 2.8 s to check, against 0.6 s to cat.
func (v *pageVerifier) readAhead(m []byte, rs [][2]int64) {
	v.readahead.Add(1)
	go func() {
		defer v.readahead.Done()
		for _, r := range rs {
			for off := r[0]; off < r[1] && !v.failed.Load(); off += readaheadStep {
				unix.Madvise(m[off:min(off+readaheadStep, r[1])], unix.MADV_WILLNEED)
			}
		}
	}()
}

// checkBatch is how many listed pages check hashes in one dedup.SumPages
// call (eight at a time in the AVX2 lanes).
const checkBatch = 64

// check hashes the pages of pc against their pagemap entries.
func (v *pageVerifier) check(pc pageCheck) {
	refs := pc.refs
	var p int64
	defer func() {
		if recover() != nil {
			v.fail(fmt.Errorf("%s: page %#x: %w: reading it from pages failed (an I/O error: through a mount, the store may have lost the page; ckptfs verify tells)", vmaName(pc.pid, pc.v), pc.v.Start+uint64(pc.off+p), ErrPageMismatch))
		}
	}()
	pages := make([][]byte, 0, checkBatch)
	wants := make([]image.Hash, 0, checkBatch)
	addrs := make([]uint64, 0, checkBatch)
	got := make([]image.Hash, checkBatch)
	// hashListed checks the listed pages gathered so far; false: a mismatch.
	hashListed := func() bool {
		if len(pages) == 0 {
			return true
		}
		p = int64(addrs[0]-pc.v.Start) - pc.off // a fault names the batch's first page
		dedup.SumPages(pages, got[:len(pages)])
		for i := range pages {
			if got[i] != wants[i] {
				v.fail(fmt.Errorf("%s: page %#x: %w: its content hashes to %s, pagemap says %s", vmaName(pc.pid, pc.v), addrs[i], ErrPageMismatch, got[i], wants[i]))
				return false
			}
		}
		pages, wants, addrs = pages[:0], wants[:0], addrs[:0]
		return true
	}
	for p = 0; p < int64(len(pc.buf)); p += image.PageSize {
		page := pc.buf[p:min(p+image.PageSize, int64(len(pc.buf)))]
		idx := uint32((pc.off + p) / image.PageSize)
		addr := pc.v.Start + uint64(idx)*image.PageSize
		if len(refs) > 0 && refs[0].Index == idx {
			want := refs[0].Hash
			refs = refs[1:]
			if len(page) != image.PageSize {
				if hashListed() {
					v.fail(fmt.Errorf("%s: page %#x: %w: pages ends inside it", vmaName(pc.pid, pc.v), addr, ErrPageMismatch))
				}
				return
			}
			pages, wants, addrs = append(pages, page), append(wants, want), append(addrs, addr)
			if len(pages) == checkBatch {
				at := p
				if !hashListed() {
					return
				}
				p = at
			}
			continue
		}
		if !isZero(page) {
			if hashListed() {
				v.fail(fmt.Errorf("%s: page %#x: %w: pages holds data there but pagemap lists no page", vmaName(pc.pid, pc.v), addr, ErrPageMismatch))
			}
			return
		} else if !zeroFillOK(pc.v) && pc.droppable {
			v.mu.Lock()
			v.unlisted[pc.v] = append(v.unlisted[pc.v], pc.off+p)
			v.mu.Unlock()
		} else if !zeroFillOK(pc.v) {
			if hashListed() {
				v.fail(fmt.Errorf("%s: page %#x: %w: pages holds zeros there (not a hole) but pagemap lists no page; restore would overwrite what the mapping holds", vmaName(pc.pid, pc.v), addr, ErrPageMismatch))
			}
			return
		}
	}
	hashListed()
}

var zeroPage [image.PageSize]byte

func isZero(b []byte) bool { return bytes.Equal(b, zeroPage[:len(b)]) }

// readPagemap parses a vma's pagemap: one `<address> <hash>` line per
// saved page, addresses in the vma, page aligned, ascending. A 1 GiB vma
// has 262144 lines (21 MB): they are read through one small buffer and
// parsed without an allocation each, so that only the entries take
// memory.
func readPagemap(path string, vma *image.VMA) ([]image.PageRef, error) {
	f, err := image.OpenTreeFile(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	// At most one line per page of the vma; a longer file is refused by
	// the line checks (addresses ascending, in the vma) anyway.
	limit := int64(vma.Len()/image.PageSize)*pagemapLineMax + pagemapLineMax
	size := int64(pagemapReadSize)
	if st, err := f.Stat(); err == nil {
		size = min(st.Size(), limit)
	}
	refs := make([]image.PageRef, 0, size/pagemapLineTypical+1)
	buf := make([]byte, max(min(size+1, pagemapReadSize), 2*pagemapLineMax))
	line := 0
	parse := func(text []byte) error {
		line++
		bad := func(why string) error {
			return fmt.Errorf("%s line %d: %s: %q", path, line, why, text)
		}
		a, h, ok := bytes.Cut(text, []byte(" "))
		if !ok {
			return bad("want `<address> <hash>`")
		}
		addr, ok := parseHexAddr(a)
		if !ok {
			var err error
			if addr, err = strconv.ParseUint(string(a), 0, 64); err != nil {
				return bad("bad address")
			}
		}
		var hash image.Hash
		if len(h) != 2*len(hash) {
			return bad("bad hash")
		}
		if _, err := hex.Decode(hash[:], h); err != nil {
			return bad("bad hash")
		}
		if addr < vma.Start || addr >= vma.End || addr%image.PageSize != 0 {
			return bad("address outside the vma or not page aligned")
		}
		idx := uint32((addr - vma.Start) / image.PageSize)
		if n := len(refs); n > 0 && refs[n-1].Index >= idx {
			return bad("addresses not ascending")
		}
		refs = append(refs, image.PageRef{Index: idx, Hash: hash})
		return nil
	}
	r := io.LimitReader(f, limit+1)
	var total int64
	carry := 0 // bytes of a line begun in the previous read
	for {
		n, err := io.ReadFull(r, buf[carry:])
		total += int64(n)
		eof := err == io.EOF || err == io.ErrUnexpectedEOF
		if err != nil && !eof {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if total > limit {
			return nil, fmt.Errorf("%s: too long for a pagemap of the vma's %d pages", path, vma.Len()/image.PageSize)
		}
		data := buf[:carry+n]
		for {
			text, rest, found := bytes.Cut(data, []byte("\n"))
			if !found {
				break
			}
			if err := parse(text); err != nil {
				return nil, err
			}
			data = rest
		}
		if eof {
			if len(data) > 0 {
				if err := parse(data); err != nil {
					return nil, err
				}
			}
			return refs, nil
		}
		if len(data) == len(buf) {
			// One line fills the buffer: longer than any a pagemap has.
			line++
			return nil, fmt.Errorf("%s line %d: want `<address> <hash>`: %q (cut), longer than any pagemap line", path, line, data[:pagemapLineMax])
		}
		carry = copy(buf, data)
	}
}

// pagemapReadSize is the buffer readPagemap reads a pagemap through.
const pagemapReadSize = 256 << 10

// A pagemap line is "0x" and up to 16 hex digits, a space, 64 hex
// digits and a newline (pagemapLineMax bytes at most; 80 for a typical
// user-space address of 12 digits).
const (
	pagemapLineMax     = 2 + 16 + 1 + 64 + 1
	pagemapLineTypical = 2 + 12 + 1 + 64 + 1
)

// parseHexAddr parses "0x" and 1 to 16 lower- or upper-case hex digits,
// the form pagemap is written in; ok is false for anything else (the
// caller then tries strconv.ParseUint's forms).
func parseHexAddr(b []byte) (uint64, bool) {
	if len(b) < 3 || len(b) > 18 || b[0] != '0' || b[1] != 'x' {
		return 0, false
	}
	var v uint64
	for _, c := range b[2:] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		case 'A' <= c && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		v = v<<4 | uint64(c)
	}
	return v, true
}
