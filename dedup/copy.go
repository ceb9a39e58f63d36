package dedup

import (
	"errors"
	"fmt"

	"github.com/ckptfs/ckptfs/image"
)

// copyBatch is the most pages one read from the source and one put into
// the destination carry (16 MiB).
const copyBatch = 4096

// pageBatchReader is a Repo that reads many pages in one call (Store,
// Client, RemoteStore): copy uses it where it can.
type pageBatchReader interface {
	ReadPages(hashes []image.Hash, dst []byte) error
}

// CopyResult says what Copy did for one checkpoint.
type CopyResult struct {
	ID, Name string
	Skipped  bool  // the destination had the checkpoint already
	Pages    int64 // distinct pages the checkpoint references
	Sent     int64 // pages the destination lacked, so sent
	// BytesSent is the page bytes sent; BytesTotal those of every
	// distinct page of the checkpoint (what a copy without dedup sends).
	BytesSent, BytesTotal int64
}

// CopyProgress is called as pages are sent: done of total page bytes of
// the checkpoint being copied.
type CopyProgress func(id string, done, total int64)

// Copy copies the checkpoints ids (ids, unique prefixes or names) from
// src to dst: only the pages dst lacks are read from src and put into dst,
// then the checkpoint is committed in dst under the same id, name and time
// (its stats say what it added to dst). A checkpoint whose id dst already
// has is skipped. Every page read from src is checked against its hash
// (src's ReadPage does), and dst checks the manifest on its own Load: an
// untrusted source cannot slip a wrong page into dst.
func Copy(src, dst Repo, ids []string, progress CopyProgress) ([]CopyResult, error) {
	have, err := dst.List()
	if err != nil {
		return nil, fmt.Errorf("copy: list destination: %w", err)
	}
	inDst := make(map[string]bool, len(have))
	for _, s := range have {
		inDst[s.ID] = true
	}
	var out []CopyResult
	for _, id := range ids {
		c, err := src.Load(id)
		if err != nil {
			return out, fmt.Errorf("copy %s: %w", id, err)
		}
		res := CopyResult{ID: c.ID, Name: c.Name}
		if inDst[c.ID] {
			res.Skipped = true
			out = append(out, res)
			continue
		}
		if err := copyOne(src, dst, c, &res, progress); err != nil {
			return out, fmt.Errorf("copy %s: %w", c.ID, err)
		}
		inDst[c.ID] = true
		out = append(out, res)
	}
	return out, nil
}

// copyOne sends the pages of c that dst lacks and commits c in dst.
func copyOne(src, dst Repo, c *image.Checkpoint, res *CopyResult, progress CopyProgress) error {
	hashes := checkpointHashes(c)
	res.Pages = int64(len(hashes))
	res.BytesTotal = res.Pages * image.PageSize
	var want []image.Hash
	for start := 0; start < len(hashes); start += copyBatch {
		part := hashes[start:min(start+copyBatch, len(hashes))]
		miss, err := dst.Missing(part)
		if err != nil {
			return fmt.Errorf("destination: %w", err)
		}
		for i, m := range miss {
			if m {
				want = append(want, part[i])
			}
		}
	}
	total := int64(len(want)) * image.PageSize
	if progress != nil {
		progress(c.ID, 0, total)
	}
	var added int64
	buf := make([]byte, copyBatch*image.PageSize)
	for start := 0; start < len(want); start += copyBatch {
		part := want[start:min(start+copyBatch, len(want))]
		data := buf[:len(part)*image.PageSize]
		if err := readPages(src, part, data); err != nil {
			return fmt.Errorf("source: %w", err)
		}
		pages := make([][]byte, len(part))
		for i := range part {
			pages[i] = data[i*image.PageSize : (i+1)*image.PageSize]
		}
		n, err := dst.PutPages(part, pages)
		if err != nil {
			return fmt.Errorf("destination: %w", err)
		}
		added += n
		res.Sent += int64(len(part))
		if progress != nil {
			progress(c.ID, res.Sent*image.PageSize, total)
		}
	}
	res.BytesSent = res.Sent * image.PageSize
	cp := *c
	cp.Stats.PagesNew = added / image.PageSize
	cp.Stats.BytesAdded = added
	if err := dst.Commit(&cp); err != nil {
		return fmt.Errorf("destination: %w", err)
	}
	if cp.ID != c.ID {
		return fmt.Errorf("destination committed it as %s", cp.ID)
	}
	return nil
}

// readPages reads pages from r, many at a time where r can.
func readPages(r Repo, hashes []image.Hash, dst []byte) error {
	if b, ok := r.(pageBatchReader); ok {
		err := b.ReadPages(hashes, dst)
		if err == nil || !errors.Is(err, errNoBatchRead) {
			return err
		}
	}
	for i, h := range hashes {
		if err := r.ReadPage(h, dst[i*image.PageSize:(i+1)*image.PageSize]); err != nil {
			return err
		}
	}
	return nil
}

// errNoBatchRead says a peer cannot read pages in batches (an older mount).
var errNoBatchRead = errors.New("no batch read")

// checkpointHashes returns the distinct page hashes c references, in the
// order of first use (so pages of one vma stay together).
func checkpointHashes(c *image.Checkpoint) []image.Hash {
	seen := make(map[image.Hash]struct{})
	var hs []image.Hash
	for _, t := range c.Tasks {
		for _, v := range t.VMAs {
			for _, r := range v.Pages {
				if _, ok := seen[r.Hash]; !ok {
					seen[r.Hash] = struct{}{}
					hs = append(hs, r.Hash)
				}
			}
		}
	}
	return hs
}
