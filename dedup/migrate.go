package dedup

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"

	"github.com/ckptfs/ckptfs/image"
	"github.com/ckptfs/ckptfs/internal/testhold"
	badger "github.com/dgraph-io/badger/v4"
)

// MigrateReport says what Migrate did.
type MigrateReport struct {
	From, To    int   // store formats
	Checkpoints int   // checkpoints converted (from format 3: carried over)
	Pages       int64 // pages moved into packs
	Dropped     int64 // pages no checkpoint referenced, dropped
}

// Migrate converts the store at dir from format 1, 2 or 3 to the current
// format, in place (`ckptfs migrate`). From format 3 only the page index
// changes (migratePackIndex). From formats 1 and 2: the pages every checkpoint
// references move from Badger's value log into packs, each checkpoint's
// manifest is rewritten as format 3 (same id, name, time and contents;
// page tables as content-addressed chunks, summary kept), and the old keys
// go. The format key changes last: a migration that is interrupted leaves
// a store of the old format, half converted, that Migrate finishes when
// run again (each step skips what is done). A store of the current format
// is left as it is. The store must not be in use.
func Migrate(dir string) (*MigrateReport, error) {
	s, err := open(dir, true)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	rep := &MigrateReport{From: s.Format(), To: StoreFormat}
	if rep.From >= StoreFormat {
		return rep, nil
	}
	if err := s.migrateAll(rep); err != nil {
		return nil, fmt.Errorf("migrate %s: %w (run it again to finish; the store keeps format %d until it succeeds)", dir, err, rep.From)
	}
	return rep, nil
}

// migrateAll runs the steps from the store's format to the current one:
// formats 1 and 2 first become format 3 but for the format key (pages in
// packs, manifests of format 3), then the page index of format 3 (a key
// p/<hash> per page) becomes one record per pack (format 4).
func (s *Store) migrateAll(rep *MigrateReport) (err error) {
	defer recoverBadger(&err, "migrate")
	s.gcMu.Lock()
	defer s.gcMu.Unlock()
	if rep.From < 3 {
		if err := s.migrateToPacks(rep); err != nil {
			return err
		}
	} else if err := view(s.db, func(txn *badger.Txn) error {
		rep.Checkpoints = len(liveIDs(txn)) // kept as they are
		return nil
	}); err != nil {
		return err
	}
	if err := s.migratePackIndex(); err != nil {
		return fmt.Errorf("page index: %w", err)
	}
	err = s.db.Update(func(txn *badger.Txn) error {
		return txn.Set(formatKey, []byte(strconv.Itoa(StoreFormat)))
	})
	if err != nil {
		return fmt.Errorf("format key: %w", err)
	}
	if err := s.db.Sync(); err != nil {
		return err
	}
	s.format.Store(StoreFormat)
	if err := s.reclaim(); err != nil {
		return fmt.Errorf("reclaim space: %w", err)
	}
	return privateFiles(s.dir)
}

// migrateToPacks converts a store of format 1 or 2: pages into packs,
// manifests and page tables to format 3.
func (s *Store) migrateToPacks(rep *MigrateReport) (err error) {
	var ids []string
	if err := view(s.db, func(txn *badger.Txn) error {
		for id := range liveIDs(txn) {
			ids = append(ids, id)
		}
		return nil
	}); err != nil {
		return err
	}
	sort.Strings(ids)
	cps := make([]*image.Checkpoint, len(ids))
	live := make(map[image.Hash]bool)
	for i, id := range ids {
		if cps[i], err = s.loadID(id); err != nil {
			return fmt.Errorf("%w (ckptfs verify --repair of the ckptfs that wrote the store can salvage it first)", err)
		}
		for _, t := range cps[i].Tasks {
			for _, v := range t.VMAs {
				for _, r := range v.Pages {
					live[r.Hash] = true
				}
			}
		}
	}
	if err := s.migratePages(live, rep); err != nil {
		return fmt.Errorf("pages: %w", err)
	}
	if err := s.seal(); err != nil {
		return err
	}
	testhold.At("migrate-pages")
	for i, c := range cps {
		if err := s.migrateCheckpoint(c); err != nil {
			return fmt.Errorf("checkpoint %s: %w", ids[i], err)
		}
		rep.Checkpoints++
		testhold.At("migrate-checkpoint")
	}
	if err := s.deletePrefix([]byte("t/")); err != nil {
		return fmt.Errorf("old page tables: %w", err)
	}
	return nil
}

// migratePages moves the pages still stored in Badger values (4096 bytes
// under p/<hash>) into packs, those of live only; the others are deleted.
// Entries that are already pack locations (an earlier, interrupted run of
// an older ckptfs) and pages a pack index record lists already (an
// interrupted run of this one) are left; migratePackIndex deletes the
// p/ keys once the records are durable.
func (s *Store) migratePages(live map[image.Hash]bool, rep *MigrateReport) error {
	x, problems, err := loadPageIndex(s.db)
	if err != nil {
		return err
	}
	if len(problems) > 0 {
		return fmt.Errorf("%s", problems[0])
	}
	var old, dead []image.Hash
	err = view(s.db, func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte("p/")})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			if len(item.Key()) != 2+len(image.Hash{}) || item.ValueSize() == packLocSize {
				continue
			}
			h := image.Hash(item.Key()[2:])
			if x.has(&h) {
				continue
			}
			if live[h] {
				old = append(old, h)
			} else {
				dead = append(dead, h)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	const batch = 1024
	for len(old) > 0 {
		n := min(batch, len(old))
		b := &putBatch{hashes: old[:n], idx: make([]int, n)}
		pages := make([][]byte, n)
		err := view(s.db, func(txn *badger.Txn) error {
			for i, h := range b.hashes {
				b.idx[i] = i
				item, err := txn.Get(pageKey(h))
				if err != nil {
					return err
				}
				if pages[i], err = item.ValueCopy(nil); err != nil {
					return err
				}
				if len(pages[i]) != image.PageSize || Sum(pages[i]) != h {
					return fmt.Errorf("page %s: %w", h, ErrPageCorrupt)
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		if _, err := s.writePages(b, pages); err != nil {
			return err
		}
		rep.Pages += int64(n)
		old = old[n:]
	}
	if err := s.seal(); err != nil {
		return err
	}
	keys := make([][]byte, len(dead))
	for i, h := range dead {
		keys[i] = pageKey(h)
	}
	rep.Dropped = int64(len(dead))
	return s.deleteKeys(keys)
}

// migrateCheckpoint rewrites the manifest of c as the current format, its
// page tables as chunks, and seals its summary anew (same figures).
func (s *Store) migrateCheckpoint(c *image.Checkpoint) error {
	var sum *Summary
	err := view(s.db, func(txn *badger.Txn) error {
		item, err := txn.Get(summaryKey(c.ID))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		return item.Value(func(v []byte) error {
			got, err := readSummary(summaryKey(c.ID), v)
			if err == nil {
				sum = &got
			}
			return nil
		})
	})
	if err != nil {
		return err
	}
	if sum == nil || sum.ID != c.ID {
		sum = &Summary{ID: c.ID, Name: c.Name, Time: c.Time, RootPID: c.RootPID, Tasks: len(c.Tasks),
			MemoryBytes: c.MemoryBytes(), BytesAdded: c.Stats.BytesAdded}
	}
	mb, chunks, err := encodeManifest(c)
	if err != nil {
		return err
	}
	if err := s.putChunks(chunks); err != nil {
		return err
	}
	sb, err := sealedSummary(*sum)
	if err != nil {
		return err
	}
	err = s.db.Update(func(txn *badger.Txn) error {
		if err := txn.Set(summaryKey(c.ID), sb); err != nil {
			return err
		}
		return txn.Set(manifestKey(c.ID), seal(kindManifest, manifestKey(c.ID), mb))
	})
	if err != nil {
		return err
	}
	return s.deletePrefix(tablePrefix(c.ID))
}

// migratePackIndex turns the page index of format 3, a key p/<hash> per
// page holding its location, into one record per pack (format 4): the
// records are written (merged with those an interrupted run wrote) and
// synced, and only then are the p/ keys deleted. p/ values that are pages
// (formats 1 and 2) are in packs by now (migratePages): they go too.
func (s *Store) migratePackIndex() error {
	var entries []packEntry
	err := view(s.db, func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte("p/"), PrefetchValues: true, PrefetchSize: 1024})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			k := item.Key()
			if len(k) != 2+len(image.Hash{}) || item.ValueSize() != packLocSize {
				continue
			}
			var loc packLoc
			if err := item.Value(func(v []byte) (err error) { loc, err = decodePackLoc(v); return err }); err != nil {
				return fmt.Errorf("page %x: %w (ckptfs verify --repair of the ckptfs that wrote the store can salvage it first)", k[2:], err)
			}
			entries = append(entries, packEntry{image.Hash(k[2:]), loc})
		}
		return nil
	})
	if err != nil {
		return err
	}
	by := groupByPack(entries)
	err = view(s.db, func(txn *badger.Txn) error {
		return readPackIndex(txn, func(r packRecord) error {
			if r.err != nil {
				return r.err
			}
			if by[r.id] == nil {
				return nil
			}
			have := make(map[image.Hash]bool, len(r.entries))
			for _, e := range by[r.id] {
				have[e.hash] = true
			}
			for _, e := range r.entries {
				if !have[e.hash] {
					by[r.id] = append(by[r.id], e)
				}
			}
			return nil
		})
	})
	if err != nil {
		return err
	}
	wb := s.db.NewWriteBatch()
	defer wb.Cancel()
	for id, es := range by {
		slices.SortFunc(es, func(a, b packEntry) int { return int(a.loc.offset - b.loc.offset) })
		if err := wb.Set(packIndexKey(id), encodePackIndex(id, es)); err != nil {
			return err
		}
	}
	if err := wb.Flush(); err != nil {
		return err
	}
	if err := s.db.Sync(); err != nil {
		return err
	}
	testhold.At("migrate-index")
	if err := s.deletePrefix([]byte("p/")); err != nil {
		return err
	}
	return s.db.Sync()
}
