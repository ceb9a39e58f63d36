package dedup

import (
	"errors"
	"fmt"

	"github.com/ckptfs/ckptfs/image"
	badger "github.com/dgraph-io/badger/v4"
)

// TableWriter is a Repo that takes page-table values (the chunks and
// chunk-list pieces of format 3, content-addressed c/<hash>) before the
// commit that uses them, so that a dump need not hold every page
// reference of a checkpoint until its commit (TableBuilder). A value no
// commit comes to use is an orphan, as the chunks of a commit killed
// before its manifest always were: gc deletes it, verify ignores it.
type TableWriter interface {
	PutTables(values [][]byte) error
}

// PutTables stores the page-table values the store lacks.
func (s *Store) PutTables(values [][]byte) error {
	s.gcMu.RLock()
	defer s.gcMu.RUnlock()
	if err := s.putValues(values); err != nil {
		return fmt.Errorf("page tables: %w", err)
	}
	return nil
}

// PutTables sends page-table values to the store's owner.
func (c *Client) PutTables(values [][]byte) error {
	return c.call("PutTables", values, new(int))
}

// tableFlushBytes is how many bytes of values a TableBuilder gathers
// before it writes them: one Badger batch of ~110 chunks.
const tableFlushBytes = 1 << 20

// TableBuilder builds the format-3 page tables of a checkpoint's vmas
// from their page references, given in order (all of one vma together,
// in ascending index), and writes their values to the store as it goes:
// what it holds is one open chunk and piece and its pending batch,
// whatever the size of the checkpoint. A vma done gets Table (and no
// Pages): Commit takes it as it is. The values are exactly those
// tableValues makes of the same references, so a vma that did not change
// costs no new chunk.
type TableBuilder struct {
	w       TableWriter
	v       *image.VMA // the vma being built
	pages   int        // its references so far
	last    uint32     // the index of its last reference
	refs    []byte     // the open chunk: encoded references
	leaves  []byte     // the open piece: hashes of the chunks
	top     []image.Hash
	pending [][]byte // values not written yet
	bytes   int      // their size
	done    map[*image.VMA]bool
	ended   bool // the vma's last chunk is a stored one (AddChunk, last)
}

// NewTableBuilder returns a builder writing to w.
func NewTableBuilder(w TableWriter) *TableBuilder {
	return &TableBuilder{w: w, done: make(map[*image.VMA]bool)}
}

// Add appends the reference of one saved page of v.
func (b *TableBuilder) Add(v *image.VMA, r image.PageRef) error {
	if err := b.enter(v); err != nil {
		return err
	}
	if b.pages > 0 && r.Index <= b.last || b.ended {
		return fmt.Errorf("page table of vma %s: page %d after page %d", v.DirName(), r.Index, b.last)
	}
	if b.refs == nil {
		b.refs = make([]byte, 0, tableChunk3*refSize)
	}
	b.refs = append(b.refs, byte(r.Index>>24), byte(r.Index>>16), byte(r.Index>>8), byte(r.Index))
	b.refs = append(b.refs, r.Hash[:]...)
	b.pages++
	b.last = r.Index
	if len(b.refs) == tableChunk3*refSize {
		return b.endChunk()
	}
	return nil
}

// enter makes v the vma whose references come next, ending the table of
// the one before; a vma's references come in one run.
func (b *TableBuilder) enter(v *image.VMA) error {
	if v == b.v {
		return nil
	}
	if err := b.endVMA(); err != nil {
		return err
	}
	if b.done[v] {
		return fmt.Errorf("page table of vma %s: its references come in two runs", v.DirName())
	}
	b.v = v
	return nil
}

// AddChunk appends to v's table the n references of chunk h, a chunk
// already in the store (of an earlier checkpoint's table), whose first
// reference is at index first and its last at index last; last says
// nothing of v follows. Where the chunk falls on a chunk boundary of v's
// table and is whole (ChunkRefs references, or fewer as v's last one),
// only its hash is taken: nothing is read or written for it. Otherwise
// its references are added one by one, from load.
func (b *TableBuilder) AddChunk(v *image.VMA, h image.Hash, n int, first, lastIdx uint32, last bool,
	load func() ([]image.PageRef, error)) error {
	if n <= 0 || n > tableChunk3 || lastIdx < first || int(lastIdx-first) < n-1 {
		return fmt.Errorf("page table of vma %s: stored chunk of %d references from %d to %d", v.DirName(), n, first, lastIdx)
	}
	if err := b.enter(v); err != nil {
		return err
	}
	if b.pages > 0 && first <= b.last || b.ended || len(b.refs) > 0 || n < tableChunk3 && !last {
		refs, err := load()
		if err != nil {
			return err
		}
		if len(refs) != n || refs[0].Index != first || refs[n-1].Index != lastIdx {
			return fmt.Errorf("page table of vma %s: stored chunk %s is not the %d references from %d to %d", v.DirName(), h, n, first, lastIdx)
		}
		for _, r := range refs {
			if err := b.Add(v, r); err != nil {
				return err
			}
		}
		return nil
	}
	b.pages += n
	b.last = lastIdx
	b.ended = last
	b.leaves = append(b.leaves, h[:]...)
	if len(b.leaves) == tableFanout*len(h) {
		b.endPiece()
	}
	return nil
}

// Finish ends the last vma and writes every value still pending.
func (b *TableBuilder) Finish() error {
	if err := b.endVMA(); err != nil {
		return err
	}
	return b.flush()
}

func (b *TableBuilder) endChunk() error {
	if len(b.refs) == 0 {
		return nil
	}
	h := Sum(b.refs)
	b.add(b.refs)
	b.refs = nil
	b.leaves = append(b.leaves, h[:]...)
	if len(b.leaves) == tableFanout*len(h) {
		b.endPiece()
	}
	if b.bytes >= tableFlushBytes {
		return b.flush()
	}
	return nil
}

func (b *TableBuilder) endPiece() {
	if len(b.leaves) == 0 {
		return
	}
	b.top = append(b.top, Sum(b.leaves))
	b.add(b.leaves)
	b.leaves = nil
}

func (b *TableBuilder) endVMA() error {
	if b.v == nil {
		return nil
	}
	if err := b.endChunk(); err != nil {
		return err
	}
	b.endPiece()
	b.v.Table = &image.StoredTable{Pages: b.pages, Top: b.top}
	b.v.Pages = nil
	b.done[b.v] = true
	b.v, b.pages, b.last, b.top, b.ended = nil, 0, 0, nil, false
	return nil
}

func (b *TableBuilder) add(value []byte) {
	b.pending = append(b.pending, value)
	b.bytes += len(value)
}

func (b *TableBuilder) flush() error {
	if len(b.pending) == 0 {
		return nil
	}
	err := b.w.PutTables(b.pending)
	clear(b.pending)
	b.pending, b.bytes = b.pending[:0], 0
	return err
}

// putValues stores the content-addressed page-table values (c/<hash>)
// the store does not hold yet.
func (s *Store) putValues(values [][]byte) error {
	want := make(map[image.Hash][]byte, len(values))
	for _, v := range values {
		want[Sum(v)] = v
	}
	err := view(s.db, func(txn *badger.Txn) error {
		for h := range want {
			_, err := txn.Get(chunkKey(h))
			if err == nil {
				delete(want, h)
			} else if !errors.Is(err, badger.ErrKeyNotFound) {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	wb := s.db.NewWriteBatch()
	defer wb.Cancel()
	for h, v := range want {
		if err := wb.Set(chunkKey(h), v); err != nil {
			return err
		}
	}
	return wb.Flush()
}

// checkStoredTables checks that the page tables of c's vmas that a dump
// stored ahead of the commit (VMA.Table) are whole in the store: every
// piece of each chunk list, and every chunk they name, one chunk per
// tableChunk3 references. A commit never names a value that is not there.
func (s *Store) checkStoredTables(c *image.Checkpoint) error {
	return view(s.db, func(txn *badger.Txn) error {
		for _, t := range c.Tasks {
			for _, v := range t.VMAs {
				if v.Table == nil {
					continue
				}
				if err := checkStoredTable(txn, v); err != nil {
					return fmt.Errorf("page table of task %d vma %s: %w", t.PID, v.DirName(), err)
				}
			}
		}
		return nil
	})
}

func checkStoredTable(txn *badger.Txn, v *image.VMA) error {
	if len(v.Pages) > 0 {
		return errors.New("both page references and a stored table")
	}
	n := v.Table.Pages
	if n <= 0 || len(v.Table.Top) != (n+tableChunk3*tableFanout-1)/(tableChunk3*tableFanout) {
		return fmt.Errorf("%d chunk-list pieces for %d pages", len(v.Table.Top), n)
	}
	leaves := 0
	for _, h := range v.Table.Top {
		item, err := txn.Get(chunkKey(h))
		if err != nil {
			return fmt.Errorf("chunk list %s: %w", h, err)
		}
		var hs []image.Hash
		err = item.Value(func(b []byte) error {
			if len(b) == 0 || len(b)%len(h) != 0 || len(b) > tableFanout*len(h) || Sum(b) != h {
				return fmt.Errorf("chunk list %s: %w", h, ErrCorrupt)
			}
			for ; len(b) > 0; b = b[len(h):] {
				hs = append(hs, image.Hash(b[:len(h)]))
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, l := range hs {
			if _, err := txn.Get(chunkKey(l)); err != nil {
				return fmt.Errorf("chunk %s: %w", l, err)
			}
		}
		leaves += len(hs)
	}
	if leaves != (n+tableChunk3-1)/tableChunk3 {
		return fmt.Errorf("%d chunks for %d pages", leaves, n)
	}
	return nil
}
