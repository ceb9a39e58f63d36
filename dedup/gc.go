package dedup

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"

	"github.com/ckptfs/ckptfs/image"
	"github.com/ckptfs/ckptfs/internal/testhold"
	badger "github.com/dgraph-io/badger/v4"
)

// gcDiscardRatio is the share of garbage a value-log file must hold before
// GC rewrites it.
const gcDiscardRatio = 0.3

// ErrBusy says GC cannot run because a dump is writing to the store.
var ErrBusy = errors.New("a dump is in progress")

// liveIDs returns the ids that have a manifest.
func liveIDs(txn *badger.Txn) map[string]bool {
	ids := make(map[string]bool)
	it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte("m/")})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		ids[string(it.Item().Key()[2:])] = true
	}
	return ids
}

func hashLess(a, b image.Hash) int { return bytes.Compare(a[:], b[:]) }

// gcRewriteShare is the share of dead bytes at which GC rewrites a pack
// (copies its live pages to a new pack and deletes it); a pack with no
// live page is deleted whatever its size.
const gcRewriteShare = 0.3

// gcSmallPack is the size below which GC merges a pack with others
// (each dump that adds few pages makes a small pack).
const gcSmallPack = packTarget / 4

// GC deletes the pages that no checkpoint references, the page-table
// chunks no checkpoint uses and those of checkpoints never committed; it
// deletes packs that hold no live page and rewrites those that are mostly
// dead, then gives Badger's space back too (memtable flush, LSM flatten,
// value-log rewrite).
//
// Every step leaves a sound store if the process is killed after it: new
// packs are fsynced before any index entry points to them, index entries
// are moved and the index synced before the old packs are deleted, so a
// kill leaves at worst packs no entry points to, which the next GC
// deletes.
func (s *Store) GC() (_ GCResult, err error) {
	defer recoverBadger(&err, "gc")
	s.gcMu.Lock()
	defer s.gcMu.Unlock()
	// ReadPage calls use transactions of their own while pages go away.
	s.reader.disable()
	defer s.reader.enable()
	var res GCResult
	if n := s.inflight.Load(); n > 0 {
		return res, fmt.Errorf("gc: %w (%d uncommitted), try again when it is done", ErrBusy, n)
	}
	res.DiskBefore = diskUsage(s.dir)
	// Pages of sessions that never committed are in the open pack.
	if err := s.seal(); err != nil {
		return res, fmt.Errorf("gc: %w", err)
	}

	live, orphans, err := s.mark()
	if err != nil {
		return res, fmt.Errorf("gc: mark: %w (nothing deleted)", err)
	}
	s.report(PhaseGCSweep, 0, int64(len(live))*image.PageSize) // the total is known at its end

	res.Tables = int64(len(orphans))

	// Sweep: every pack index record's entries are live or dead. A
	// damaged record stops gc: it never deletes what it is not sure of.
	// A live page listed by two records (a gc killed between its two
	// batches) is live in the first only: the other copy is garbage.
	var dead []image.Hash
	packLive := make(map[packID][]packEntry)
	packDead := make(map[packID]int)
	seen := make([]bool, len(live))
	err = view(s.db, func(txn *badger.Txn) error {
		return readPackIndex(txn, func(r packRecord) error {
			if r.err != nil {
				return r.err
			}
			for _, e := range r.entries {
				if i, ok := slices.BinarySearchFunc(live, e.hash, hashLess); ok {
					if seen[i] {
						packDead[r.id]++
						continue
					}
					seen[i] = true
					packLive[r.id] = append(packLive[r.id], e)
					continue
				}
				dead = append(dead, e.hash)
				packDead[r.id]++
			}
			return nil
		})
	})
	if err != nil {
		return res, fmt.Errorf("gc: sweep: %w (nothing deleted)", err)
	}
	slices.SortFunc(dead, hashLess)
	dead = slices.Compact(dead)
	res.Pages = int64(len(dead))
	res.Bytes = res.Pages * image.PageSize
	if swept := int64(len(dead)+len(live)) * image.PageSize; swept > 0 {
		s.report(PhaseGCSweep, swept, swept)
	}

	// Which packs go, which are rewritten.
	ids, err := listPacks(s.dir)
	if err != nil {
		return res, fmt.Errorf("gc: list packs: %w", err)
	}
	var drop, rewrite, small []packID
	for _, id := range ids {
		fi, err := os.Stat(packPath(s.dir, id))
		if err != nil {
			return res, fmt.Errorf("gc: %w", err)
		}
		var liveBytes int64
		for _, e := range packLive[id] {
			liveBytes += int64(e.loc.length)
		}
		switch {
		case len(packLive[id]) == 0:
			drop = append(drop, id)
		case float64(fi.Size()-liveBytes) >= gcRewriteShare*float64(fi.Size()):
			rewrite = append(rewrite, id)
		case fi.Size() < gcSmallPack:
			small = append(small, id)
		}
	}
	// Small packs (of dumps that added few pages) are merged, with each
	// other or into the packs being rewritten anyway.
	if len(small)+len(rewrite) >= 2 {
		rewrite = append(rewrite, small...)
	}
	moved, kept, err := s.rewritePacks(rewrite, packLive)
	if err != nil {
		return res, fmt.Errorf("gc: rewrite packs: %w", err)
	}
	testhold.At("gc-packs-written")
	res.PacksDropped = int64(len(drop))
	res.PacksRewritten = int64(len(rewrite) - len(kept))

	// The index forgets the dead pages before their entries go: it must
	// never claim a page Badger lacks (a failed write only makes them look
	// missing, and PutPages stores them again).
	if x := s.index.Load(); x != nil {
		x.remove(dead)
	}
	keptSet := make(map[packID]bool)
	for _, id := range kept {
		keptSet[id] = true
	}
	gone := make(map[packID]bool)
	for _, id := range append(drop, rewrite...) {
		if !keptSet[id] {
			gone[id] = true
		}
	}
	// Two batches, each synced: first the records of the new packs and
	// the live-only records of kept packs that lost pages, then the
	// deletes (records of the packs that go, unused chunks and tables). A
	// kill between them leaves a page listed twice, which is harmless.
	wb := s.db.NewWriteBatch()
	defer wb.Cancel()
	if err := setPackIndex(wb, moved); err != nil {
		return res, fmt.Errorf("gc: move: %w", err)
	}
	for id, n := range packDead {
		if n == 0 || gone[id] || len(packLive[id]) == 0 {
			continue
		}
		if err := wb.Set(packIndexKey(id), encodePackIndex(id, packLive[id])); err != nil {
			return res, fmt.Errorf("gc: index: %w", err)
		}
	}
	if err := wb.Flush(); err != nil {
		return res, fmt.Errorf("gc: index: %w", err)
	}
	if err := s.db.Sync(); err != nil {
		return res, fmt.Errorf("gc: sync: %w", err)
	}
	if x := s.index.Load(); x != nil {
		// Where each live page is now: moved, or in a pack that stays
		// (the index may have named a copy that goes).
		var stay []packEntry
		for id, es := range packLive {
			if !gone[id] {
				stay = append(stay, es...)
			}
		}
		x.relocate(stay)
		x.relocate(moved)
	}
	del := s.db.NewWriteBatch()
	defer del.Cancel()
	for id := range gone {
		if err := del.Delete(packIndexKey(id)); err != nil {
			return res, fmt.Errorf("gc: delete: %w", err)
		}
	}
	for _, k := range orphans {
		if err := del.Delete(k); err != nil {
			return res, fmt.Errorf("gc: orphan tables: %w", err)
		}
	}
	if err := del.Flush(); err != nil {
		return res, fmt.Errorf("gc: delete: %w", err)
	}
	if err := s.db.Sync(); err != nil {
		return res, fmt.Errorf("gc: sync: %w", err)
	}
	testhold.At("gc-index-moved")
	// Only now can the packs go: no entry points to them any more.
	for _, id := range append(drop, rewrite...) {
		if !gone[id] {
			continue
		}
		if err := s.packs.remove(id); err != nil {
			return res, fmt.Errorf("gc: %w", err)
		}
		testhold.At("gc-pack-removed")
	}
	if len(drop)+len(rewrite) > 0 {
		if err := syncDir(filepath.Join(s.dir, packDir)); err != nil {
			return res, fmt.Errorf("gc: sync pack directory: %w", err)
		}
	}
	if res.Pages > 0 || res.Tables > 0 {
		s.report(PhaseGCReclaim, 0, 1)
		if err := s.reclaim(); err != nil {
			return res, fmt.Errorf("gc: reclaim space: %w", err)
		}
		s.report(PhaseGCReclaim, 1, 1)
	}
	res.DiskAfter = diskUsage(s.dir)
	if err := privateFiles(s.dir); err != nil { // the value logs GC rewrote
		s.logf("%v", err)
	}
	return res, nil
}

// mark returns the hashes of the pages the committed checkpoints
// reference (sorted, unique) and the keys of the
// page-table chunks none uses (orphans: of removed checkpoints, or of
// commits that did not finish). A checkpoint that does not load stops it:
// GC never deletes what it is not sure is dead.
func (s *Store) mark() (live []image.Hash, orphans [][]byte, err error) {
	liveChunks := make(map[image.Hash]bool)
	var markDone, markTotal int64
	if s.progress != nil {
		sums, _ := s.list(func(string, error) {})
		for _, sum := range sums {
			markTotal += sum.MemoryBytes
		}
		s.report(PhaseGCMark, 0, markTotal)
	}
	err = view(s.db, func(txn *badger.Txn) error {
		ids := liveIDs(txn)
		for id := range ids {
			c, used, err := loadCheckpointChunks(txn, id)
			if err != nil {
				return fmt.Errorf("checkpoint %s does not load (run ckptfs verify): %w", id, err)
			}
			markDone += c.MemoryBytes()
			s.report(PhaseGCMark, markDone, markTotal)
			for _, h := range used {
				liveChunks[h] = true
			}
			for _, t := range c.Tasks {
				for _, v := range t.VMAs {
					for _, r := range v.Pages {
						live = append(live, r.Hash)
					}
				}
			}
		}
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte("t/")})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			id, _, _, _, ok := parseTableKey(it.Item().Key())
			if !ok || !ids[id] {
				orphans = append(orphans, it.Item().KeyCopy(nil))
			}
		}
		ct := txn.NewIterator(badger.IteratorOptions{Prefix: []byte("c/")})
		defer ct.Close()
		for ct.Rewind(); ct.Valid(); ct.Next() {
			k := ct.Item().Key()
			if len(k) != 2+len(image.Hash{}) || !liveChunks[image.Hash(k[2:])] {
				orphans = append(orphans, ct.Item().KeyCopy(nil))
			}
		}
		return nil
	})
	slices.SortFunc(live, hashLess)
	return slices.Compact(live), orphans, err
}

// rewritePacks copies the live pages of the packs ids into new packs
// (sealed: fsynced) and returns their new entries. A pack whose live
// pages do not all read back sound is kept as it is (kept), so that GC
// never turns a damaged page into a missing one; verify reports it.
func (s *Store) rewritePacks(ids []packID, packLive map[packID][]packEntry) (moved []packEntry, kept []packID, err error) {
	var w *packWriter
	var pending []packEntry
	finish := func() error {
		if w == nil {
			return nil
		}
		entries, err := w.finish()
		w = nil
		if err != nil {
			return err
		}
		moved = append(moved, entries...)
		pending = pending[:0]
		return nil
	}
	buf := make([]byte, image.PageSize)
	var copied, toCopy int64
	for _, id := range ids {
		toCopy += int64(len(packLive[id])) * image.PageSize
	}
	if toCopy > 0 {
		s.report(PhaseGCRewrite, 0, toCopy)
	}
	for _, id := range ids {
		s.report(PhaseGCRewrite, copied, toCopy) // the packs before this one
		copied += int64(len(packLive[id])) * image.PageSize
		entries := packLive[id]
		sort.Slice(entries, func(i, j int) bool { return entries[i].loc.offset < entries[j].loc.offset })
		blobs := make([][]byte, len(entries))
		ok := true
		for i, e := range entries {
			if err := s.readBlob(e.hash, e.loc, buf); err != nil {
				s.logf("gc: pack %s kept: %v", id, err)
				ok = false
				break
			}
			blobs[i] = make([]byte, e.loc.length)
			if err := s.packs.readAt(id, blobs[i], e.loc.offset); err != nil {
				return nil, nil, err
			}
		}
		if !ok {
			kept = append(kept, id)
			continue
		}
		for i, e := range entries {
			if w == nil {
				if w, err = createPack(s.dir); err != nil {
					return nil, nil, err
				}
			}
			if _, err := w.add(e.hash, blobs[i], e.loc.flags); err != nil {
				w.abort()
				return nil, nil, err
			}
			if w.size() >= packTarget {
				if err := finish(); err != nil {
					return nil, nil, err
				}
			}
		}
	}
	if err := finish(); err != nil {
		return nil, nil, err
	}
	if toCopy > 0 {
		s.report(PhaseGCRewrite, copied, toCopy)
	}
	return moved, kept, nil
}

// reclaim makes Badger give the space of deleted keys back: flush the
// memtable (DropPrefix of a marker key is the public way to do that),
// compact the LSM into one level so that deleted versions are dropped and
// the value-log discard statistics are filled, then rewrite value-log files
// that are mostly garbage.
func (s *Store) reclaim() error {
	marker := []byte("g/flush")
	if err := s.db.Update(func(txn *badger.Txn) error { return txn.Set(marker, nil) }); err != nil {
		return err
	}
	if err := s.db.DropPrefix([]byte("g/")); err != nil {
		return fmt.Errorf("flush memtable: %w", err)
	}
	if err := s.db.Flatten(2); err != nil {
		return fmt.Errorf("flatten: %w", err)
	}
	for {
		err := s.db.RunValueLogGC(gcDiscardRatio)
		if errors.Is(err, badger.ErrNoRewrite) || errors.Is(err, badger.ErrRejected) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("value log gc: %w", err)
		}
	}
}

// pageInfo is what Verify learnt about a stored page.
type pageInfo struct {
	hash    image.Hash
	problem string // "" if the page is sound
}

// Verify re-hashes every stored page and checks every page reference of
// every checkpoint. It returns one line per problem.
func (s *Store) Verify() (_ []string, err error) {
	defer recoverBadger(&err, "verify")
	s.gcMu.RLock() // no pages vanish under us
	defer s.gcMu.RUnlock()
	pages, problems, err := s.verifyPages()
	if err != nil {
		return nil, fmt.Errorf("verify pages: %w", err)
	}
	lookup := func(h image.Hash) (string, bool) {
		i := sort.Search(len(pages), func(i int) bool { return hashLess(pages[i].hash, h) >= 0 })
		if i < len(pages) && pages[i].hash == h {
			return pages[i].problem, true
		}
		return "missing", false
	}
	referenced := make(map[image.Hash]bool)

	badSummary := make(map[string]bool)
	list, err := s.list(func(id string, err error) {
		badSummary[id] = true
		problems = append(problems, fmt.Sprintf("checkpoint %s: summary: %v", id, err))
	})
	if err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	var live map[string]bool
	if err := s.db.View(func(txn *badger.Txn) error { live = liveIDs(txn); return nil }); err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	sums := make(map[string]*Summary)
	var ids []string
	var refsDone, refsTotal int64
	for i := range list {
		sums[list[i].ID] = &list[i]
		ids = append(ids, list[i].ID)
		refsTotal += list[i].MemoryBytes
	}
	s.report(PhaseVerifyRefs, 0, refsTotal)
	var unlisted []string // live checkpoints without a sound summary
	for id := range live {
		if sums[id] == nil {
			unlisted = append(unlisted, id)
		}
	}
	sort.Strings(unlisted)
	for _, id := range unlisted {
		if !badSummary[id] {
			problems = append(problems, fmt.Sprintf("checkpoint %s: it has a manifest but no summary (ls does not show it)", id))
		}
	}
	for _, id := range append(ids, unlisted...) {
		if !live[id] {
			problems = append(problems, fmt.Sprintf("checkpoint %s: listed, but it has no manifest", id))
			continue
		}
		c, err := s.loadID(id)
		if err != nil {
			problems = append(problems, fmt.Sprintf("checkpoint %s: %v", id, err))
			continue
		}
		refsDone += c.MemoryBytes()
		s.report(PhaseVerifyRefs, refsDone, refsTotal)
		if sum := sums[id]; sum != nil && (c.Name != sum.Name || c.RootPID != sum.RootPID ||
			len(c.Tasks) != sum.Tasks || c.MemoryBytes() != sum.MemoryBytes) {
			problems = append(problems, fmt.Sprintf("checkpoint %s: its summary (ls) does not match its manifest", id))
		}
		if why := shortTables(c); why != "" {
			problems = append(problems, fmt.Sprintf("checkpoint %s: %s", id, why))
		}
		for _, t := range c.Tasks {
			for _, v := range t.VMAs {
				// One line per (page, vma): a bad page may be used many times.
				type bad struct {
					problem string
					first   uint32
					n       int
				}
				var order []image.Hash
				bads := make(map[image.Hash]*bad)
				for _, r := range v.Pages {
					prob, _ := lookup(r.Hash)
					if prob == "" {
						continue
					}
					referenced[r.Hash] = true
					if b := bads[r.Hash]; b != nil {
						b.n++
						continue
					}
					bads[r.Hash] = &bad{prob, r.Index, 1}
					order = append(order, r.Hash)
				}
				for _, h := range order {
					b := bads[h]
					more := ""
					if b.n > 1 {
						more = fmt.Sprintf(" (and %d more pages of it)", b.n-1)
					}
					problems = append(problems, fmt.Sprintf("page %s %s: used by checkpoint %s task %d vma %s page %d at %#x%s",
						h, b.problem, c.ID, t.PID, v.DirName(), b.first, v.Start+uint64(b.first)*image.PageSize, more))
				}
			}
		}
	}
	for _, p := range pages {
		if p.problem != "" && !referenced[p.hash] {
			problems = append(problems, fmt.Sprintf("page %s %s (used by no checkpoint)", p.hash, p.problem))
		}
	}
	return problems, nil
}

// Stats returns the store's figures.
func (s *Store) Stats() (StoreStats, error) {
	var st StoreStats
	list, err := s.List()
	if err != nil {
		return st, err
	}
	st.Checkpoints = len(list)
	for _, sum := range list {
		st.LogicalBytes += sum.MemoryBytes
	}
	x, err := s.pages()
	if err != nil {
		return st, fmt.Errorf("stats: %w", err)
	}
	st.Pages = int64(x.len()) // the open pack's pages too
	st.PageBytes = st.Pages * image.PageSize
	st.DiskBytes = diskUsage(s.dir)
	if st.PageBytes > 0 {
		st.Ratio = float64(st.LogicalBytes) / float64(st.PageBytes)
	}
	return st, nil
}
