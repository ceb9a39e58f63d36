package dedup

import (
	"bytes"
	"encoding/gob"
	"errors"
	"fmt"

	"github.com/ckptfs/ckptfs/image"
	badger "github.com/dgraph-io/badger/v4"
)

// readSummary decodes the summary value v stored under key: sealed JSON
// (format 2, checked) or gob (format 1).
func readSummary(key, v []byte) (Summary, error) {
	if !isSealed(v) {
		var sum Summary
		err := gob.NewDecoder(bytes.NewReader(v)).Decode(&sum)
		return sum, err
	}
	body, err := unseal(kindSummary, key, v)
	if err != nil {
		return Summary{}, err
	}
	return decodeSummary(body)
}

// chunkKey is the key of the page-table chunk (format 3) hashing to h.
func chunkKey(h image.Hash) []byte {
	k := make([]byte, 2+len(h))
	copy(k, "c/")
	copy(k[2:], h[:])
	return k
}

// loadCheckpoint reads the manifest and page tables of checkpoint id and
// checks them: a sealed manifest against its hash and every page-table
// chunk against the hash the manifest records for it; the page references
// of every format must be in ascending order inside their vma.
func loadCheckpoint(txn *badger.Txn, id string) (*image.Checkpoint, error) {
	c, _, err := loadCheckpointChunks(txn, id)
	return c, err
}

// loadCheckpointChunks is loadCheckpoint that also returns the hashes of
// the content-addressed chunks (format 3) the checkpoint uses.
func loadCheckpointChunks(txn *badger.Txn, id string) (*image.Checkpoint, []image.Hash, error) {
	c, specs, format, err := readManifest(txn, id)
	if err != nil {
		return nil, nil, err
	}
	return fillTables(txn, c, specs, format)
}

// readManifest reads the manifest of checkpoint id: the checkpoint
// without its page references, what it records of each vma's page table
// (nil for format 1: nothing recorded) and its format.
func readManifest(txn *badger.Txn, id string) (*image.Checkpoint, [][]tableSpec, int, error) {
	item, err := txn.Get(manifestKey(id))
	if err != nil {
		return nil, nil, 0, fmt.Errorf("manifest: %w", err)
	}
	var c *image.Checkpoint
	var specs [][]tableSpec
	format := 1
	err = item.Value(func(v []byte) error {
		if !isSealed(v) {
			c = new(image.Checkpoint)
			return gob.NewDecoder(bytes.NewReader(v)).Decode(c)
		}
		body, err := unseal(kindManifest, manifestKey(id), v)
		if err != nil {
			return err
		}
		c, specs, format, err = decodeManifest(body)
		return err
	})
	if err != nil {
		return nil, nil, 0, fmt.Errorf("manifest: %w", err)
	}
	if c.ID != id {
		return nil, nil, 0, fmt.Errorf("manifest: %w: it names checkpoint %q", ErrCorrupt, c.ID)
	}
	return c, specs, format, nil
}

// fillTables reads the page tables of c, whose manifest readManifest
// read, into its vmas and checks them; for format 3 it also returns the
// hashes of the content-addressed chunks they use.
func fillTables(txn *badger.Txn, c *image.Checkpoint, specs [][]tableSpec, format int) (*image.Checkpoint, []image.Hash, error) {
	var err error
	for _, t := range c.Tasks {
		for _, v := range t.VMAs {
			v.Pages = nil // a format-1 manifest must not bring references of its own
		}
	}
	var used []image.Hash
	if format >= 3 {
		used, err = readChunks(txnChunks(txn), c, specs)
	} else {
		err = readTables(txn, c, specs)
	}
	if err != nil {
		return nil, nil, err
	}
	for ti, t := range c.Tasks {
		for vi, v := range t.VMAs {
			if specs != nil && len(v.Pages) != specs[ti][vi].pages {
				return nil, nil, fmt.Errorf("page table of task %d vma %s: %w: %d page references, the manifest records %d",
					t.PID, v.DirName(), ErrCorrupt, len(v.Pages), specs[ti][vi].pages)
			}
			if err := checkRefs(v); err != nil {
				return nil, nil, fmt.Errorf("page table of task %d vma %s: %w: %v", t.PID, v.DirName(), ErrCorrupt, err)
			}
		}
	}
	return c, used, nil
}

// readChunks fills the page references of c from the content-addressed
// values its manifest (format 3) names: for each vma the pieces of its
// chunk list, then the chunks they list, each checked against its hash.
func readChunks(get chunkGetter, c *image.Checkpoint, specs [][]tableSpec) ([]image.Hash, error) {
	var used []image.Hash
	for ti, t := range c.Tasks {
		for vi, v := range t.VMAs {
			spec := specs[ti][vi]
			var leaves []image.Hash
			for pi, h := range spec.chunks {
				where := fmt.Sprintf("page table of task %d vma %s chunk list %d", t.PID, v.DirName(), pi)
				err := getChunk(get, h, where, func(b []byte) error {
					if len(b) == 0 || len(b)%len(image.Hash{}) != 0 || len(b) > tableFanout*len(image.Hash{}) {
						return fmt.Errorf("%s: %w: %d bytes", where, ErrCorrupt, len(b))
					}
					for ; len(b) > 0; b = b[len(image.Hash{}):] {
						leaves = append(leaves, image.Hash(b[:len(image.Hash{})]))
					}
					return nil
				})
				if err != nil {
					return nil, err
				}
				used = append(used, h)
			}
			if n := chunkRefs(3); len(leaves) != (spec.pages+n-1)/n {
				return nil, fmt.Errorf("page table of task %d vma %s: %w: %d chunks for %d pages", t.PID, v.DirName(), ErrCorrupt, len(leaves), spec.pages)
			}
			for ci, h := range leaves {
				where := fmt.Sprintf("page table of task %d vma %s chunk %d", t.PID, v.DirName(), ci)
				err := getChunk(get, h, where, func(refs []byte) (err error) {
					if v.Pages, err = decodeRefs(refs, v.Pages); err != nil {
						return fmt.Errorf("%s: %w: %v", where, ErrCorrupt, err)
					}
					return nil
				})
				if err != nil {
					return nil, err
				}
				used = append(used, h)
			}
		}
	}
	return used, nil
}

// chunkGetter passes the value of chunk h to f; it returns an error
// wrapping errChunkMissing if there is none (the seam by which a remote
// store's checkpoints are read like local ones).
type chunkGetter func(h image.Hash, f func([]byte) error) error

var errChunkMissing = errors.New("chunk missing")

// txnChunks reads chunks c/<h> in txn.
func txnChunks(txn *badger.Txn) chunkGetter {
	return func(h image.Hash, f func([]byte) error) error {
		item, err := txn.Get(chunkKey(h))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return errChunkMissing
		}
		if err != nil {
			return err
		}
		return item.Value(f)
	}
}

// getChunk reads the value of chunk h, checks it against h and passes it to f.
func getChunk(get chunkGetter, h image.Hash, where string, f func([]byte) error) error {
	var ferr error
	err := get(h, func(v []byte) error {
		if got := Sum(v); got != h {
			return fmt.Errorf("%s: %w: hash mismatch (recorded %s, content hashes to %s)", where, ErrCorrupt, h, got)
		}
		ferr = f(v)
		return ferr
	})
	if ferr != nil {
		return ferr
	}
	if errors.Is(err, errChunkMissing) {
		return fmt.Errorf("%s: %w: chunk %s missing", where, ErrCorrupt, h)
	}
	if err != nil && !errors.Is(err, ErrCorrupt) {
		return fmt.Errorf("%s: %w", where, err)
	}
	return err
}

// readTables fills the page references of c from the numbered page-table
// chunks t/<id>/... of formats 1 and 2.
func readTables(txn *badger.Txn, c *image.Checkpoint, specs [][]tableSpec) error {
	nextChunk := make(map[[2]int]int)
	return eachTable(txn, c.ID, func(task, vma, chunk int, refs []byte) error {
		if task >= len(c.Tasks) || vma >= len(c.Tasks[task].VMAs) {
			return fmt.Errorf("page table for task %d vma %d: %w: no such vma", task, vma, ErrCorrupt)
		}
		v := c.Tasks[task].VMAs[vma]
		where := fmt.Sprintf("page table of task %d vma %s chunk %d", c.Tasks[task].PID, v.DirName(), chunk)
		k := [2]int{task, vma}
		if chunk != nextChunk[k] {
			return fmt.Errorf("%s: %w: chunk %d expected", where, ErrCorrupt, nextChunk[k])
		}
		nextChunk[k]++
		if specs != nil {
			spec := specs[task][vma]
			if chunk >= len(spec.chunks) {
				return fmt.Errorf("%s: %w: the manifest records %d chunks", where, ErrCorrupt, len(spec.chunks))
			}
			if got := Sum(refs); got != spec.chunks[chunk] {
				return fmt.Errorf("%s: %w: hash mismatch (recorded %s, content hashes to %s)", where, ErrCorrupt, spec.chunks[chunk], got)
			}
		}
		var err error
		if v.Pages, err = decodeRefs(refs, v.Pages); err != nil {
			return fmt.Errorf("%s: %w: %v", where, ErrCorrupt, err)
		}
		return nil
	})
}

// checkRefs checks that the page references of v are in ascending order
// and inside it.
func checkRefs(v *image.VMA) error {
	if v.End < v.Start {
		return fmt.Errorf("vma ends before it starts")
	}
	n := (v.End - v.Start) / image.PageSize
	for i, r := range v.Pages {
		if uint64(r.Index) >= n {
			return fmt.Errorf("page %d at index %d is outside the vma (%d pages)", i, r.Index, n)
		}
		if i > 0 && r.Index <= v.Pages[i-1].Index {
			return fmt.Errorf("page %d at index %d does not follow index %d", i, r.Index, v.Pages[i-1].Index)
		}
	}
	return nil
}

// TableSource is a Repo that gives a checkpoint without expanding its
// page tables (format 3): a tracked dump takes the chunks of the
// previous checkpoint that no page was written in as they are, and
// reads only the others.
type TableSource interface {
	// LoadStored returns checkpoint id (exact) as Load does, except that
	// a vma with a content-addressed page table (format 3) gets Table
	// (its count and chunk-list pieces, as the manifest records them)
	// and no Pages; a vma of an older format gets Pages.
	LoadStored(id string) (*image.Checkpoint, error)
	// TableValue returns the page-table value (a chunk or a piece of a
	// chunk list) hashing to h, checked against h.
	TableValue(h image.Hash) ([]byte, error)
}

// LoadStored is TableSource.LoadStored.
func (s *Store) LoadStored(id string) (*image.Checkpoint, error) {
	return s.loadWith(id, loadStored)
}

// loadStored reads the manifest of checkpoint id; a format-3 page table
// stays a StoredTable, an older one is read (loadCheckpoint).
func loadStored(txn *badger.Txn, id string) (*image.Checkpoint, error) {
	c, specs, format, err := readManifest(txn, id)
	if err != nil {
		return nil, err
	}
	if format < 3 {
		c, _, err := fillTables(txn, c, specs, format)
		return c, err
	}
	for ti, t := range c.Tasks {
		for vi, v := range t.VMAs {
			if spec := specs[ti][vi]; spec.pages > 0 {
				if v.End < v.Start || uint64(spec.pages) > (v.End-v.Start)/image.PageSize {
					return nil, fmt.Errorf("page table of task %d vma %s: %w: %d page references for %d pages",
						t.PID, v.DirName(), ErrCorrupt, spec.pages, (v.End-v.Start)/image.PageSize)
				}
				v.Table = &image.StoredTable{Pages: spec.pages, Top: spec.chunks}
			}
		}
	}
	return c, nil
}

// TableValue is TableSource.TableValue.
func (s *Store) TableValue(h image.Hash) ([]byte, error) {
	var out []byte
	err := view(s.db, func(txn *badger.Txn) error {
		return getChunk(txnChunks(txn), h, "page-table value "+h.String(), func(b []byte) error {
			out = append([]byte(nil), b...)
			return nil
		})
	})
	return out, err
}

// TableLeaves returns the hashes of the chunks of stored table t, read
// from its chunk-list pieces, one chunk per ChunkRefs references.
func TableLeaves(src TableSource, t *image.StoredTable) ([]image.Hash, error) {
	var leaves []image.Hash
	for pi, h := range t.Top {
		b, err := src.TableValue(h)
		if err != nil {
			return nil, err
		}
		if len(b) == 0 || len(b)%len(h) != 0 || len(b) > tableFanout*len(h) {
			return nil, fmt.Errorf("chunk list piece %d: %w: %d bytes", pi, ErrCorrupt, len(b))
		}
		for ; len(b) > 0; b = b[len(h):] {
			leaves = append(leaves, image.Hash(b[:len(h)]))
		}
	}
	if len(leaves) != (t.Pages+ChunkRefs-1)/ChunkRefs {
		return nil, fmt.Errorf("%w: %d chunks for %d pages", ErrCorrupt, len(leaves), t.Pages)
	}
	return leaves, nil
}

// TableChunk returns the page references of stored chunk h, checked to
// ascend and to be at most ChunkRefs.
func TableChunk(src TableSource, h image.Hash) ([]image.PageRef, error) {
	b, err := src.TableValue(h)
	if err != nil {
		return nil, err
	}
	refs, err := decodeRefs(b, nil)
	if err == nil && (len(refs) == 0 || len(refs) > ChunkRefs) {
		err = fmt.Errorf("%d references", len(refs))
	}
	for i := 1; err == nil && i < len(refs); i++ {
		if refs[i].Index <= refs[i-1].Index {
			err = fmt.Errorf("page %d at index %d does not follow index %d", i, refs[i].Index, refs[i-1].Index)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("page-table chunk %s: %w: %v", h, ErrCorrupt, err)
	}
	return refs, nil
}

// ChunkRefs is the number of page references of every chunk of a
// format-3 page table but its last.
const ChunkRefs = tableChunk3
