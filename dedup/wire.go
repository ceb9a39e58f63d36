package dedup

import (
	"fmt"

	"github.com/ckptfs/ckptfs/image"
)

// WireCheckpoint is a checkpoint on the store socket: its JSON manifest
// (the body of a format-2 manifest, docs/store-format.md) and the page
// references of every vma, task by task, encoded as in the page tables
// (none for a vma whose table the client stored already: VMA.Table).
// Neither end sends Go structs of the model, so both read exactly what the
// store format says.
type WireCheckpoint struct {
	Manifest []byte
	Refs     [][]byte
}

func toWire(c *image.Checkpoint) (*WireCheckpoint, error) {
	body, _, err := encodeManifest(c)
	if err != nil {
		return nil, fmt.Errorf("encode checkpoint: %w", err)
	}
	w := &WireCheckpoint{Manifest: body}
	for _, t := range c.Tasks {
		for _, v := range t.VMAs {
			w.Refs = append(w.Refs, encodeRefs(v.Pages)) // none for a stored Table
		}
	}
	return w, nil
}

// fromWire decodes w and checks its page references against the counts
// and hashes its manifest records.
func fromWire(w *WireCheckpoint) (*image.Checkpoint, error) {
	c, specs, format, err := decodeManifest(w.Manifest)
	if err != nil {
		return nil, err
	}
	i := 0
	for ti, t := range c.Tasks {
		for vi, v := range t.VMAs {
			if i >= len(w.Refs) {
				return nil, fmt.Errorf("checkpoint: %w: page references of %d vmas only", ErrCorrupt, len(w.Refs))
			}
			if v.Pages, err = decodeRefs(w.Refs[i], nil); err != nil {
				return nil, fmt.Errorf("checkpoint task %d vma %s: %w: %v", t.PID, v.DirName(), ErrCorrupt, err)
			}
			i++
			spec := specs[ti][vi]
			if len(v.Pages) == 0 && spec.pages > 0 && format >= 3 {
				// The client stored the table already (PutTables):
				// Commit checks that it is whole.
				v.Table = &image.StoredTable{Pages: spec.pages, Top: spec.chunks}
				continue
			}
			top, _ := tableValues(v, format)
			ok := len(v.Pages) == spec.pages && len(top) == len(spec.chunks)
			for ci := 0; ok && ci < len(top); ci++ {
				ok = top[ci] == spec.chunks[ci]
			}
			if !ok {
				return nil, fmt.Errorf("checkpoint task %d vma %s: %w: page references do not match the manifest", t.PID, v.DirName(), ErrCorrupt)
			}
			if err := checkRefs(v); err != nil {
				return nil, fmt.Errorf("checkpoint task %d vma %s: %w: %v", t.PID, v.DirName(), ErrCorrupt, err)
			}
		}
	}
	if i != len(w.Refs) {
		return nil, fmt.Errorf("checkpoint: %w: page references of %d vmas for %d", ErrCorrupt, len(w.Refs), i)
	}
	return c, nil
}
