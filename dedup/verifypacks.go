package dedup

import (
	"fmt"
	"os"
	"runtime"
	"slices"
	"sort"
	"sync"

	"github.com/ckptfs/ckptfs/image"
	badger "github.com/dgraph-io/badger/v4"
)

// verifyPages checks every indexed page: its pack is read whole, once, by
// one of NumCPU workers, its trailer checked against the index, and every
// page decoded and re-hashed. It returns the pages sorted by hash, each
// with its problem ("" if sound), and problems of packs as a whole.
func (s *Store) verifyPages() ([]pageInfo, []string, error) {
	if err := s.seal(); err != nil {
		return nil, nil, err
	}
	byPack := make(map[packID][]packEntry)
	var pages []pageInfo
	var problems []string
	err := view(s.db, func(txn *badger.Txn) error {
		return readPackIndex(txn, func(r packRecord) error {
			if r.err != nil {
				problems = append(problems, fmt.Sprintf("%v (its pages count as missing)", r.err))
				return nil
			}
			byPack[r.id] = append(byPack[r.id], r.entries...)
			for _, e := range r.entries {
				pages = append(pages, pageInfo{hash: e.hash})
			}
			return nil
		})
	})
	if err != nil {
		return nil, nil, err
	}
	// Sorted by hash; a page in two packs (a gc cut short) is one page.
	slices.SortFunc(pages, func(a, b pageInfo) int { return hashLess(a.hash, b.hash) })
	pages = slices.CompactFunc(pages, func(a, b pageInfo) bool { return a.hash == b.hash })
	ids := make([]packID, 0, len(byPack))
	for id := range byPack {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })

	var mu sync.Mutex
	bad := make(map[image.Hash]string)
	total, done := int64(len(pages))*image.PageSize, int64(0)
	s.report(PhaseVerifyPages, 0, total)
	work := make(chan packID)
	var wg sync.WaitGroup
	for range runtime.NumCPU() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, image.PageSize)
			for id := range work {
				pageProbs, packProb := s.verifyPack(id, byPack[id], buf)
				mu.Lock()
				for h, p := range pageProbs {
					bad[h] = p
				}
				if packProb != "" {
					problems = append(problems, packProb)
				}
				done += int64(len(byPack[id])) * image.PageSize
				s.report(PhaseVerifyPages, done, total)
				mu.Unlock()
			}
		}()
	}
	for _, id := range ids {
		work <- id
	}
	close(work)
	wg.Wait()
	for i := range pages {
		if p, ok := bad[pages[i].hash]; ok && pages[i].problem == "" {
			pages[i].problem = p
		}
	}
	sort.Strings(problems)
	return pages, problems, nil
}

// verifyPack checks the pages entries of pack id (buf: a page buffer).
func (s *Store) verifyPack(id packID, entries []packEntry, buf []byte) (map[image.Hash]string, string) {
	probs := make(map[image.Hash]string)
	all := func(p string) (map[image.Hash]string, string) {
		for _, e := range entries {
			probs[e.hash] = p
		}
		return probs, ""
	}
	data, err := os.ReadFile(packPath(s.dir, id))
	if err != nil {
		return all(fmt.Sprintf("unreadable: pack %s: %v", id, err))
	}
	packProb := ""
	f, err := os.Open(packPath(s.dir, id))
	if err == nil {
		var trailer []packEntry
		trailer, err = readTrailer(f, id)
		f.Close()
		if err == nil {
			listed := make(map[image.Hash]packLoc, len(trailer))
			for _, e := range trailer {
				listed[e.hash] = e.loc
			}
			for _, e := range entries {
				if l, ok := listed[e.hash]; !ok || l != e.loc {
					err = fmt.Errorf("%w: page %s is not where the index says", ErrCorrupt, e.hash)
					break
				}
			}
		}
	}
	if err != nil {
		packProb = fmt.Sprintf("pack %s: trailer: %v (the pages are checked one by one)", id, err)
	}
	for _, e := range entries {
		end := e.loc.offset + int64(e.loc.length)
		if end > int64(len(data)) {
			probs[e.hash] = fmt.Sprintf("missing: pack %s ends at %d, before the page (%d)", id, len(data), end)
			continue
		}
		if err := decodeBlob(data[e.loc.offset:end], e.loc.flags, buf); err != nil {
			probs[e.hash] = fmt.Sprintf("corrupt: %v", err)
			continue
		}
		if got := Sum(buf); got != e.hash {
			probs[e.hash] = fmt.Sprintf("corrupt: content hashes to %s", got)
		}
	}
	return probs, packProb
}
