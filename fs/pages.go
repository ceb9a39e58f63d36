package fs

import (
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/ckptfs/ckptfs/image"
	"github.com/ckptfs/ckptfs/internal/directio"
)

// pageBatcher is a page source that reads many pages in one call
// (dedup.Store.ReadPages, dedup.Client.ReadPages): a store reads runs of
// pages faster than one page at a time.
type pageBatcher interface {
	ReadPages(hashes []image.Hash, dst []byte) error
}

// directBatcher is a page source that can read a batch of pages it is
// asked for once straight from the disk (dedup.Store.ReadPagesDirect:
// O_DIRECT, every page checked against its hash as ReadPages does).
type directBatcher interface {
	ReadPagesDirect(hashes []image.Hash, dst []byte) error
}

// readPages serves a read of a vma's pages file: from the file's
// read-ahead (streams, below) when it is read in order, else with
// readPagesBatched into dest. ok is false when neither can serve it (an
// unaligned read, a source that cannot batch): the caller then reads
// with ReadAt.
func readPages(p *image.PagesFile, dest []byte, off int64) (res fuse.ReadResult, ok bool, err error) {
	if res, ok := streams.read(p, dest, off); ok {
		return res, true, nil
	}
	n, ok, err := readPagesBatched(p, dest, off)
	if !ok || err != nil {
		return nil, ok, err
	}
	return fuse.ReadResultData(dest[:n]), true, nil
}

// readPagesBatched serves a read of a vma's pages file whose offset and
// length are whole pages (the kernel's page cache reads, readahead) with
// one ReadPages call per run of saved pages; holes are zeros. ok is false
// when the read is not page aligned or the source cannot batch: the caller
// then reads with ReadAt.
func readPagesBatched(p *image.PagesFile, dest []byte, off int64) (n int, ok bool, err error) {
	src, batch := p.Src.(pageBatcher)
	if !batch || off%image.PageSize != 0 {
		return 0, false, nil
	}
	size := int64(p.VMA.Len())
	if off >= size {
		return 0, true, nil
	}
	dest = dest[:min(int64(len(dest)), size-off)]
	if len(dest)%image.PageSize != 0 {
		return 0, false, nil
	}
	if err := fillPages(p, dest, off, src.ReadPages); err != nil {
		return 0, true, err
	}
	return len(dest), true, nil
}

// fillPages fills dest with the bytes of p at off (both whole pages, within
// the file) with one read call per run of saved pages; holes are zeros.
func fillPages(p *image.PagesFile, dest []byte, off int64, read func([]image.Hash, []byte) error) error {
	pages := p.VMA.Pages
	first := uint32(off / image.PageSize)
	end := first + uint32(len(dest)/image.PageSize)
	i := sort.Search(len(pages), func(i int) bool { return pages[i].Index >= first })
	next := first // pages of dest before next are filled
	hashes := make([]image.Hash, 0, len(dest)/image.PageSize)
	for i < len(pages) && pages[i].Index < end {
		// A run of saved pages with consecutive indexes.
		start := pages[i].Index
		hashes = hashes[:0]
		for i < len(pages) && pages[i].Index < end && pages[i].Index == start+uint32(len(hashes)) {
			hashes = append(hashes, pages[i].Hash)
			i++
		}
		lo := int64(start-first) * image.PageSize
		hi := lo + int64(len(hashes))*image.PageSize
		clear(dest[int64(next-first)*image.PageSize : lo])
		if err := read(hashes, dest[lo:hi]); err != nil {
			return fmt.Errorf("vma %s pages %d-%d: %w", p.VMA.DirName(), start, start+uint32(len(hashes))-1, err)
		}
		next = start + uint32(len(hashes))
	}
	clear(dest[int64(next-first)*image.PageSize:])
	return nil
}

// Read-ahead of big pages files of a local store. The kernel reads a
// file of the mount through its page cache in requests of at most maxIO,
// a readahead window ahead of the reader; served one request at a time,
// each waited for its pack reads and its hashing in turn, and the disk
// idled while the daemon hashed and copied. Once a pages file has been
// asked for raChunk bytes in order, it is read instead in chunks of
// raChunk bytes, raAhead of them ahead of the latest request, each by a
// goroutine of its own (Store.ReadPagesDirect: chunks not in the page
// cache are read with O_DIRECT, straight from the disk into the chunk's
// buffer of huge pages, and every page is hash-checked): the disk has
// several large reads in flight, pages are hashed on both cores while
// the next chunks are read, and a request finds its bytes read and
// checked. A request is answered from the chunk buffers themselves
// (chunkResult: writev to the FUSE device, no copy into the request's
// buffer).
//
// A chunk whose fill failed (a damaged or missing page) is dropped, and
// requests in it are served as any other read (readPagesBatched) from
// then on, so that only a request covering the bad page fails (EIO) and
// the kernel reads the others.
const (
	raChunk   = 4 << 20 // bytes of a file one fill reads
	raAhead   = 6       // chunks filled ahead of the latest request (24 MiB)
	raStreams = 4       // files read ahead at once; the least recently read goes
	raBuffers = 16      // chunk buffers at most, in all (64 MiB)
	raMinSize = 8 << 20 // smaller pages files are read request by request
	raNear    = 8 << 20 // a request this near the last one's end is in order
	raIdle    = 30 * time.Second
)

// streams is the read-ahead of every mount of the process: its buffers
// are shared.
var streams = &readAhead{streams: map[*image.PagesFile]*stream{}}

// raReplies counts the requests answered from read-ahead chunks (for the
// tests).
var raReplies atomic.Int64

// readAhead holds the files being read ahead and the chunk buffers:
// huge pages (directio.HugeBuffer), kept for reuse. Once no read came for
// raIdle, the streams are dropped and the buffers freed.
type readAhead struct {
	mu      sync.Mutex
	streams map[*image.PagesFile]*stream
	tick    int64
	free    [][]byte    // chunk buffers to reuse
	inUse   int         // chunk buffers handed out
	last    time.Time   // of the last read
	idle    *time.Timer // runs idled; nil while no read came since
}

// stream is the read-ahead of one pages file.
type stream struct {
	ra   *readAhead
	p    *image.PagesFile
	read func([]image.Hash, []byte) error
	used int64 // ra.tick of the last read (under ra.mu)

	mu     sync.Mutex
	chunks map[int64]*chunk // by index (offset / raChunk)
	failed map[int64]bool   // chunks whose fill failed: read request by request
	next   int64            // where the last request ended
	run    int64            // where the run of requests near each other began
	seen   bool             // a request came
	gone   bool             // dropped from the readAhead (dropAll)
}

// chunk is raChunk bytes of a file (fewer at its end), read ahead.
type chunk struct {
	ra   *readAhead
	idx  int64
	buf  []byte        // raChunk bytes (ra.get): back to ra.put when refs drop to 0
	data []byte        // the file's bytes from idx*raChunk, in buf
	done chan struct{} // closed when filled
	err  error         // the fill's, set before done is closed
	// refs: one while in its stream's chunks, one while being filled,
	// one per reply being written from data.
	refs   atomic.Int32
	served int64 // bytes of data replied, under the stream's mu
}

func (c *chunk) release() {
	if c.refs.Add(-1) == 0 {
		c.ra.put(c.buf)
	}
}

// read serves a read of p at off from p's read-ahead; ok is false when it
// cannot (not a big file read in order, a page source that cannot batch,
// a chunk that failed): the caller reads it otherwise.
func (ra *readAhead) read(p *image.PagesFile, dest []byte, off int64) (fuse.ReadResult, bool) {
	size := int64(p.VMA.Len())
	if size < raMinSize || off%image.PageSize != 0 || off >= size || len(dest) == 0 {
		return nil, false
	}
	n := min(int64(len(dest)), size-off)
	if n%image.PageSize != 0 {
		return nil, false
	}
	s := ra.stream(p)
	if s == nil {
		return nil, false
	}
	first, last := off/raChunk, (off+n-1)/raChunk
	s.mu.Lock()
	// In order: near where the last request ended (the kernel sends a
	// readahead window's requests at once, and they arrive in any order),
	// in a run of such requests of raChunk bytes or more (a read of a
	// few pages is not read ahead), or in a chunk read ahead.
	// A late request (behind the latest by less than raNear) leaves
	// next where it is; one whose chunk is gone, behind the chunks read
	// ahead, is read on its own rather than its whole chunk again.
	near := s.seen && off >= s.next-raNear && off <= s.next+raNear
	if !near {
		s.run, s.next = off, off+n
	} else {
		s.next = max(s.next, off+n)
	}
	s.seen = true
	late := s.chunks[first] == nil && first < s.next/raChunk-1
	inOrder := near && !late && off+n-s.run >= raChunk || s.chunks[first] != nil
	for i := first; i <= last && inOrder; i++ {
		inOrder = !s.failed[i]
	}
	if !inOrder {
		s.mu.Unlock()
		return nil, false
	}
	need := make([]*chunk, 0, last-first+1)
	for i := first; i <= last; i++ {
		c := s.start(i, size)
		if c == nil {
			s.mu.Unlock()
			for _, c := range need {
				c.release()
			}
			return nil, false
		}
		c.refs.Add(1)
		need = append(need, c)
	}
	for i := last + 1; i <= last+raAhead && i*raChunk < size; i++ {
		s.start(i, size)
	}
	for i := range s.chunks {
		if i < first-raAhead {
			s.drop(i) // left behind: the reader went on without it
		}
	}
	s.mu.Unlock()

	bad := false
	for _, c := range need {
		<-c.done
		bad = bad || c.err != nil
	}
	if bad {
		s.mu.Lock()
		for _, c := range need {
			if c.err != nil {
				s.failed[c.idx] = true
				if s.chunks[c.idx] == c {
					s.drop(c.idx)
				}
			}
		}
		s.mu.Unlock()
		for _, c := range need {
			c.release()
		}
		return nil, false
	}
	raReplies.Add(1)
	res := &chunkResult{chunks: need, vecs: make([][]byte, 0, len(need))}
	s.mu.Lock()
	for _, c := range need {
		base := c.idx * raChunk
		lo, hi := max(off, base)-base, min(off+n, base+int64(len(c.data)))-base
		res.vecs = append(res.vecs, c.data[lo:hi])
		if c.served += hi - lo; c.served >= int64(len(c.data)) && s.chunks[c.idx] == c {
			s.drop(c.idx) // read whole: the page cache has it now
		}
	}
	s.mu.Unlock()
	return res, true
}

// stream returns p's stream, made if need be (the least recently used
// one goes if there are raStreams already); nil if p's source is not a
// local store (directBatcher): a remote store fetches what it is asked
// for, and it is not read ahead.
func (ra *readAhead) stream(p *image.PagesFile) *stream {
	ra.mu.Lock()
	ra.tick++
	ra.last = time.Now()
	if ra.idle == nil {
		ra.idle = time.AfterFunc(raIdle, ra.idled)
	}
	s := ra.streams[p]
	if s != nil {
		s.used = ra.tick
		ra.mu.Unlock()
		return s
	}
	src, ok := p.Src.(directBatcher)
	if !ok {
		ra.mu.Unlock()
		return nil
	}
	var old *stream
	if len(ra.streams) >= raStreams {
		for _, o := range ra.streams {
			if old == nil || o.used < old.used {
				old = o
			}
		}
		delete(ra.streams, old.p)
	}
	s = &stream{ra: ra, p: p, read: src.ReadPagesDirect, used: ra.tick, chunks: map[int64]*chunk{}, failed: map[int64]bool{}}
	ra.streams[p] = s
	ra.mu.Unlock()
	if old != nil {
		old.dropAll()
	}
	return s
}

// dropAll drops every chunk of the stream, which is out of its
// readAhead: it starts no chunk from now on.
func (s *stream) dropAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gone = true
	for i := range s.chunks {
		s.drop(i)
	}
}

// start returns chunk i of the stream's file, whose fill it starts if it
// has none; nil if no buffer is free (the caller holds s.mu).
func (s *stream) start(i, size int64) *chunk {
	if c := s.chunks[i]; c != nil {
		return c
	}
	if s.gone {
		return nil
	}
	buf := s.ra.get()
	if buf == nil {
		return nil
	}
	c := &chunk{ra: s.ra, idx: i, buf: buf, data: buf[:min(raChunk, size-i*raChunk)], done: make(chan struct{})}
	c.refs.Store(2)
	s.chunks[i] = c
	go func() {
		c.err = fillPages(s.p, c.data, i*raChunk, s.read)
		close(c.done)
		c.release()
	}()
	return c
}

// drop takes chunk i out of the stream (the caller holds s.mu); its
// buffer is reused once no fill or reply uses it.
func (s *stream) drop(i int64) {
	if c := s.chunks[i]; c != nil {
		delete(s.chunks, i)
		c.release()
	}
}

// get returns a chunk buffer (raChunk bytes, page aligned), nil if
// raBuffers are in use (or the memory cannot be had).
func (ra *readAhead) get() []byte {
	ra.mu.Lock()
	defer ra.mu.Unlock()
	if ra.inUse >= raBuffers {
		return nil
	}
	var b []byte
	if n := len(ra.free); n > 0 {
		b = ra.free[n-1]
		ra.free = ra.free[:n-1]
	} else {
		var err error
		if b, err = directio.HugeBuffer(raChunk); err != nil {
			return nil
		}
	}
	ra.inUse++
	return b
}

// put takes back a chunk buffer.
func (ra *readAhead) put(b []byte) {
	ra.mu.Lock()
	defer ra.mu.Unlock()
	ra.inUse--
	ra.free = append(ra.free, b)
}

// idled runs raIdle after the first read since the read-ahead last
// idled: if no read came for raIdle, it forgets the streams (chunks read
// ahead that nobody asked for) and frees the buffers, else it looks
// again raIdle after the last read.
func (ra *readAhead) idled() {
	ra.mu.Lock()
	if wait := raIdle - time.Since(ra.last); wait > 0 {
		ra.idle.Reset(wait)
		ra.mu.Unlock()
		return
	}
	ra.idle = nil
	ra.mu.Unlock()
	ra.reset()
}

// reset forgets every stream and frees the buffers not in use (those in
// use are freed as their chunks are let go).
func (ra *readAhead) reset() {
	ra.mu.Lock()
	old := ra.streams
	ra.streams = map[*image.PagesFile]*stream{}
	ra.mu.Unlock()
	for _, s := range old {
		s.dropAll()
	}
	ra.mu.Lock()
	defer ra.mu.Unlock()
	for _, b := range ra.free {
		directio.FreeHuge(b)
	}
	ra.free = nil
}

// chunkResult is the reply to a read served from chunks: their bytes are
// written to the FUSE device as they lie (go-fuse writes a ReadResult
// with Slices by writev), and the chunks are let go once written (Done).
type chunkResult struct {
	vecs   [][]byte
	chunks []*chunk
	done   atomic.Bool
}

func (r *chunkResult) Size() int {
	n := 0
	for _, v := range r.vecs {
		n += len(v)
	}
	return n
}

// Bytes copies the reply into buf (go-fuse's way for a reader that cannot
// take slices).
func (r *chunkResult) Bytes(buf []byte) ([]byte, fuse.Status) {
	buf = buf[:0]
	for _, v := range r.vecs {
		buf = append(buf, v...)
	}
	return buf, fuse.OK
}

// Slices returns the reply's bytes, in the chunks.
func (r *chunkResult) Slices() ([][]byte, fuse.Status) { return r.vecs, fuse.OK }

// Done lets the chunks go.
func (r *chunkResult) Done() {
	if r.done.Swap(true) {
		return
	}
	for _, c := range r.chunks {
		c.release()
	}
}
