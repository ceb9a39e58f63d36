package dedup

import (
	"fmt"
	"os"

	"github.com/ckptfs/ckptfs/image"
)

// packTarget is the size at which a pack is sealed and the next one begun:
// large enough that a GiB dump makes a few dozen files, small enough that
// gc rewrites little to free a mostly dead pack.
const packTarget = 32 << 20

// packBufSize is how many bytes a packWriter gathers before a write(2).
const packBufSize = 1 << 20

// packWriter appends blobs to one new pack. It is not safe for concurrent
// use (the Store's packMu guards it).
type packWriter struct {
	id      packID
	path    string
	f       *os.File
	buf     []byte // appended, not yet written
	written int64  // bytes written to f
	entries []packEntry
}

// createPack starts a new pack in the store at dir.
func createPack(dir string) (*packWriter, error) {
	if err := os.MkdirAll(dir+"/"+packDir, 0o700); err != nil {
		return nil, fmt.Errorf("create pack directory: %w", err)
	}
	for range 4 {
		id := newPackID()
		path := packPath(dir, id)
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		if os.IsExist(err) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("create pack: %w", err)
		}
		w := &packWriter{id: id, path: path, f: f, buf: make([]byte, 0, packBufSize)}
		w.buf = append(w.buf, packHeader()...)
		return w, nil
	}
	return nil, fmt.Errorf("create pack: no free name")
}

// size is the bytes of the pack so far.
func (w *packWriter) size() int64 { return w.written + int64(len(w.buf)) }

// add appends blob, the stored form of page h, and returns where it is.
func (w *packWriter) add(h image.Hash, blob []byte, flags uint32) (packLoc, error) {
	loc := packLoc{pack: w.id, offset: w.size(), length: uint32(len(blob)), flags: flags}
	if len(w.buf)+len(blob) > cap(w.buf) {
		if err := w.flush(); err != nil {
			return packLoc{}, err
		}
	}
	w.buf = append(w.buf, blob...)
	w.entries = append(w.entries, packEntry{hash: h, loc: loc})
	return loc, nil
}

// flush writes the gathered bytes.
func (w *packWriter) flush() error {
	if len(w.buf) == 0 {
		return nil
	}
	if _, err := w.f.WriteAt(w.buf, w.written); err != nil {
		return fmt.Errorf("write pack %s: %w", w.id, err)
	}
	w.written += int64(len(w.buf))
	w.buf = w.buf[:0]
	return nil
}

// readAt reads a blob of the open pack (flushing first if it is still
// gathered).
func (w *packWriter) readAt(p []byte, off int64) error {
	if off+int64(len(p)) > w.written {
		if err := w.flush(); err != nil {
			return err
		}
	}
	_, err := w.f.ReadAt(p, off)
	return err
}

// finish writes the trailer, fsyncs and closes the pack, and returns its
// entries. The pack's directory entry is made durable too.
func (w *packWriter) finish() ([]packEntry, error) {
	w.buf = append(w.buf, encodeTrailer(w.entries)...)
	if err := w.flush(); err != nil {
		return nil, err
	}
	if err := w.f.Sync(); err != nil {
		return nil, fmt.Errorf("sync pack %s: %w", w.id, err)
	}
	if err := w.f.Close(); err != nil {
		return nil, fmt.Errorf("close pack %s: %w", w.id, err)
	}
	if err := syncDir(w.path[:len(w.path)-len(w.id.String()+packExt)]); err != nil {
		return nil, fmt.Errorf("sync pack directory: %w", err)
	}
	return w.entries, nil
}

// abort closes and removes the pack.
func (w *packWriter) abort() {
	w.f.Close()
	os.Remove(w.path)
}
