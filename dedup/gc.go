package dedup

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"sort"

	"github.com/ckptfs/ckptfs/image"
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

// GC deletes the pages that no checkpoint references, and the page tables
// of checkpoints that were never committed, then gives the space back to
// the file system (memtable flush, LSM flatten, value-log rewrite).
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

	// Mark.
	var live []image.Hash
	var orphans [][]byte
	err = view(s.db, func(txn *badger.Txn) error {
		ids := liveIDs(txn)
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte("t/"), PrefetchValues: true, PrefetchSize: 16})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			id, _, _, _, ok := parseTableKey(item.Key())
			if !ok || !ids[id] {
				orphans = append(orphans, item.KeyCopy(nil))
				continue
			}
			err := item.Value(func(v []byte) error {
				for ; len(v) >= refSize; v = v[refSize:] {
					live = append(live, image.Hash(v[4:refSize]))
				}
				return nil
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return res, fmt.Errorf("gc: mark: %w", err)
	}
	slices.SortFunc(live, hashLess)
	live = slices.Compact(live)

	// Sweep: page keys come in hash order, so walk both lists together.
	wb := s.db.NewWriteBatch()
	defer wb.Cancel()
	var dead []image.Hash // in hash order
	err = view(s.db, func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte("p/")})
		defer it.Close()
		i := 0
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			h := image.Hash(item.Key()[2:])
			for i < len(live) && hashLess(live[i], h) < 0 {
				i++
			}
			if i < len(live) && live[i] == h {
				continue
			}
			if err := wb.Delete(item.KeyCopy(nil)); err != nil {
				return err
			}
			dead = append(dead, h)
			res.Pages++
			res.Bytes += image.PageSize
		}
		return nil
	})
	if err != nil {
		return res, fmt.Errorf("gc: sweep: %w", err)
	}
	for _, k := range orphans {
		if err := wb.Delete(k); err != nil {
			return res, fmt.Errorf("gc: orphan tables: %w", err)
		}
	}
	res.Tables = int64(len(orphans))
	// The index forgets the pages before they go: it must never claim a
	// page Badger lacks (a failed flush only makes them look missing, and
	// PutPages stores them again).
	if x := s.index.Load(); x != nil {
		x.remove(dead)
	}
	if err := wb.Flush(); err != nil {
		return res, fmt.Errorf("gc: delete: %w", err)
	}
	if res.Pages > 0 || res.Tables > 0 {
		if err := s.reclaim(); err != nil {
			return res, fmt.Errorf("gc: reclaim space: %w", err)
		}
	}
	res.DiskAfter = diskUsage(s.dir)
	if err := privateFiles(s.dir); err != nil { // the value logs GC rewrote
		s.logf("%v", err)
	}
	return res, nil

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
	var problems []string
	var pages []pageInfo // sorted by hash (key order)
	buf := make([]byte, image.PageSize)
	err = view(s.db, func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte("p/"), PrefetchValues: true, PrefetchSize: 64})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			p := pageInfo{hash: image.Hash(item.Key()[2:])}
			err := item.Value(func(v []byte) error {
				switch {
				case len(v) != image.PageSize:
					p.problem = fmt.Sprintf("corrupt: %d bytes, want %d", len(v), image.PageSize)
				default:
					copy(buf, v)
					if got := Sum(buf); got != p.hash {
						p.problem = fmt.Sprintf("corrupt: content hashes to %s", got)
					}
				}
				return nil
			})
			if err != nil {
				p.problem = fmt.Sprintf("unreadable: %v", err)
			}
			pages = append(pages, p)
		}
		return nil
	})
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
	for i := range list {
		sums[list[i].ID] = &list[i]
		ids = append(ids, list[i].ID)
	}
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
	err = view(s.db, func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte("p/")})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			st.Pages++
			st.PageBytes += image.PageSize
		}
		return nil
	})
	if err != nil {
		return st, fmt.Errorf("stats: %w", err)
	}
	st.DiskBytes = diskUsage(s.dir)
	if st.PageBytes > 0 {
		st.Ratio = float64(st.LogicalBytes) / float64(st.PageBytes)
	}
	return st, nil
}
