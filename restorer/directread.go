package restorer

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/image"
	"github.com/ckptfs/ckptfs/internal/directio"
)

// Direct reads of a cold copy. A pages file not in the page cache (a copy
// of a checkpoint after a reboot or a drop_caches) is read with O_DIRECT
// by readers of fillMemory's own, into page-aligned chunk buffers,
// directInFlight reads in flight, rather than mapped and read ahead through the page cache: the
// page cache would cost a gibibyte of pages allocated, charged, added,
// mapped into the restorer by page faults and unmapped again for a file
// that is read once, and on this kind of VM the first touch of freed
// memory is dear. The pages are then checked and written from the buffer
// as before (chunk.write), so a copy read this way is verified exactly as
// a mapped one. A file mostly in the page cache already (cachestat), a
// small one, one on FUSE, or one whose file system refuses O_DIRECT is
// mapped as before; CKPTFS_NO_DIRECT_READ=1 maps every file.

// useDirect selects direct reads for cold pages files.
var useDirect = os.Getenv("CKPTFS_NO_DIRECT_READ") == ""

// earlyAhead is how much of a big pages file scanPages asks the kernel
// to read at once, while the restore loads and checks the pagemaps and
// creates the processes: the disk is the bound of a cold restore and
// would idle meanwhile.
const earlyAhead = 64 << 20

// readEarly asks the kernel to read the first earlyAhead bytes of the
// data ranges rs of f, if f is big enough to be read directly (whether
// it then is or is mapped, the pages are in the page cache by then).
func readEarly(f *os.File, rs [][2]int64) {
	var data int64
	for _, r := range rs {
		data += r[1] - r[0]
	}
	if data < directMin {
		return
	}
	left := int64(earlyAhead)
	for _, r := range rs {
		n := min(r[1]-r[0], left)
		unix.Fadvise(int(f.Fd()), r[0], n, unix.FADV_WILLNEED)
		if left -= n; left == 0 {
			return
		}
	}
}

// directInFlight is how many direct reads fillMemory keeps in flight
// (each of chunkSize).
const directInFlight = 8

// directReads counts the direct reads made (for the tests).
var directReads atomic.Int64

// directAlways reads every big pages file directly, cached or not (for
// the tests, whose trees are in the page cache).
var directAlways = false

// directMin is the least data a pages file must hold to be read directly:
// below it the mapping's few faults cost less than another open.
const directMin = 4 << 20

// directFile is a pages file read with O_DIRECT.
type directFile struct {
	f    *os.File // the file as fillMemory opened it (buffered)
	fd   int      // the same file opened again with O_DIRECT
	path string
	// buffered is set once a direct read failed with EINVAL (an
	// alignment the file system wants that the buffers lack): the rest
	// is read through f.
	buffered atomic.Bool
}

// openDirect returns f as a directFile if its data ranges rs should be
// read directly (see above), else nil: the caller maps f. The returned
// directFile owns f.
func openDirect(f *os.File, path string, rs [][2]int64) *directFile {
	if !useDirect {
		return nil
	}
	var data int64
	for _, r := range rs {
		data += r[1] - r[0]
	}
	if data < directMin {
		return nil
	}
	var sfs unix.Statfs_t
	if unix.Fstatfs(int(f.Fd()), &sfs) != nil || sfs.Type == unix.FUSE_SUPER_MAGIC {
		return nil
	}
	if !directAlways && cachedBytes(f, rs) >= data/2 {
		return nil // warm: the mapping copies from the page cache
	}
	fd, err := unix.Open("/proc/self/fd/"+strconv.Itoa(int(f.Fd())), unix.O_RDONLY|unix.O_DIRECT|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
	if err != nil {
		return nil
	}
	var a, b unix.Stat_t
	if unix.Fstat(int(f.Fd()), &a) != nil || unix.Fstat(fd, &b) != nil || a.Dev != b.Dev || a.Ino != b.Ino {
		unix.Close(fd)
		return nil
	}
	return &directFile{f: f, fd: fd, path: path}
}

// cachedBytes says how many bytes of the ranges rs of f are in the page
// cache (cachestat; 0 if the kernel cannot tell: then f is read directly,
// which is right for a cold file and costs a warm one a read from disk).
func cachedBytes(f *os.File, rs [][2]int64) int64 {
	var n int64
	for _, r := range rs {
		c, err := directio.CachedBytes(int(f.Fd()), r[0], r[1]-r[0])
		if err != nil {
			return 0
		}
		n += c
	}
	return n
}

// readAt fills buf with the bytes at off of the file: from the page
// cache if they are all there (read ahead while the restore started:
// scanPages), else directly.
func (d *directFile) readAt(buf []byte, off int64) error {
	if !d.buffered.Load() && (directAlways || cachedBytes(d.f, [][2]int64{{off, off + int64(len(buf))}}) < int64(len(buf))) {
		err := preadFull(d.fd, buf, off)
		directReads.Add(1)
		if !errors.Is(err, unix.EINVAL) {
			if err != nil {
				return fmt.Errorf("checkpoint file %s: read at %d: %w", d.path, off, err)
			}
			return nil
		}
		d.buffered.Store(true)
	}
	if _, err := d.f.ReadAt(buf, off); err != nil {
		return fmt.Errorf("checkpoint file %s: read at %d: %w", d.path, off, err)
	}
	return nil
}

// preadFull reads len(buf) bytes at off of fd.
func preadFull(fd int, buf []byte, off int64) error {
	err := directio.ReadFull(fd, [][]byte{buf}, off)
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w (%v)", errShortPages, err)
	}
	return err
}

// errShortPages says a pages file ended inside a data range it had when
// it was scanned.
var errShortPages = errors.New("pages file shorter than its data ranges")

func (d *directFile) close() {
	unix.Close(d.fd)
	d.f.Close()
}

// queueDirectChunks queues the ranges rs of vma v as chunks the workers
// read from d into pool buffers; checked says whether each is checked
// against checkRefs (v's pagemap entries) before it is written. It
// returns false if the fill was stopped.
func queueDirectChunks(v *image.VMA, rs [][2]int64, d *directFile, checked bool, checkRefs []image.PageRef, uffd bool, pool chan []byte, bufs *chunkBufs, work chan<- chunk, stop <-chan struct{}) bool {
	for _, r := range rs {
		for off := r[0]; off < r[1]; {
			n := min(r[1]-off, chunkSize)
			c := chunk{addr: v.Start + uint64(off), uffd: uffd, direct: true, file: d, off: off}
			if checked {
				c.check = &chunkCheck{v: v, off: off, refs: refsIn(checkRefs, off, off+n)}
			}
			var ok bool
			if c.buf, ok = bufs.take(pool, stop, n); !ok {
				return false
			}
			work <- c
			off += n
		}
	}
	return true
}

// chunkBufs allocates fillMemory's chunk buffers as anonymous mappings:
// page aligned, as O_DIRECT wants them, and given back at once when the
// fill is done.
type chunkBufs struct {
	mu   sync.Mutex
	maps [][]byte
}

func (b *chunkBufs) alloc() []byte {
	m, err := unix.Mmap(-1, 0, chunkSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return make([]byte, chunkSize) // a direct read of it may fall back (readAt)
	}
	b.mu.Lock()
	b.maps = append(b.maps, m)
	b.mu.Unlock()
	return m
}

// take waits for a buffer of the pool (nil there: one to allocate) and
// returns it cut to n bytes; false if the fill was stopped first.
func (b *chunkBufs) take(pool chan []byte, stop <-chan struct{}, n int64) ([]byte, bool) {
	var buf []byte
	select {
	case buf = <-pool:
	case <-stop:
		return nil, false
	}
	if buf == nil {
		buf = b.alloc()
	}
	return buf[:n], true
}

// free unmaps the buffers; none may be used any more.
func (b *chunkBufs) free() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, m := range b.maps {
		unix.Munmap(m)
	}
	b.maps = nil
}
