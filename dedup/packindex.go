package dedup

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/ckptfs/ckptfs/image"
	badger "github.com/dgraph-io/badger/v4"
	"github.com/zeebo/blake3"
)

// The page index of a format-4 store is one Badger record per pack (after
// restic's repository index), written when the pack is sealed:
//
//	key    "x/" + pack id (u64)
//	value  entries, 48 bytes each: hash 32, offset u64, length u32, flags u32
//	       then count u64, BLAKE3-256 of key || entries (32), "ckptpidx"
//
// (numbers big-endian; the entries are those of the pack's trailer, or a
// subset once gc dropped dead pages). So a GiB of new pages costs Badger
// some 32 writes of ~400 KB, not 262,144 keys; the hash covers the key, so
// a record copied under another pack's key fails its check. At first use
// the records are read into the in-memory pageIndex (index.go), which
// answers every look-up: Missing, PutPages and page reads.

const packIndexPrefix = "x/"

var packIndexMagic = []byte("ckptpidx")

func packIndexKey(id packID) []byte {
	return binary.BigEndian.AppendUint64([]byte(packIndexPrefix), uint64(id))
}

// parsePackIndexKey returns the pack id of an index record's key.
func parsePackIndexKey(k []byte) (packID, bool) {
	if len(k) != len(packIndexPrefix)+8 || !bytes.HasPrefix(k, []byte(packIndexPrefix)) {
		return 0, false
	}
	return packID(binary.BigEndian.Uint64(k[len(packIndexPrefix):])), true
}

// appendEntries appends the 48-byte encoding of entries (the trailer's).
func appendEntries(b []byte, entries []packEntry) []byte {
	for _, e := range entries {
		b = appendEntry(b, e.hash, e.loc)
	}
	return b
}

// appendEntry appends the 48-byte encoding of the entry of page h at l.
func appendEntry(b []byte, h image.Hash, l packLoc) []byte {
	b = append(b, h[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(l.offset))
	b = binary.BigEndian.AppendUint32(b, l.length)
	return binary.BigEndian.AppendUint32(b, l.flags)
}

// decodeEntry decodes the 48-byte entry at the start of e, of pack id
// (unchecked: see decodeEntries).
func decodeEntry(e []byte, id packID) packEntry {
	return packEntry{hash: image.Hash(e[:32]), loc: packLoc{pack: id,
		offset: int64(binary.BigEndian.Uint64(e[32:])), length: binary.BigEndian.Uint32(e[40:]),
		flags: binary.BigEndian.Uint32(e[44:])}}
}

// decodeEntries decodes entries of pack id (48 bytes each) and checks
// their bounds: blobs after the header and before end (0: no end known).
func decodeEntries(tb []byte, id packID, end int64) ([]packEntry, error) {
	if len(tb)%packEntrySize != 0 {
		return nil, fmt.Errorf("%w: pack %s: entries of %d bytes", ErrCorrupt, id, len(tb))
	}
	entries := make([]packEntry, len(tb)/packEntrySize)
	for i := range entries {
		entries[i] = decodeEntry(tb[i*packEntrySize:], id)
		l := entries[i].loc
		if l.offset < packHeaderSize || l.length == 0 || l.length > image.PageSize || l.flags&^blobS2 != 0 ||
			(end > 0 && l.offset+int64(l.length) > end) {
			return nil, fmt.Errorf("%w: pack %s: entry %d out of bounds", ErrCorrupt, id, i)
		}
	}
	return entries, nil
}

// encodePackIndex returns the index record of pack id listing entries.
func encodePackIndex(id packID, entries []packEntry) []byte {
	b := make([]byte, 0, len(entries)*packEntrySize+packFooterSize)
	return appendPackIndexFooter(appendEntries(b, entries), id, len(entries))
}

// appendPackIndexFooter appends to b, the encoding of the n entries of
// pack id, the footer of its index record.
func appendPackIndexFooter(b []byte, id packID, n int) []byte {
	sum := packIndexSum(packIndexKey(id), b)
	b = binary.BigEndian.AppendUint64(b, uint64(n))
	b = append(b, sum[:]...)
	return append(b, packIndexMagic...)
}

func packIndexSum(key, entries []byte) image.Hash {
	h := blake3.New()
	h.Write(key)
	h.Write(entries)
	var out image.Hash
	h.Sum(out[:0])
	return out
}

// decodePackIndex checks the index record v stored under key and returns
// its pack and entries.
func decodePackIndex(key, v []byte) (packID, []packEntry, error) {
	id, ok := parsePackIndexKey(key)
	if !ok {
		return 0, nil, fmt.Errorf("%w: bad pack index key %q", ErrCorrupt, key)
	}
	if len(v) < packFooterSize || !bytes.Equal(v[len(v)-8:], packIndexMagic) {
		return id, nil, fmt.Errorf("%w: pack %s: index record of %d bytes, no footer", ErrCorrupt, id, len(v))
	}
	foot := v[len(v)-packFooterSize:]
	tb := v[:len(v)-packFooterSize]
	if n := binary.BigEndian.Uint64(foot); n != uint64(len(tb)/packEntrySize) {
		return id, nil, fmt.Errorf("%w: pack %s: index record counts %d entries in %d bytes", ErrCorrupt, id, n, len(tb))
	}
	if packIndexSum(key, tb) != image.Hash(foot[8:40]) {
		return id, nil, fmt.Errorf("%w: pack %s: index record hash mismatch", ErrCorrupt, id)
	}
	entries, err := decodeEntries(tb, id, 0)
	return id, entries, err
}

// packRecord is one pack's index record as read from Badger.
type packRecord struct {
	id      packID
	entries []packEntry
	err     error // the record is damaged (entries nil)
}

// readPackIndex calls fn for every pack index record of txn, in pack-id
// order. A damaged record is passed with its error; an error of fn stops
// the walk.
func readPackIndex(txn *badger.Txn, fn func(r packRecord) error) error {
	it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(packIndexPrefix), PrefetchValues: true, PrefetchSize: 16})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		item := it.Item()
		var r packRecord
		err := item.Value(func(v []byte) error {
			r.id, r.entries, r.err = decodePackIndex(item.Key(), v)
			return nil
		})
		if err != nil {
			r.id, _ = parsePackIndexKey(item.Key())
			r.err = fmt.Errorf("pack %s: index record unreadable: %w", r.id, err)
		}
		if err := fn(r); err != nil {
			return err
		}
	}
	return nil
}

// setPackIndex writes the index records of entries (grouped by pack) into
// wb.
func setPackIndex(wb *badger.WriteBatch, entries []packEntry) error {
	for id, es := range groupByPack(entries) {
		if err := wb.Set(packIndexKey(id), encodePackIndex(id, es)); err != nil {
			return fmt.Errorf("index pack %s: %w", id, err)
		}
	}
	return nil
}

// groupByPack returns entries by pack, each pack's in offset order.
func groupByPack(entries []packEntry) map[packID][]packEntry {
	if one := oneSortedPack(entries); one {
		// A sealed pack's entries (the common case): as they are, no
		// copy nor sort (which was ~3 % of a dump's CPU).
		return map[packID][]packEntry{entries[0].loc.pack: entries}
	}
	by := make(map[packID][]packEntry)
	for _, e := range entries {
		by[e.loc.pack] = append(by[e.loc.pack], e)
	}
	for _, es := range by {
		slices.SortFunc(es, func(a, b packEntry) int { return int(a.loc.offset - b.loc.offset) })
	}
	return by
}

// oneSortedPack says whether entries (at least one) are all of one pack,
// in offset order.
func oneSortedPack(entries []packEntry) bool {
	if len(entries) == 0 {
		return false
	}
	id := entries[0].loc.pack
	for i := 1; i < len(entries); i++ {
		if entries[i].loc.pack != id || entries[i].loc.offset < entries[i-1].loc.offset {
			return false
		}
	}
	return true
}

// loadPageIndex reads every pack index record into a page index. Damaged
// records are left out (their pages read as missing) and returned as
// problems, for verify to report.
func loadPageIndex(db *badger.DB) (*pageIndex, []string, error) {
	var recs [][]packEntry
	var problems []string
	err := view(db, func(txn *badger.Txn) error {
		return readPackIndex(txn, func(r packRecord) error {
			if r.err != nil {
				problems = append(problems, r.err.Error())
				return nil
			}
			recs = append(recs, r.entries)
			return nil
		})
	})
	if err != nil {
		return nil, nil, err
	}
	return indexOfEntries(recs...), problems, nil
}

// indexOfEntries builds a page index of the entries of recs (in any
// order; a page in two packs is kept once, at its first entry): O(n), the
// table sized for all of them at once.
func indexOfEntries(recs ...[]packEntry) *pageIndex {
	total := 0
	for _, r := range recs {
		total += len(r)
	}
	x := &pageIndex{}
	x.rebuild(total)
	for _, r := range recs {
		for i := range r {
			x.insert(&r[i].hash, r[i].loc)
		}
	}
	return x
}
