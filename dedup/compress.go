package dedup

import (
	"fmt"

	"github.com/ckptfs/ckptfs/image"
	"github.com/klauspost/compress/s2"
)

// Pages may be stored compressed with s2 (blobS2), one page a blob, so
// that a page still reads with one pread. The hash is of the page, taken
// before compressing: dedup does not depend on the compression. Whether
// PutPages compresses is the store's choice (Store.SetCompression); every
// store reads both forms.
//
// Off by default, by measurement (BenchmarkCompress, 4 KiB blocks, one
// core, same run): on a Python heap s2 stores 0.27 of the bytes at
// 600 MB/s (2.0x the time of hashing the same pages) and decompresses at
// 1.7 GB/s; zstd (fastest) stores 0.15 but at 129 MB/s (9.3x the hash);
// random memory does not shrink (ratio 1.00; s2 gives up at 2.7 GB/s). So
// compression would triple the CPU a dump spends on a page (hash + s2)
// and halve what one core can serve to a reader (decode + hash check),
// against the goals of dump CPU <= 2x CRIU and reads >= 1.5 GB/s;
// it pays only where disk space is what matters.

// minSaving is the least a compressed page must save to be kept so.
const minSaving = image.PageSize / 8

// SetCompression makes PutPages store pages compressed with s2 (on) or
// raw (off, the default).
func (s *Store) SetCompression(on bool) { s.compress.Store(on) }

// encodeBlob returns the stored form of page and its flags.
func (s *Store) encodeBlob(page []byte) ([]byte, uint32) {
	if !s.compress.Load() {
		return page, 0
	}
	c := s2.Encode(make([]byte, s2.MaxEncodedLen(len(page))), page)
	if len(c) > image.PageSize-minSaving {
		return page, 0
	}
	return c, blobS2
}

// decodeBlob turns blob into the page in buf (PageSize bytes).
func decodeBlob(blob []byte, flags uint32, buf []byte) error {
	if flags&blobS2 == 0 {
		if len(blob) != image.PageSize {
			return fmt.Errorf("raw blob of %d bytes", len(blob))
		}
		if &blob[0] != &buf[0] {
			copy(buf, blob)
		}
		return nil
	}
	if n, err := s2.DecodedLen(blob); err != nil || n != image.PageSize {
		return fmt.Errorf("compressed blob of %d bytes does not decode to a page (%v)", n, err)
	}
	out, err := s2.Decode(buf[:image.PageSize], blob)
	if err != nil {
		return fmt.Errorf("decompress: %w", err)
	}
	if len(out) != image.PageSize || &out[0] != &buf[0] {
		return fmt.Errorf("decompressed to %d bytes", len(out))
	}
	return nil
}
