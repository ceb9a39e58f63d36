package fs

import (
	"context"
	"errors"
	"io"
	"sync"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/ckptfs/ckptfs/image"
)

// Cache lifetimes. Everything below a checkpoint id is immutable, so the
// kernel may keep entries and attributes for long; the top level changes
// when checkpoints are added or removed and is invalidated by notifications.
const (
	stableTimeout = time.Hour
	topTimeout    = time.Second
)

// Modes of the nodes: the tree is read-only.
const (
	modeDir  = syscall.S_IFDIR | 0o555
	modeFile = syscall.S_IFREG | 0o444
	modeLink = syscall.S_IFLNK | 0o777
)

// tnode is one node of a rendered checkpoint with its inode number.
type tnode struct {
	ino   uint64
	node  image.Node
	kids  []tentry          // directories only, in order
	index map[string]*tnode // directories with many entries
	mtime time.Time         // the checkpoint's time
	size  func() (int64, error)
}

type tentry struct {
	name string
	t    *tnode
}

// indexMin is the entry count from which a directory gets a name index.
const indexMin = 16

// buildTree numbers the nodes of a rendered checkpoint: the root gets base,
// every further node the next number in depth-first order.
func buildTree(d *image.Dir, base uint64, mtime time.Time) *tnode {
	next := base
	var walk func(n image.Node) *tnode
	walk = func(n image.Node) *tnode {
		t := &tnode{ino: next, node: n, mtime: mtime}
		next++
		switch n := n.(type) {
		case *image.Dir:
			t.kids = make([]tentry, 0, len(n.Entries))
			for _, e := range n.Entries {
				t.kids = append(t.kids, tentry{e.Name, walk(e.Node)})
			}
			if len(t.kids) >= indexMin {
				t.index = make(map[string]*tnode, len(t.kids))
				for _, e := range t.kids {
					t.index[e.name] = e.t
				}
			}
		case image.File:
			t.size = sync.OnceValues(n.Size)
		}
		return t
	}
	return walk(d)
}

func (t *tnode) lookup(name string) *tnode {
	if t.index != nil {
		return t.index[name]
	}
	for _, e := range t.kids {
		if e.name == name {
			return e.t
		}
	}
	return nil
}

func (t *tnode) mode() uint32 {
	switch t.node.(type) {
	case *image.Dir:
		return modeDir
	case *image.Symlink:
		return modeLink
	default:
		if image.Private(t.node) {
			return syscall.S_IFREG | 0o400 // memory or secrets: see image.Private
		}
		return modeFile
	}
}

// fillAttr fills a for t; uid/gid are the mounting user's.
func (t *tnode) fillAttr(a *fuse.Attr, owner fuse.Owner) syscall.Errno {
	a.Ino = t.ino
	a.Mode = t.mode()
	a.Owner = owner
	setTimes(a, t.mtime)
	switch n := t.node.(type) {
	case *image.Dir:
		a.Nlink = 2
	case *image.Symlink:
		a.Nlink = 1
		a.Size = uint64(len(n.Target))
	case image.File:
		a.Nlink = 1
		sz, err := t.size()
		if err != nil {
			return syscall.EIO
		}
		a.Size = uint64(sz)
		a.Blksize = 1 << 20
	}
	return 0
}

func setTimes(a *fuse.Attr, t time.Time) {
	if t.IsZero() {
		return
	}
	s, ns := uint64(t.Unix()), uint32(t.Nanosecond())
	a.Atime, a.Mtime, a.Ctime = s, s, s
	a.Atimensec, a.Mtimensec, a.Ctimensec = ns, ns, ns
}

// mountInfo is what every node of a mount shares.
type mountInfo struct {
	owner fuse.Owner           // uid, gid of every node: the mounting user
	logf  func(string, ...any) // errors the kernel only sees as EIO
}

// node is the FUSE inode of one node of a rendered checkpoint.
type node struct {
	gofs.Inode
	t *tnode
	m *mountInfo
}

var (
	_ gofs.NodeGetattrer      = (*node)(nil)
	_ gofs.NodeLookuper       = (*node)(nil)
	_ gofs.NodeReaddirer      = (*node)(nil)
	_ gofs.NodeOpendirHandler = (*node)(nil)
	_ gofs.NodeOpener         = (*node)(nil)
	_ gofs.NodeFlusher        = (*node)(nil)
	_ gofs.NodeReader         = (*node)(nil)
	_ gofs.NodeLseeker        = (*node)(nil)
	_ gofs.NodeReadlinker     = (*node)(nil)
)

func (n *node) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.SetTimeout(stableTimeout)
	return n.t.fillAttr(&out.Attr, n.m.owner)
}

// newChild makes the inode for t below parent; inode numbers are stable,
// so a repeated lookup finds the inode go-fuse already has.
func newChild(ctx context.Context, parent *gofs.Inode, t *tnode, m *mountInfo, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if errno := t.fillAttr(&out.Attr, m.owner); errno != 0 {
		return nil, errno
	}
	out.SetEntryTimeout(stableTimeout)
	out.SetAttrTimeout(stableTimeout)
	ch := &node{t: t, m: m}
	return parent.NewInode(ctx, ch, gofs.StableAttr{Mode: t.mode() & syscall.S_IFMT, Ino: t.ino}), 0
}

func (n *node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	c := n.t.lookup(name)
	if c == nil {
		return nil, syscall.ENOENT
	}
	return newChild(ctx, n.EmbeddedInode(), c, n.m, out)
}

func (n *node) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	if _, ok := n.t.node.(*image.Dir); !ok {
		return nil, syscall.ENOTDIR
	}
	return dirStream(n.t), 0
}

// OpendirHandle lets the kernel cache the listing: it never changes.
func (n *node) OpendirHandle(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	if _, ok := n.t.node.(*image.Dir); !ok {
		return nil, 0, syscall.ENOTDIR
	}
	// go-fuse's list stream is a complete directory handle (Readdirent,
	// Seekdir, Releasedir).
	return dirStream(n.t), fuse.FOPEN_CACHE_DIR | fuse.FOPEN_KEEP_CACHE, 0
}

func dirStream(t *tnode) gofs.DirStream {
	list := make([]fuse.DirEntry, len(t.kids))
	for i, e := range t.kids {
		list[i] = fuse.DirEntry{Name: e.name, Mode: e.t.mode(), Ino: e.t.ino}
	}
	return gofs.NewListDirStream(list)
}

// Open answers ENOSYS: the kernel then opens every file of the mount
// without asking (FUSE_NO_OPEN_SUPPORT), keeps its page cache across opens
// (the content of an inode never changes) and sends no RELEASE, so reading
// a small file costs one round trip instead of three or four. Writes are
// refused by the kernel: the mount is read-only.
func (n *node) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	if flags&syscall.O_ACCMODE != syscall.O_RDONLY || flags&syscall.O_TRUNC != 0 {
		return nil, 0, syscall.EROFS
	}
	return nil, 0, syscall.ENOSYS
}

// Flush answers ENOSYS too: the kernel stops sending FLUSH on close.
func (n *node) Flush(ctx context.Context, f gofs.FileHandle) syscall.Errno {
	return syscall.ENOSYS
}

// Read fills the kernel's buffer in place: no allocation per read.
func (n *node) Read(ctx context.Context, f gofs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	file, ok := n.t.node.(image.File)
	if !ok {
		return nil, syscall.EISDIR
	}
	if p, ok := file.(*image.PagesFile); ok {
		res, batched, err := readPages(p, dest, off) // pages.go
		if err != nil {
			n.m.logf("read at %d: %v", off, err)
			return nil, syscall.EIO
		}
		if batched {
			return res, 0
		}
	}
	k, err := file.ReadAt(dest, off)
	if err != nil && !errors.Is(err, io.EOF) {
		n.m.logf("read at %d: %v", off, err)
		return nil, syscall.EIO
	}
	return fuse.ReadResultData(dest[:k]), 0
}

// Lseek implements SEEK_DATA and SEEK_HOLE (the kernel handles the others).
func (n *node) Lseek(ctx context.Context, f gofs.FileHandle, off uint64, whence uint32) (uint64, syscall.Errno) {
	file, ok := n.t.node.(image.File)
	if !ok {
		return 0, syscall.EINVAL
	}
	size, err := n.t.size()
	if err != nil {
		return 0, syscall.EIO
	}
	if int64(off) >= size || int64(off) < 0 {
		return 0, syscall.ENXIO
	}
	sp, sparse := file.(image.SparseFile)
	switch whence {
	case unixSeekData:
		if !sparse {
			return off, 0
		}
		d, ok := sp.NextData(int64(off))
		if !ok || d >= size {
			return 0, syscall.ENXIO
		}
		return uint64(d), 0
	case unixSeekHole:
		if !sparse {
			return uint64(size), 0
		}
		h := sp.NextHole(int64(off))
		if h > size {
			h = size
		}
		return uint64(h), 0
	}
	return 0, syscall.EINVAL
}

const (
	unixSeekData = 3 // SEEK_DATA
	unixSeekHole = 4 // SEEK_HOLE
)

func (n *node) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	if l, ok := n.t.node.(*image.Symlink); ok {
		return []byte(l.Target), 0
	}
	return nil, syscall.EINVAL
}
