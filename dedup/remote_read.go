package dedup

import (
	"container/list"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/ckptfs/ckptfs/image"
)

// Pages of a remote store are read in segments: the aligned
// remoteSegment bytes of a pack around the page asked for, fetched with
// one range GET and kept in a bounded in-memory cache (least recently
// used out). So a read of one page reads ahead the pages dumped after it
// (a vma lies in order in its packs), and a mount or restore fetches only
// the segments its reads touch.
const remoteSegment = 1 << 20

// remoteReadAhead is how many segments after one being read are fetched
// in the background, so that a reader going through a vma finds them
// there (a restore, a cp -a of the mount).
const remoteReadAhead = 2

// RemoteCacheBytes bounds the segment cache of a remote store opened
// after it is set (default 256 MiB).
var RemoteCacheBytes int64 = 256 << 20

type segKey struct {
	pack packID
	seg  int64
}

type segment struct {
	key  segKey
	data []byte
	done chan struct{} // closed when data or err is set
	err  error
	elem *list.Element
}

// segmentCache holds recently read segments of packs.
type segmentCache struct {
	mu    sync.Mutex
	limit int64
	bytes int64
	lru   *list.List // of *segment, most recent first
	segs  map[segKey]*segment
	Gets  atomic.Int64   // range GETs made (tests, figures)
	ahead sync.WaitGroup // read-ahead fetches in flight
}

func newSegmentCache(limit int64) *segmentCache {
	return &segmentCache{limit: max(limit, remoteSegment), lru: list.New(), segs: make(map[segKey]*segment)}
}

// get returns segment k of a pack, fetching it with fetch if it is not
// cached (one fetch however many readers want it at once).
func (c *segmentCache) get(k segKey, fetch func() ([]byte, error)) ([]byte, error) {
	c.mu.Lock()
	s := c.segs[k]
	if s != nil {
		if s.elem != nil {
			c.lru.MoveToFront(s.elem)
		}
		c.mu.Unlock()
		<-s.done
		return s.data, s.err
	}
	s = &segment{key: k, done: make(chan struct{})}
	c.segs[k] = s
	c.mu.Unlock()
	c.Gets.Add(1)
	s.data, s.err = fetch()
	close(s.done)
	c.mu.Lock()
	defer c.mu.Unlock()
	if s.err != nil {
		delete(c.segs, k)
		return nil, s.err
	}
	s.elem = c.lru.PushFront(s)
	c.bytes += int64(len(s.data))
	for c.bytes > c.limit && c.lru.Len() > 1 {
		old := c.lru.Remove(c.lru.Back()).(*segment)
		delete(c.segs, old.key)
		c.bytes -= int64(len(old.data))
	}
	return s.data, nil
}

// has says whether segment k is cached or being fetched.
func (c *segmentCache) has(k segKey) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.segs[k] != nil
}

// readAhead starts the fetch of the remoteReadAhead segments after seg
// of a pack of size bytes that are neither cached nor being fetched.
func (r *RemoteStore) readAhead(pack packID, seg, size int64) {
	for next := seg + 1; next <= seg+remoteReadAhead && size > 0; next++ {
		start := next * remoteSegment
		if start >= size {
			return
		}
		k := segKey{pack, next}
		if r.reads.has(k) {
			continue
		}
		n := min(int64(remoteSegment), size-start)
		r.reads.ahead.Add(1)
		go func() {
			defer r.reads.ahead.Done()
			r.reads.get(k, func() ([]byte, error) {
				return r.obj.GetRange(r.ctx, remotePacks+pack.String(), start, n)
			})
		}()
	}
}

// RangeGets returns the number of range GETs the store made for pages.
func (r *RemoteStore) RangeGets() int64 { return r.reads.Gets.Load() }

// ReadPage fills buf with page h and checks its hash.
func (r *RemoteStore) ReadPage(h image.Hash, buf []byte) error {
	if len(buf) < image.PageSize {
		return fmt.Errorf("read page %s: buffer of %d bytes", h, len(buf))
	}
	buf = buf[:image.PageSize]
	r.mu.Lock()
	if err := r.loadIndexLocked(); err != nil {
		r.mu.Unlock()
		return err
	}
	loc, ok := r.index[h]
	size := r.sizes[loc.pack]
	var pending []byte
	if ok && r.open != nil && loc.pack == r.open.id {
		pending = r.open.buf[loc.offset : loc.offset+int64(loc.length)]
	} else if b, uploading := r.up.blob(loc); ok && uploading {
		pending = b
	}
	raw := make([]byte, 0, loc.length)
	raw = append(raw, pending...)
	r.mu.Unlock()
	if !ok {
		return fmt.Errorf("page %s: %w", h, ErrPageMissing)
	}
	if pending == nil {
		var err error
		if raw, err = r.readBlob(loc, size); err != nil {
			return fmt.Errorf("page %s: %w", h, err)
		}
	}
	if err := decodeBlob(raw, loc.flags, buf); err != nil {
		return fmt.Errorf("page %s: %w (%v)", h, ErrPageCorrupt, err)
	}
	if got := Sum(buf); got != h {
		return fmt.Errorf("page %s: %w (content hashes to %s)", h, ErrPageCorrupt, got)
	}
	return nil
}

// readBlob returns the bytes at loc of a pack of size bytes, from the
// segments that hold them.
func (r *RemoteStore) readBlob(loc packLoc, size int64) ([]byte, error) {
	if size > 0 && loc.offset+int64(loc.length) > size {
		return nil, fmt.Errorf("%w: blob beyond the end of pack %s", ErrPageCorrupt, loc.pack)
	}
	out := make([]byte, 0, loc.length)
	for off := loc.offset; off < loc.offset+int64(loc.length); {
		seg := off / remoteSegment
		start := seg * remoteSegment
		n := int64(remoteSegment)
		if size > 0 {
			n = min(n, size-start)
		}
		data, err := r.reads.get(segKey{loc.pack, seg}, func() ([]byte, error) {
			return r.obj.GetRange(r.ctx, remotePacks+loc.pack.String(), start, n)
		})
		if err != nil {
			return nil, err
		}
		r.readAhead(loc.pack, seg, size)
		end := min(loc.offset+int64(loc.length), start+int64(len(data)))
		if off-start >= int64(len(data)) {
			return nil, fmt.Errorf("%w: pack %s shorter than its index says", ErrPageCorrupt, loc.pack)
		}
		out = append(out, data[off-start:end-start]...)
		off = end
	}
	return out, nil
}

// ReadPages fills dst with the pages hashes name, each checked.
func (r *RemoteStore) ReadPages(hashes []image.Hash, dst []byte) error {
	if len(dst) != len(hashes)*image.PageSize {
		return fmt.Errorf("read pages: buffer of %d bytes for %d pages", len(dst), len(hashes))
	}
	for i, h := range hashes {
		if err := r.ReadPage(h, dst[i*image.PageSize:(i+1)*image.PageSize]); err != nil {
			return err
		}
	}
	return nil
}
