package dedup

import (
	"bytes"
	"encoding/gob"
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

// loadCheckpoint reads the manifest and page tables of checkpoint id and
// checks them: a sealed manifest against its hash and every page-table
// chunk against the hash the manifest records for it; the page references
// of every format must be in ascending order inside their vma.
func loadCheckpoint(txn *badger.Txn, id string) (*image.Checkpoint, error) {
	item, err := txn.Get(manifestKey(id))
	if err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	var c *image.Checkpoint
	var specs [][]tableSpec // nil for format 1: nothing recorded
	err = item.Value(func(v []byte) error {
		if !isSealed(v) {
			c = new(image.Checkpoint)
			return gob.NewDecoder(bytes.NewReader(v)).Decode(c)
		}
		body, err := unseal(kindManifest, manifestKey(id), v)
		if err != nil {
			return err
		}
		c, specs, err = decodeManifest(body)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	if c.ID != id {
		return nil, fmt.Errorf("manifest: %w: it names checkpoint %q", ErrCorrupt, c.ID)
	}
	for _, t := range c.Tasks {
		for _, v := range t.VMAs {
			v.Pages = nil // a format-1 manifest must not bring references of its own
		}
	}
	nextChunk := make(map[[2]int]int)
	err = eachTable(txn, id, func(task, vma, chunk int, refs []byte) error {
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
	if err != nil {
		return nil, err
	}
	for ti, t := range c.Tasks {
		for vi, v := range t.VMAs {
			if specs != nil && len(v.Pages) != specs[ti][vi].pages {
				return nil, fmt.Errorf("page table of task %d vma %s: %w: %d page references, the manifest records %d",
					t.PID, v.DirName(), ErrCorrupt, len(v.Pages), specs[ti][vi].pages)
			}
			if err := checkRefs(v); err != nil {
				return nil, fmt.Errorf("page table of task %d vma %s: %w: %v", t.PID, v.DirName(), ErrCorrupt, err)
			}
		}
	}
	return c, nil
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
