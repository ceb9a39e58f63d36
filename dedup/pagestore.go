package dedup

import (
	"errors"
	"fmt"

	"github.com/ckptfs/ckptfs/image"
	"github.com/ckptfs/ckptfs/internal/testhold"
)

// How pages are written and read (format 3): PutPages appends them to an
// open pack (packwriter.go) and returns where, for PutPages to put in the
// page index (so reads find them before the pack is sealed). Each
// concurrent writePages call has an open pack of its own, taken from the
// idle ones (or created) under packMu and written without it: one
// worker's write to the disk overlaps another's hashing and writing
// (O_DIRECT writes to one file would serialise on its inode lock anyway).
// When a pack reaches packTarget it is handed to a goroutine that seals it
// (trailer, fsync) and only then writes its index record x/<pack>
// (packindex.go) to Badger, while the next pack fills; Commit seals every
// open pack (one in a writer's hands when it is given back) and waits for
// every seal. So an index entry never points at bytes that are not on
// disk, and a kill before a seal leaves only a pack no entry points to,
// which gc deletes.

// maxSealing is how many full packs may be sealing at once.
const maxSealing = 2

// sealFault, set by tests only, makes the seal of a pack fail.
var sealFault func(packID) error

// writePages appends the pages of b to an open pack and returns where
// each is. The pages are written when it returns (they are the caller's
// memory).
func (s *Store) writePages(b *putBatch, pages [][]byte) ([]packLoc, error) {
	if len(b.hashes) == 0 {
		return nil, nil
	}
	var blobs [][]byte
	var flags []uint32
	var locs []packLoc
	if n := len(b.hashes); b.sc != nil && cap(b.sc.blobs) >= n {
		blobs, flags, locs = b.sc.blobs[:n], b.sc.flags[:n], b.sc.locs[:n]
	} else {
		blobs, flags, locs = make([][]byte, n), make([]uint32, n), make([]packLoc, n)
	}
	for k := range b.hashes {
		blobs[k], flags[k] = s.encodeBlob(pages[b.idx[k]])
	}
	w, err := s.takePack()
	if err != nil {
		return nil, err
	}
	for k, h := range b.hashes {
		if w == nil {
			if w, err = s.takePack(); err != nil {
				return nil, err
			}
		}
		loc, err := w.add(h, blobs[k], flags[k])
		if err != nil {
			s.dropPack(w, err)
			return nil, err
		}
		locs[k] = loc
		if w.size() >= packTarget {
			if err := w.flush(); err != nil {
				s.dropPack(w, err)
				return nil, err
			}
			s.packMu.Lock()
			s.rotateLocked(w)
			s.packMu.Unlock()
			w = nil
		}
	}
	// The blobs are the caller's memory: written before we return.
	if w != nil {
		if err := w.flush(); err != nil {
			s.dropPack(w, err)
			return nil, err
		}
		s.packMu.Lock()
		s.givePackLocked(w)
		s.packMu.Unlock()
	}
	s.packMu.Lock()
	defer s.packMu.Unlock()
	return locs, s.sealErrLocked()
}

// takePack returns an open pack for the caller alone: an idle one, or a
// new one.
func (s *Store) takePack() (*packWriter, error) {
	s.packMu.Lock()
	if n := len(s.idle); n > 0 {
		w := s.idle[n-1]
		s.idle[n-1] = nil
		s.idle = s.idle[:n-1]
		s.busy[w] = false
		s.packMu.Unlock()
		return w, nil
	}
	var buf packBuffers
	if n := len(s.packBufs); n > 0 {
		buf = s.packBufs[n-1]
		s.packBufs[n-1] = packBuffers{}
		s.packBufs = s.packBufs[:n-1]
	}
	s.packMu.Unlock()
	w, err := createPackWith(s.dir, buf)
	if err != nil {
		s.packMu.Lock()
		s.putPackBuffersLocked(buf)
		s.packMu.Unlock()
		return nil, err
	}
	s.packMu.Lock()
	s.busy[w] = false
	s.packMu.Unlock()
	return w, nil
}

// givePackLocked takes back the open pack w from its writer (its bytes
// written): it is sealed now if a seal asked for it meanwhile, else kept
// for the next writer. packMu is held.
func (s *Store) givePackLocked(w *packWriter) {
	if s.busy[w] {
		s.rotateLocked(w)
		return
	}
	delete(s.busy, w)
	s.idle = append(s.idle, w)
}

// dropPack gives up the open pack w, whose write failed.
func (s *Store) dropPack(w *packWriter, err error) {
	s.packMu.Lock()
	defer s.packMu.Unlock()
	s.failSealLocked(w, err)
	if s.busy[w] {
		s.sealing.Done()
	}
	delete(s.busy, w)
}

// rotateLocked hands the open pack w, its bytes written and no writer
// holding it (any more), to a sealing goroutine. packMu is held.
func (s *Store) rotateLocked(w *packWriter) {
	asked := s.busy[w]
	delete(s.busy, w)
	s.sealing.Add(1)
	if asked {
		s.sealing.Done() // the seal's claim on w (see seal)
	}
	go func() {
		defer s.sealing.Done()
		s.sealSlots <- struct{}{} // not under packMu: a seal ends taking it
		defer func() { <-s.sealSlots }()
		err := w.seal()
		if err == nil && sealFault != nil {
			err = sealFault(w.id)
		}
		if err == nil {
			testhold.At("pack-sealed")
			err = s.indexPack(w)
		}
		if err == nil {
			s.packMu.Lock()
			s.putPackBuffersLocked(w.buffers())
			s.packMu.Unlock()
		}
		if err != nil {
			// Under putMu: a PutPages call that wrote pages into w
			// and indexes them after this either finds w failed
			// (and takes them out again) or has indexed them, and
			// failSealLocked takes them out.
			s.putMu.Lock()
			defer s.putMu.Unlock()
			s.failedPacks[w.id] = true
			s.packMu.Lock()
			defer s.packMu.Unlock()
			s.failSealLocked(w, err)
		}
	}()
}

// failSealLocked records that pack w could not be sealed: its pages are
// not stored after all, so the page index must not claim them.
func (s *Store) failSealLocked(w *packWriter, err error) {
	w.abort()
	s.packs.remove(w.id) // a reader's descriptor of it
	var hs []image.Hash
	for i := range w.n {
		hs = append(hs, w.hash(i))
	}
	if x := s.index.Load(); x != nil {
		x.removeUnsorted(hs)
	}
	if s.sealErr == nil {
		s.sealErr = fmt.Errorf("seal pack %s: %w", w.id, err)
	}
}

// sealErrLocked returns (and clears) the error of a failed seal.
func (s *Store) sealErrLocked() error {
	err := s.sealErr
	s.sealErr = nil
	return err
}

// seal seals every open pack, waits until every pack is sealed and
// indexed, and returns the first error of a seal since the last call. A
// pack a writer holds is sealed when the writer gives it back: its pages
// may be those of a call that returned already (a page another call was
// writing is waited for, not written twice).
func (s *Store) seal() error {
	s.packMu.Lock()
	for _, w := range s.idle {
		s.rotateLocked(w)
	}
	clear(s.idle)
	s.idle = s.idle[:0]
	for w, asked := range s.busy {
		if !asked {
			s.busy[w] = true
			s.sealing.Add(1) // done by givePackLocked or dropPack
		}
	}
	s.packMu.Unlock()
	s.sealing.Wait()
	s.packMu.Lock()
	defer s.packMu.Unlock()
	// Every pack sealed: the buffers kept for the next ones go back to
	// the heap (a store that serves clients keeps none between commits).
	clear(s.packBufs)
	s.packBufs = s.packBufs[:0]
	return s.sealErrLocked()
}

// maxPackBuffers is how many packs' buffers a store keeps for the next
// packs (see packBuffers): as many as may be sealing at once and two
// more.
const maxPackBuffers = maxSealing + 2

// putPackBuffersLocked keeps buf for a next pack, if there is room.
// packMu is held.
func (s *Store) putPackBuffersLocked(buf packBuffers) {
	if len(s.packBufs) < maxPackBuffers && cap(buf.enc) > 0 {
		s.packBufs = append(s.packBufs, buf)
	}
}

// indexPack writes the index record of the sealed pack w, made from its
// trailer (see packWriter.indexRecord).
func (s *Store) indexPack(w *packWriter) error {
	if w.n == 0 {
		return nil
	}
	return s.putPackIndex(w.id, w.indexRecord())
}

// putPackIndex writes rec, the index record of pack id, to Badger. Badger
// keeps rec until the batch is flushed (committed): the caller may reuse
// it once this returns.
func (s *Store) putPackIndex(id packID, rec []byte) error {
	wb := s.db.NewWriteBatch()
	defer wb.Cancel()
	if err := wb.Set(packIndexKey(id), rec); err != nil {
		return fmt.Errorf("index pack %s: %w", id, err)
	}
	if err := wb.Flush(); err != nil {
		return fmt.Errorf("index pack %s: %w", id, err)
	}
	return nil
}

// locate returns where page h is stored: the page index (loaded on first
// use) knows every page of the sealed packs and of the open ones.
func (s *Store) locate(h image.Hash) (packLoc, error) {
	x, err := s.pages()
	if err != nil {
		return packLoc{}, fmt.Errorf("page %s: %w", h, err)
	}
	if l, ok := x.lookup(h); ok {
		return l, nil
	}
	return packLoc{}, fmt.Errorf("page %s: %w", h, ErrPageMissing)
}

// readBlob reads the blob at loc into buf (PageSize bytes), decoding it,
// and checks that it is page h.
func (s *Store) readBlob(h image.Hash, loc packLoc, buf []byte) error {
	raw := buf[:loc.length]
	if loc.flags&blobS2 != 0 {
		raw = make([]byte, loc.length)
	}
	// No lock of the open pack: every location a reader can learn is of
	// bytes already written (writePages writes before it returns, and
	// only then does PutPages put the locations in the page index).
	if err := s.packs.readAt(loc.pack, raw, loc.offset); err != nil {
		return fmt.Errorf("page %s: %w", h, err)
	}
	if err := decodeBlob(raw, loc.flags, buf); err != nil {
		return fmt.Errorf("page %s: %w (%v)", h, ErrPageCorrupt, err)
	}
	if got := Sum(buf); got != h {
		return fmt.Errorf("page %s: %w (content hashes to %s)", h, ErrPageCorrupt, got)
	}
	return nil
}

// ReadPage fills buf with page h and checks its hash: a damaged pack is
// never served. A read that fails is tried once more with a fresh index
// look-up (gc may have moved the page meanwhile: it relocates pages in the
// index before it deletes their old pack).
func (s *Store) ReadPage(h image.Hash, buf []byte) error {
	if len(buf) < image.PageSize {
		return fmt.Errorf("read page %s: buffer of %d bytes", h, len(buf))
	}
	buf = buf[:image.PageSize]
	var err error
	for range 2 {
		var loc packLoc
		loc, err = s.locate(h)
		if err != nil {
			if errors.Is(err, ErrPageMissing) || errors.Is(err, ErrPageCorrupt) {
				return err
			}
			continue
		}
		if err = s.readBlob(h, loc, buf); err == nil {
			return nil
		}
	}
	if errors.Is(err, ErrPageMissing) || errors.Is(err, ErrPageCorrupt) {
		return err
	}
	return fmt.Errorf("read page %s: %w", h, err)
}
