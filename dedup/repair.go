package dedup

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
	"github.com/dgraph-io/badger/v4/table"
	"github.com/dgraph-io/badger/v4/y"
	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/image"
)

// Repair salvages a damaged store (`ckptfs verify --repair`): every
// checkpoint that is still whole, manifest, page tables and every page it
// references, is kept; the rest is reported lost. It works without
// Badger's MANIFEST or with damaged tables and logs: it reads every
// Badger file directly (value logs and memtable logs entry by entry,
// searching past damaged stretches; tables as far as they read), takes the
// newest version of every key (a delete wins over older values), writes
// what it found into a new store (pages only if they hash right), keeps
// the checkpoints that load and whose pages are all there, rewrites their
// summaries, and then swaps the new store's files in. The old files are
// kept in STORE/damaged-<time>/ for the user to remove.
//
// A checkpoint removed long ago may come back if Badger had already
// compacted its delete away while an old value log still held it.

// RepairReport says what Repair kept and lost.
type RepairReport struct {
	Kept         []string // checkpoints kept: "id name"
	Lost         []string // checkpoints lost: "id: why"
	Pages        int64    // pages salvaged
	PagesDamaged int64    // page values dropped: wrong size or hash
	Problems     []string // damaged files and stretches found
	OldFiles     string   // where the old Badger files were moved
}

// record is the newest version of a key seen so far.
type record struct {
	version uint64 // of the newest entry (value or delete)
	deleted bool   // the newest entry is a delete
	value   []byte // newest value found (nil: none)
	valVer  uint64
}

type salvage struct {
	recs     map[string]*record
	problems []string
}

func (s *salvage) add(key []byte, version uint64, meta byte, value []byte) {
	k := string(key)
	if strings.HasPrefix(k, "!badger!") {
		return
	}
	r := s.recs[k]
	if r == nil {
		r = &record{}
		s.recs[k] = r
	}
	if version >= r.version {
		r.version = version
		r.deleted = meta&bitDelete != 0
	}
	if meta&(bitDelete|bitValuePointer) == 0 && (r.value == nil || version >= r.valVer) {
		r.value, r.valVer = value, version
	}
}

// Repair salvages the store in dir; see above. The store must not be in
// use (it takes the store's lock).
func Repair(dir string) (*RepairReport, error) {
	lock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	defer lock.Close()
	files, err := listBadgerFiles(dir)
	if err != nil {
		return nil, fmt.Errorf("repair %s: %w", dir, err)
	}
	sv := &salvage{recs: map[string]*record{}}
	var maps [][]byte
	defer func() {
		for _, m := range maps {
			unix.Munmap(m)
		}
	}()
	for _, name := range append(append([]string{}, files.vlogs...), files.mems...) {
		data, err := mapFile(filepath.Join(dir, name))
		if err != nil {
			sv.problems = append(sv.problems, fmt.Sprintf("%s: unreadable: %v", name, err))
			continue
		}
		if data == nil {
			continue
		}
		maps = append(maps, data)
		st := scanLog(data, func(e logEntry) {
			if e.meta&bitFinTxn != 0 {
				return
			}
			sv.add(e.userKey(), e.version(), e.meta, e.value)
		})
		if st.damagedAt >= 0 {
			sv.problems = append(sv.problems, fmt.Sprintf("%s: damaged at offset %d (%d good entries after it salvaged)", name, st.damagedAt, st.lost))
		}
	}
	for _, name := range files.tables {
		if err := sv.readTable(filepath.Join(dir, name)); err != nil {
			sv.problems = append(sv.problems, fmt.Sprintf("%s: %v", name, err))
		}
	}
	if !files.manifest {
		sv.problems = append(sv.problems, "Badger MANIFEST missing")
	}
	rep := &RepairReport{Problems: sv.problems}

	staging := filepath.Join(dir, fmt.Sprintf("repair-%d.tmp", os.Getpid()))
	os.RemoveAll(staging)
	if err := sv.write(staging, dir, rep); err != nil {
		os.RemoveAll(staging)
		return nil, fmt.Errorf("repair %s: %w", dir, err)
	}
	old := filepath.Join(dir, "damaged-"+time.Now().UTC().Format("20060102-150405"))
	if err := swapStores(dir, staging, old); err != nil {
		return nil, fmt.Errorf("repair %s: %w (the salvaged store is in %s)", dir, err, staging)
	}
	rep.OldFiles = old
	return rep, nil
}

// readTable adds every entry of a Badger table whose block checks: the
// blocks are read one by one from their base keys (the table's index), so
// a damaged block loses its own entries only.
func (s *salvage) readTable(path string) (err error) {
	defer recoverBadger(&err, "read table")
	t, mf, err := openTable(path, options.OnBlockRead)
	if err != nil {
		return err
	}
	defer mf.Close(-1)
	bases := t.KeySplits(math.MaxInt32, nil) // every block's first key
	var bad []string
	for i, base := range bases {
		var next []byte
		if i+1 < len(bases) {
			next = []byte(bases[i+1])
		}
		if err := s.readBlock(t, []byte(base), next); err != nil {
			bad = append(bad, fmt.Sprintf("block %d: %v", i, err))
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("%d of %d blocks unreadable (%s)", len(bad), len(bases), bad[0])
	}
	return nil
}

// readBlock adds the entries of t from key base up to key next (nil: the
// end). A damaged block reads nothing: the seek to its base key fails. (A
// damaged block also ends the iteration of the block before it, after
// that block's last entry.)
func (s *salvage) readBlock(t *table.Table, base, next []byte) (err error) {
	defer recoverBadger(&err, "read block")
	it := t.NewIterator(0)
	defer it.Close()
	n := 0
	for it.Seek(base); it.Valid(); it.Next() {
		k := it.Key()
		if len(k) <= 8 {
			continue
		}
		if next != nil && y.CompareKeys(k, next) >= 0 {
			break
		}
		vs := it.ValueCopy()
		ver := binary.BigEndian.Uint64(k[len(k)-8:])
		s.add(bytes.Clone(k[:len(k)-8]), ^ver, vs.Meta, vs.Value)
		n++
	}
	if n == 0 {
		return fmt.Errorf("no entry reads")
	}
	return nil
}

// write fills a new store at staging with the salvaged keys and keeps the
// checkpoints that are whole. Its page index points into the packs of the
// damaged store at dir (which stay where they are): every page entry
// salvaged, and every entry of a pack trailer that reads, is kept if the
// page it points to reads back sound.
func (sv *salvage) write(staging, dir string, rep *RepairReport) error {
	st, err := Open(staging)
	if err != nil {
		return err
	}
	defer st.Close()
	keys := make([]string, 0, len(sv.recs))
	for k, r := range sv.recs {
		if r.deleted || r.value == nil {
			continue
		}
		keys = append(keys, k)
	}
	sort.Strings(keys)
	wb := st.db.NewWriteBatch()
	defer wb.Cancel()
	var manifests []string
	for _, k := range keys {
		v := sv.recs[k].value
		switch {
		case strings.HasPrefix(k, "p/"), strings.HasPrefix(k, packIndexPrefix):
			continue // below, from the packs
		case k == string(formatKey):
			continue // the new store's own: the current format
		case strings.HasPrefix(k, "s/"):
			continue // rewritten from the manifest below
		case strings.HasPrefix(k, "m/"):
			manifests = append(manifests, k[2:])
		}
		if err := wb.Set([]byte(k), bytes.Clone(v)); err != nil {
			return err
		}
	}
	if err := salvagePages(dir, sv.recs, wb, rep); err != nil {
		return err
	}
	// Placeholder summaries so that Load finds each checkpoint by id.
	for _, id := range manifests {
		sb, err := sealedSummary(Summary{ID: id})
		if err != nil {
			return err
		}
		if err := wb.Set(summaryKey(id), sb); err != nil {
			return err
		}
	}
	if err := wb.Flush(); err != nil {
		return err
	}
	x, err := st.pages()
	if err != nil {
		return err
	}
	for _, id := range manifests {
		c, why := wholeCheckpoint(st, x, id)
		if why != "" {
			rep.Lost = append(rep.Lost, fmt.Sprintf("%s: %s", id, why))
			if err := st.deleteKeys([][]byte{manifestKey(id), summaryKey(id)}); err != nil {
				return err
			}
			if err := st.deletePrefix(tablePrefix(id)); err != nil {
				return err
			}
			continue
		}
		sum := Summary{ID: c.ID, Name: c.Name, Time: c.Time, RootPID: c.RootPID, Tasks: len(c.Tasks),
			MemoryBytes: c.MemoryBytes(), BytesAdded: c.Stats.BytesAdded}
		sb, err := sealedSummary(sum)
		if err != nil {
			return err
		}
		if err := st.db.Update(func(txn *badger.Txn) error { return txn.Set(summaryKey(id), sb) }); err != nil {
			return err
		}
		rep.Kept = append(rep.Kept, strings.TrimSpace(id+" "+c.Name))
	}
	return st.db.Sync()
}

// wholeCheckpoint loads checkpoint id from the salvaged store and checks
// that every page it references is there; why says what is not.
func wholeCheckpoint(st *Store, x *pageIndex, id string) (c *image.Checkpoint, why string) {
	c, err := st.Load(id)
	if err != nil {
		return nil, fmt.Sprintf("manifest or page tables damaged: %v", err)
	}
	if c.ID != id {
		return nil, fmt.Sprintf("manifest names checkpoint %q", c.ID)
	}
	var hashes []image.Hash
	for _, t := range c.Tasks {
		for _, v := range t.VMAs {
			for _, p := range v.Pages {
				hashes = append(hashes, p.Hash)
			}
		}
	}
	if why := shortTables(c); why != "" {
		return nil, why
	}
	miss := make([]bool, len(hashes))
	x.missing(hashes, miss)
	n := 0
	for _, m := range miss {
		if m {
			n++
		}
	}
	if n > 0 {
		return nil, fmt.Sprintf("%d of its %d page references are damaged or missing", n, len(hashes))
	}
	return c, ""
}

// swapStores moves the Badger files of dir into old and those of staging
// into dir.
func swapStores(dir, staging, old string) error {
	if err := os.Mkdir(old, 0o700); err != nil {
		return err
	}
	isBadger := func(name string) bool {
		switch filepath.Ext(name) {
		case ".sst", ".vlog", ".mem":
			return true
		}
		switch name {
		case badger.ManifestFilename, "KEYREGISTRY", "DISCARD", "LOCK":
			return true
		}
		return false
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if isBadger(e.Name()) {
			if err := os.Rename(filepath.Join(dir, e.Name()), filepath.Join(old, e.Name())); err != nil {
				return err
			}
		}
	}
	ents, err = os.ReadDir(staging)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if !isBadger(e.Name()) {
			continue
		}
		if err := os.Rename(filepath.Join(staging, e.Name()), filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	return os.RemoveAll(staging)
}

// shortTables says whether checkpoint c has fewer page references than
// its manifest counts (Stats.PagesTotal: every non-zero page saved), as
// when a page-table chunk was lost.
func shortTables(c *image.Checkpoint) string {
	// 0: not counted (a checkpoint written without the count).
	if n := c.MemoryBytes() / image.PageSize; c.Stats.PagesTotal != 0 && n != c.Stats.PagesTotal {
		return fmt.Sprintf("its page tables hold %d pages, its manifest counts %d", n, c.Stats.PagesTotal)
	}
	return ""
}

// salvagePages adds to wb the pack index records of every page of the
// packs of dir that reads back sound, found through the salvaged index
// records of recs (format 4; p/ entries of format 3) or the packs' own
// trailers.
func salvagePages(dir string, recs map[string]*record, wb *badger.WriteBatch, rep *RepairReport) error {
	cands := make(map[image.Hash][]packLoc)
	for k, r := range recs {
		if r.deleted || r.value == nil {
			continue
		}
		if strings.HasPrefix(k, packIndexPrefix) {
			_, entries, err := decodePackIndex([]byte(k), r.value)
			if err != nil {
				rep.Problems = append(rep.Problems, err.Error())
				continue
			}
			for _, e := range entries {
				cands[e.hash] = append(cands[e.hash], e.loc)
			}
			continue
		}
		if !strings.HasPrefix(k, "p/") || len(k) != 2+len(image.Hash{}) {
			continue
		}
		if loc, err := decodePackLoc(r.value); err == nil {
			cands[image.Hash([]byte(k[2:]))] = append(cands[image.Hash([]byte(k[2:]))], loc)
		} else {
			rep.PagesDamaged++
		}
	}
	ids, err := listPacks(dir)
	if err != nil {
		return err
	}
	for _, id := range ids {
		f, err := os.Open(packPath(dir, id))
		if err != nil {
			rep.Problems = append(rep.Problems, fmt.Sprintf("pack %s: %v", id, err))
			continue
		}
		entries, err := readTrailer(f, id)
		f.Close()
		if err != nil {
			rep.Problems = append(rep.Problems, fmt.Sprintf("pack %s: trailer: %v", id, err))
		}
		for _, e := range entries {
			cands[e.hash] = append(cands[e.hash], e.loc)
		}
	}
	pf := newPackFiles(dir)
	defer pf.close()
	raw := make([]byte, image.PageSize)
	buf := make([]byte, image.PageSize)
	hashes := make([]image.Hash, 0, len(cands))
	for h := range cands {
		hashes = append(hashes, h)
	}
	sort.Slice(hashes, func(i, j int) bool { return hashLess(hashes[i], hashes[j]) < 0 })
	var sound []packEntry
	for _, h := range hashes {
		found := false
		for _, loc := range cands[h] {
			b := raw[:loc.length]
			if pf.readAt(loc.pack, b, loc.offset) != nil || decodeBlob(b, loc.flags, buf) != nil || Sum(buf) != h {
				continue
			}
			sound = append(sound, packEntry{h, loc})
			found = true
			break
		}
		if found {
			rep.Pages++
		} else {
			rep.PagesDamaged++
		}
	}
	return setPackIndex(wb, sound)
}
