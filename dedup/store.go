package dedup

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/ckptfs/ckptfs/image"
	badger "github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
)

// Store is a store opened locally: this process owns the Badger database.
type Store struct {
	dir  string
	db   *badger.DB
	lock *os.File
	// index is the set of stored page hashes and where they are (see
	// pageIndex), loaded from the pack index records (packindex.go) by the
	// first Missing, PutPages or page read (commands like ls never need
	// it). It is the only look-up of pages: Badger holds one record per
	// pack, not a key per page.
	index     atomic.Pointer[pageIndex]
	indexLoad sync.Mutex
	// reader is the read transaction ReadPage shares (see sharedReader).
	reader *sharedReader

	// gcMu keeps GC apart from writers: GC takes it exclusively, Missing,
	// PutPages, Commit and Remove share it.
	gcMu sync.RWMutex
	// commitMu serialises commits (id uniqueness).
	commitMu sync.Mutex
	// putMu guards pending and orders index updates between concurrent
	// PutPages calls, so that each page is written and counted once.
	putMu sync.Mutex
	// pending holds the pages being written by a PutPages call, by the
	// first 8 bytes of their hash (pendingKey, pending.go): two hashes
	// that share them are told apart in claim.
	pending pendingSet
	// failedPacks are the packs whose seal failed (their pages are not
	// stored: see rotateLocked).
	failedPacks map[packID]bool
	// inflight counts client sessions that have sent pages but not yet
	// committed: their pages are referenced by no manifest yet, so GC must
	// not run.
	inflight atomic.Int64

	// packMu guards the open packs (their pages are in the page index,
	// not in Badger, until they are sealed): idle, those no writer holds,
	// and busy, those writePages calls hold, each true once a seal asked
	// for it (see seal).
	packMu sync.Mutex
	idle   []*packWriter
	busy   map[*packWriter]bool
	// packBufs are the buffers of sealed packs, kept for the next ones
	// (see packBuffers); packMu guards them.
	packBufs []packBuffers
	// sealing counts the packs being sealed in the background (at most
	// maxSealing: sealSlots), sealErr is the first seal that failed.
	sealing   sync.WaitGroup
	sealSlots chan struct{}
	sealErr   error
	// packs are the sealed packs, open for reading.
	packs *packFiles
	// compress says whether PutPages stores pages compressed.
	compress atomic.Bool
	// progress is told how far Verify and GC are (progress.go).
	progress ProgressFunc

	// format is the store's format (see StoreFormat).
	format atomic.Int32
	// logfn receives Serve's reports (see SetLogf).
	logfn atomic.Pointer[func(format string, args ...any)]

	closeOnce sync.Once
	closeErr  error
}

// storeOptions are the Badger options, chosen by measurement (see
// bench_test.go and the package report):
//   - pages live in packs (pack.go); Badger holds their 24-byte locations
//     in the LSM beside the keys, and page-table chunks and manifests
//     (> 1 KiB) in the value log (ValueThreshold 1 KiB);
//   - value log files of 64 MiB so that GC can rewrite and drop files on
//     stores smaller than the 1 GiB default;
//   - no block compression: the LSM holds hashes and locations, which do
//     not compress;
//   - no block cache: uncompressed tables are read straight from their
//     mmap, and the cache's look-up and insert per block cost more than
//     they save (BenchmarkReadPageRandom: x-pread ~6 against ~7 with a
//     32 MiB cache);
//   - every table's block checksums are checked before Badger opens it
//     (checkTable in opencheck.go, where a panic is recovered: Badger's own
//     open-time check can panic in a goroutine of its own), so a damaged
//     table makes Open fail (and verify say so) instead of panicking on a
//     later read; tables hold keys and small values only;
//   - memtables of 16 MiB (not 64): the index entries of a GiB of pages
//     are ~25 MB, and each memtable's arena is Go heap, so a dump's peak
//     memory drops by up to 5 x 48 MiB for a few more L0 flushes; at
//     most 3 of them (not 5) wait for their flush;
//   - quiet logger.
//
// Before Badger opens the directory, checkBadgerFiles (opencheck.go)
// refuses a store that Badger would cut or start afresh.
func storeOptions(dir string) badger.Options {
	return badger.DefaultOptions(dir).
		WithLogger(quietLogger{}).
		WithValueThreshold(1024).
		WithValueLogFileSize(64 << 20).
		WithCompression(options.None).
		WithBlockCacheSize(0).
		WithMemTableSize(16 << 20).
		WithNumMemtables(3).
		WithNumCompactors(2).
		WithMetricsEnabled(false)
}

// badgerOptions is storeOptions; benchmarks swap it to compare settings.
var badgerOptions = storeOptions

// Open opens (creating if needed) the store in dir. It returns an error
// wrapping ErrLocked if another process owns it, ErrOldStore if it needs
// `ckptfs migrate`.
func Open(dir string) (*Store, error) { return open(dir, false) }

func open(dir string, migrating bool) (*Store, error) {
	if err := checkStoreDir(dir); err != nil {
		return nil, err
	}
	fresh, err := prepareStoreDir(dir)
	if err != nil {
		return nil, err
	}
	lock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	if err := checkBadgerFiles(dir); err != nil {
		lock.Close()
		return nil, err
	}
	db, err := openBadger(badgerOptions(dir))
	if err != nil {
		lock.Close()
		return nil, fmt.Errorf("open store %s: %w", dir, err)
	}
	format, err := checkFormat(db, dir, fresh, migrating)
	if err == nil {
		err = privateFiles(dir) // and those Badger just made
	}
	if err != nil {
		db.Close()
		lock.Close()
		return nil, err
	}
	s := &Store{dir: dir, db: db, lock: lock, reader: &sharedReader{db: db}, failedPacks: make(map[packID]bool),
		packs: newPackFiles(dir), sealSlots: make(chan struct{}, maxSealing),
		busy: make(map[*packWriter]bool)}
	s.format.Store(int32(format))
	return s, nil
}

// pages returns the page index, loading it on first use.
// IndexPreloader is a Repo that can start loading what its first page
// look-up needs while the caller does other work.
type IndexPreloader interface {
	// PreloadIndex starts the load and returns a channel closed when it
	// has ended (an error is left for the first look-up to meet again).
	PreloadIndex() <-chan struct{}
}

// PreloadIndex builds the page index from the pack records in the
// background. A 4 GiB store's takes ~300 ms, which a dump otherwise pays
// at its first look-up, after the tree is released.
func (s *Store) PreloadIndex() <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.pages()
	}()
	return done
}

func (s *Store) pages() (*pageIndex, error) {
	if x := s.index.Load(); x != nil {
		return x, nil
	}
	s.indexLoad.Lock()
	defer s.indexLoad.Unlock()
	if x := s.index.Load(); x != nil {
		return x, nil
	}
	x, problems, err := loadPageIndex(s.db)
	if err != nil {
		return nil, fmt.Errorf("load page index: %w", err)
	}
	for _, p := range problems {
		s.logf("%s (its pages read as missing; run ckptfs verify)", p)
	}
	s.index.Store(x)
	return x, nil
}

// checkStoreDir refuses a directory that has files but is no store, so that
// a mistyped -s does not chmod and fill, say, a home directory.
func checkStoreDir(dir string) error {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) || len(ents) == 0 {
		return nil
	}
	if err != nil {
		return fmt.Errorf("open store: %w", err)
	}
	for _, e := range ents {
		if e.Name() == lockName || e.Name() == "MANIFEST" {
			return nil
		}
	}
	return fmt.Errorf("%s is not a ckptfs store (it is not empty and has no %s)", dir, lockName)
}

// Dir returns the store directory.
func (s *Store) Dir() string { return s.dir }

// Close closes the database and releases the lock.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		// Pages put but not committed are sealed too: harmless (gc
		// drops them if no commit references them) and simplest.
		sealErr := s.seal()
		s.packs.close()
		s.reader.disable()
		s.closeErr = s.db.Close()
		if s.closeErr == nil {
			s.closeErr = sealErr
		}
		s.lock.Close()
		if s.closeErr != nil {
			s.closeErr = fmt.Errorf("close store %s: %w", s.dir, s.closeErr)
		}
	})
	return s.closeErr
}

func pageKey(h image.Hash) []byte {
	k := make([]byte, 2+len(h))
	copy(k, "p/")
	copy(k[2:], h[:])
	return k
}

// Missing reports which hashes are not stored.
func (s *Store) Missing(hashes []image.Hash) ([]bool, error) {
	s.gcMu.RLock()
	defer s.gcMu.RUnlock()
	return s.missing(hashes)
}

func (s *Store) missing(hashes []image.Hash) ([]bool, error) {
	x, err := s.pages()
	if err != nil {
		return nil, fmt.Errorf("look up pages: %w", err)
	}
	miss := make([]bool, len(hashes))
	x.missing(hashes, miss)
	return miss, nil
}

// PutPages stores pages under their hashes; pages already stored are
// skipped. Zero pages and pages of the wrong size are refused. The hashes
// are trusted (the dumper computed them); Verify re-checks them.
func (s *Store) PutPages(hashes []image.Hash, pages [][]byte) (int64, error) {
	if len(hashes) != len(pages) {
		return 0, fmt.Errorf("put pages: %d hashes for %d pages", len(hashes), len(pages))
	}
	for i, p := range pages {
		if len(p) != image.PageSize {
			return 0, fmt.Errorf("put page %s: %d bytes, want %d", hashes[i], len(p), image.PageSize)
		}
		if IsZero(p) {
			return 0, fmt.Errorf("put page %s: zero pages are not stored", hashes[i])
		}
	}
	s.gcMu.RLock()
	defer s.gcMu.RUnlock()
	x, err := s.pages()
	if err != nil {
		return 0, fmt.Errorf("put pages: %w", err)
	}
	// Concurrent calls write at the same time (Badger batches their
	// writes); a page another call is writing is waited for, not written
	// twice. Pages whose writer failed are tried again here.
	sc := getPutScratch(len(hashes))
	defer putPutScratch(sc)
	idx := sc.idx[:len(hashes)] // pages of hashes still to store
	for i := range idx {
		idx[i] = i
	}
	var added int64
	for len(idx) > 0 {
		mine, others := s.claim(x, hashes, idx, sc)
		if len(mine.hashes) > 0 {
			var locs []packLoc
			locs, mine.err = s.writePages(mine, pages)
			s.putMu.Lock()
			if mine.err == nil {
				x.add(mine.hashes, locs)
				mine.err = s.dropFailedLocked(x, mine.hashes, locs)
			}
			for i := range mine.hashes {
				s.pending.delete(pendingKey(&mine.hashes[i]))
			}
			s.putMu.Unlock()
			close(mine.done)
			if mine.err != nil {
				return 0, fmt.Errorf("put pages: %w", mine.err)
			}
			added += int64(len(mine.hashes)) * image.PageSize
		}
		// The pages another call was writing are looked at again once it
		// is done: stored (found in the index), or its write failed, or
		// only their pendingKey was the same, and this call writes them.
		idx = idx[:0]
		for _, o := range others {
			<-o.batch.done
			idx = append(idx, o.i)
		}
	}
	return added, nil
}

// dropFailedLocked takes out of the index x the pages of hashes (at
// locs) that are in a pack whose seal failed meanwhile, and says so. putMu
// is held.
func (s *Store) dropFailedLocked(x *pageIndex, hashes []image.Hash, locs []packLoc) error {
	if len(s.failedPacks) == 0 {
		return nil
	}
	var bad []image.Hash
	var id packID
	for k, l := range locs {
		if s.failedPacks[l.pack] {
			bad, id = append(bad, hashes[k]), l.pack
		}
	}
	if len(bad) == 0 {
		return nil
	}
	x.remove(bad)
	return fmt.Errorf("seal pack %s: failed", id)
}

// putBatch is the set of pages one PutPages call is writing. Other calls
// that wait for it read done alone: hashes and idx (the call's scratch
// memory) are the call's once done is closed.
type putBatch struct {
	hashes []image.Hash
	idx    []int // index of each page in the call's arguments
	done   chan struct{}
	err    error       // set before done is closed
	sc     *putScratch // writePages's memory (nil: its own)
}

// putScratch is the memory of one PutPages call, kept for the next call
// (putScratchPool): a dump makes ~1,000 calls of 256 pages, and their
// ~30 KiB each of short-lived slices were ~40 MB of garbage a GiB,
// which grew the heap (fresh memory costs a page fault a page).
type putScratch struct {
	idx    []int        // the pages still to store
	hashes []image.Hash // putBatch.hashes
	bidx   []int        // putBatch.idx
	blobs  [][]byte     // writePages: the stored form of each page
	flags  []uint32
	locs   []packLoc
	others []otherPut
	warmed uint32 // keeps what claim's pageIndex.warm read
}

var putScratchPool = sync.Pool{New: func() any { return new(putScratch) }}

// getPutScratch returns scratch memory for a call of n pages.
func getPutScratch(n int) *putScratch {
	sc := putScratchPool.Get().(*putScratch)
	if cap(sc.idx) < n {
		sc.idx = make([]int, n)
		sc.hashes = make([]image.Hash, 0, n)
		sc.bidx = make([]int, 0, n)
		sc.blobs = make([][]byte, n)
		sc.flags = make([]uint32, n)
		sc.locs = make([]packLoc, n)
	}
	return sc
}

// putPutScratch gives sc back for another call, dropping its references
// to pages and batches.
func putPutScratch(sc *putScratch) {
	clear(sc.blobs)
	clear(sc.others[:cap(sc.others)])
	sc.others = sc.others[:0]
	putScratchPool.Put(sc)
}

// otherPut is a page of a PutPages call that another call is writing.
type otherPut struct {
	i     int
	batch *putBatch
}

// claim sorts the pages idx of hashes into those stored already (dropped),
// those another call is writing (others) and those this call must write
// (mine, now pending). A page whose pendingKey another page has (another
// call's, or an other page of this call: its duplicate, or a hash that
// only shares the key) is among the others, to be looked at again once
// that call is done.
// Its memory is sc's (mine's slices and others are valid until the next
// claim with sc).
func (s *Store) claim(x *pageIndex, hashes []image.Hash, idx []int, sc *putScratch) (*putBatch, []otherPut) {
	mine := &putBatch{done: make(chan struct{}), hashes: sc.hashes[:0], idx: sc.bidx[:0], sc: sc}
	others := sc.others[:0]
	s.putMu.Lock()
	defer s.putMu.Unlock()
	x.mu.RLock()
	var w uint32
	for _, i := range idx {
		w += x.warm(&hashes[i])
	}
	sc.warmed = w
	for _, i := range idx {
		h := &hashes[i]
		if x.has(h) {
			continue
		}
		key := pendingKey(h)
		if b := s.pending.get(key); b != nil {
			others = append(others, otherPut{i, b})
			continue
		}
		s.pending.put(key, mine)
		mine.hashes = append(mine.hashes, *h)
		mine.idx = append(mine.idx, i)
	}
	x.mu.RUnlock()
	sc.others = others
	return mine, others
}

// quietLogger drops Badger's chatter and keeps only its errors.
type quietLogger struct{}

func (quietLogger) Errorf(f string, a ...any) {
	fmt.Fprintln(os.Stderr, "ckptfs: badger:", strings.TrimSpace(fmt.Sprintf(f, a...)))
}
func (quietLogger) Warningf(string, ...any) {}
func (quietLogger) Infof(string, ...any)    {}
func (quietLogger) Debugf(string, ...any)   {}

// diskUsage returns the bytes allocated to the files under dir.
func diskUsage(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		if fi, err := d.Info(); err == nil {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				n += st.Blocks * 512
			}
		}
		return nil
	})
	return n
}
