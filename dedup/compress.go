package dedup

import (
	"fmt"

	"github.com/ckptfs/ckptfs/image"
	"github.com/klauspost/compress/zstd"
)

// Pages may be stored compressed with zstd (blobZstd), one page a blob, so
// that a page still reads with one pread. The hash is of the page, taken
// before compressing: dedup does not depend on the compression. Whether
// PutPages compresses is the store's choice (Store.SetCompression); every
// store reads both. Off by default: BenchmarkCompress (bench_pack_test.go)
// measured it, see the figures there.

var (
	zstdEnc, _ = zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest),
		zstd.WithEncoderConcurrency(1), zstd.WithZeroFrames(true), zstd.WithEncoderCRC(false))
	zstdDec, _ = zstd.NewReader(nil, zstd.WithDecoderConcurrency(0), zstd.WithDecoderMaxMemory(1<<20))
)

// minSaving is the least a compressed page must save to be kept so.
const minSaving = image.PageSize / 8

// SetCompression makes PutPages store pages compressed (on) or raw.
func (s *Store) SetCompression(on bool) { s.compress.Store(on) }

// encodeBlob returns the stored form of page and its flags.
func (s *Store) encodeBlob(page []byte) ([]byte, uint32) {
	if !s.compress.Load() {
		return page, 0
	}
	c := zstdEnc.EncodeAll(page, make([]byte, 0, image.PageSize))
	if len(c) > image.PageSize-minSaving {
		return page, 0
	}
	return c, blobZstd
}

// decodeBlob turns blob into the page in buf (PageSize bytes).
func decodeBlob(blob []byte, flags uint32, buf []byte) error {
	if flags&blobZstd == 0 {
		if len(blob) != image.PageSize {
			return fmt.Errorf("raw blob of %d bytes", len(blob))
		}
		if &blob[0] != &buf[0] {
			copy(buf, blob)
		}
		return nil
	}
	out, err := zstdDec.DecodeAll(blob, buf[:0])
	if err != nil {
		return fmt.Errorf("decompress: %w", err)
	}
	if len(out) != image.PageSize || &out[0] != &buf[0] {
		return fmt.Errorf("decompressed to %d bytes", len(out))
	}
	return nil
}
