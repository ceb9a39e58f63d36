package fs

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/ckptfs/ckptfs/dedup"
	"github.com/ckptfs/ckptfs/image"
)

// Repo is what the file system reads from; dedup.Repo (a *dedup.Store)
// implements it.
type Repo interface {
	image.PageSource
	// List returns the checkpoints, oldest first.
	List() ([]dedup.Summary, error)
	// Load returns the checkpoint id with its page tables.
	Load(id string) (*image.Checkpoint, error)
}

// RenderFunc builds the file tree of a checkpoint.
type RenderFunc func(c *image.Checkpoint, src image.PageSource) *image.Dir

// Fixed inode numbers of the top level. A checkpoint's nodes are numbered
// from seq<<32, seq being the checkpoint's number in this mount (from 1).
const (
	inoRoot   = 1
	inoLatest = 2
	inoByName = 3
	inoCores  = 4
)

// refreshEvery bounds how often lookups and readdir of the top level ask
// the repo for its list; notifications refresh at once.
const refreshEvery = 100 * time.Millisecond

// root is the top directory: one directory per checkpoint id, latest,
// by-name/.
type root struct {
	gofs.Inode
	repo   Repo
	render RenderFunc
	m      *mountInfo
	live   atomic.Bool // mounted: kernel notifications may be sent

	mu        sync.Mutex
	list      []dedup.Summary // oldest first
	byID      map[string]*dedup.Summary
	byName    map[string]string // name -> newest id with it
	seq       map[string]uint64
	nextSeq   uint64
	rendered  map[string]*rendered
	refreshed time.Time
	err       error // last List error
}

type rendered struct {
	once  sync.Once
	t     *tnode // <id>/
	cores *tnode // cores/<id>/ (cores.go)
	err   error
	used  time.Time // guarded by root.mu
}

// keepRendered bounds the rendered checkpoints kept in memory (their page
// tables are the bulk: 36 bytes per saved page). Dropping one is safe: the
// kernel's inodes keep their nodes, and a new render numbers the same nodes
// the same way, so go-fuse hands out the inodes it has.
var keepRendered = 16

func newRoot(repo Repo, render RenderFunc, logf func(string, ...any)) *root {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	return &root{
		repo:   repo,
		render: render,
		m: &mountInfo{
			owner: fuse.Owner{Uid: uint32(syscall.Getuid()), Gid: uint32(syscall.Getgid())},
			logf:  logf,
		},
		byID:     map[string]*dedup.Summary{},
		byName:   map[string]string{},
		seq:      map[string]uint64{},
		nextSeq:  1,
		rendered: map[string]*rendered{},
	}
}

var (
	_ gofs.NodeGetattrer = (*root)(nil)
	_ gofs.NodeLookuper  = (*root)(nil)
	_ gofs.NodeReaddirer = (*root)(nil)
	_ gofs.NodeStatfser  = (*root)(nil)
)

// change is what a refresh found different.
type change struct {
	added, removed []string
	latest         bool
	names          []string
	any            bool
}

// refresh re-reads the list of checkpoints. With force unset it does so
// only if the last refresh is older than refreshEvery.
func (r *root) refresh(force bool) change {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !force && time.Since(r.refreshed) < refreshEvery {
		return change{}
	}
	list, err := r.repo.List()
	r.refreshed = time.Now()
	r.err = err
	if err != nil {
		return change{}
	}
	sort.SliceStable(list, func(i, j int) bool { return list[i].Time.Before(list[j].Time) })
	var ch change
	oldLatest := r.latestLocked()
	oldNames := r.byName
	newByID := make(map[string]*dedup.Summary, len(list))
	newNames := map[string]string{}
	for i := range list {
		s := &list[i]
		newByID[s.ID] = s
		if s.Name != "" && dedup.CheckEntryName(s.Name) == nil { // an old store's odd name is not listed
			newNames[s.Name] = s.ID
		}
		if _, ok := r.byID[s.ID]; !ok {
			ch.added = append(ch.added, s.ID)
		}
		if _, ok := r.seq[s.ID]; !ok {
			r.seq[s.ID] = r.nextSeq
			r.nextSeq++
		}
	}
	for id := range r.byID {
		if _, ok := newByID[id]; !ok {
			ch.removed = append(ch.removed, id)
			delete(r.rendered, id)
			delete(r.seq, id)
		}
	}
	for n, id := range oldNames {
		if newNames[n] != id {
			ch.names = append(ch.names, n)
		}
	}
	for n := range newNames {
		if _, ok := oldNames[n]; !ok {
			ch.names = append(ch.names, n)
		}
	}
	r.list, r.byID, r.byName = list, newByID, newNames
	ch.latest = r.latestLocked() != oldLatest
	ch.any = ch.latest || len(ch.added)+len(ch.removed)+len(ch.names) > 0
	return ch
}

func (r *root) latestLocked() string {
	if len(r.list) == 0 {
		return ""
	}
	return r.list[len(r.list)-1].ID
}

func (r *root) latest() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.latestLocked()
}

// Notify refreshes the top level and tells the kernel what changed. It is
// safe to call from any goroutine but not from inside a FUSE request.
func (r *root) Notify() {
	ch := r.refresh(true)
	if !ch.any || !r.live.Load() {
		return
	}
	for _, id := range ch.removed {
		if c := r.GetChild(id); c != nil {
			r.NotifyDelete(id, c)
			r.RmChild(id)
		} else {
			r.NotifyEntry(id)
		}
	}
	for _, id := range ch.added {
		r.NotifyEntry(id) // drops a negative dentry, if any
	}
	if cn := r.GetChild(coresName); cn != nil {
		for _, id := range ch.removed {
			if c := cn.GetChild(id); c != nil {
				cn.NotifyDelete(id, c)
				cn.RmChild(id)
			} else {
				cn.NotifyEntry(id)
			}
		}
		for _, id := range ch.added {
			cn.NotifyEntry(id)
		}
		cn.NotifyContent(0, 0)
	}
	if ch.latest {
		r.NotifyEntry("latest")
	}
	if len(ch.names) > 0 {
		if bn := r.GetChild("by-name"); bn != nil {
			for _, n := range ch.names {
				bn.NotifyEntry(n)
			}
			bn.NotifyContent(0, 0)
		}
	}
	r.NotifyContent(0, 0) // directory attributes and listing
}

// checkpoint returns the rendered tree of id, loading it on first use.
func (r *root) checkpoint(id string) (*tnode, error) {
	rd, err := r.renderedOf(id)
	if rd == nil {
		return nil, err
	}
	return rd.t, nil
}

// renderedOf returns the rendered checkpoint id (nil, nil if there is
// none), loading it on first use.
func (r *root) renderedOf(id string) (*rendered, error) {
	r.mu.Lock()
	s, ok := r.byID[id]
	if !ok {
		r.mu.Unlock()
		return nil, nil
	}
	rd := r.rendered[id]
	if rd == nil {
		rd = &rendered{used: time.Now()}
		r.rendered[id] = rd
		r.evictLocked()
	}
	rd.used = time.Now()
	seq := r.seq[id]
	mtime := s.Time
	r.mu.Unlock()
	rd.once.Do(func() {
		c, err := r.repo.Load(id)
		if err != nil {
			rd.err = fmt.Errorf("load checkpoint %s: %w", id, err)
			return
		}
		if c.ID != id {
			rd.err = fmt.Errorf("load checkpoint %s: got %s", id, c.ID)
			return
		}
		d := r.render(c, r.repo)
		cores := splitCores(id, d)
		rd.t = buildTree(d, seq<<32, mtime)
		rd.cores = buildTree(cores, coresIno(seq), mtime)
	})
	if rd.err != nil {
		return nil, rd.err
	}
	return rd, nil
}

// evictLocked drops the least recently used renders beyond keepRendered.
func (r *root) evictLocked() {
	for len(r.rendered) > keepRendered {
		var oldest string
		for id, rd := range r.rendered {
			if oldest == "" || rd.used.Before(r.rendered[oldest].used) {
				oldest = id
			}
		}
		delete(r.rendered, oldest)
	}
}

func (r *root) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	r.refresh(false)
	out.SetTimeout(topTimeout)
	r.fillAttr(&out.Attr)
	return 0
}

func (r *root) fillAttr(a *fuse.Attr) {
	a.Ino = inoRoot
	a.Mode = modeDir
	a.Nlink = 3
	a.Owner = r.m.owner
	r.mu.Lock()
	if n := len(r.list); n > 0 {
		setTimes(a, r.list[n-1].Time)
	}
	r.mu.Unlock()
}

func (r *root) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	out.Bsize = 4096
	out.Frsize = 4096
	out.NameLen = 255
	return 0
}

func (r *root) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	switch name {
	case "latest":
		if r.latest() == "" {
			if r.refresh(false); r.latest() == "" {
				return nil, syscall.ENOENT
			}
		}
		l := &latestNode{r: r}
		l.fillAttr(&out.Attr)
		out.SetEntryTimeout(topTimeout)
		out.SetAttrTimeout(topTimeout)
		return r.NewInode(ctx, l, gofs.StableAttr{Mode: syscall.S_IFLNK, Ino: inoLatest}), 0
	case "by-name":
		b := &byNameNode{r: r}
		b.fillAttr(&out.Attr)
		out.SetEntryTimeout(stableTimeout)
		out.SetAttrTimeout(topTimeout)
		return r.NewInode(ctx, b, gofs.StableAttr{Mode: syscall.S_IFDIR, Ino: inoByName}), 0
	case coresName:
		c := &coresNode{r: r}
		c.fillAttr(&out.Attr)
		out.SetEntryTimeout(stableTimeout)
		out.SetAttrTimeout(topTimeout)
		return r.NewInode(ctx, c, gofs.StableAttr{Mode: syscall.S_IFDIR, Ino: inoCores}), 0
	}
	t, err := r.checkpoint(name)
	if t == nil && err == nil {
		r.refresh(false)
		t, err = r.checkpoint(name)
	}
	if err != nil {
		r.m.logf("%v", err)
		return nil, syscall.EIO
	}
	if t == nil {
		return nil, syscall.ENOENT
	}
	return newChild(ctx, r.EmbeddedInode(), t, r.m, out)
}

func (r *root) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	r.refresh(false)
	r.mu.Lock()
	defer r.mu.Unlock()
	list := make([]fuse.DirEntry, 0, len(r.list)+3)
	if len(r.list) > 0 {
		list = append(list, fuse.DirEntry{Name: "latest", Mode: syscall.S_IFLNK, Ino: inoLatest})
	}
	list = append(list, fuse.DirEntry{Name: "by-name", Mode: syscall.S_IFDIR, Ino: inoByName})
	list = append(list, fuse.DirEntry{Name: coresName, Mode: syscall.S_IFDIR, Ino: inoCores})
	for _, s := range r.list {
		list = append(list, fuse.DirEntry{Name: s.ID, Mode: syscall.S_IFDIR, Ino: r.seq[s.ID] << 32})
	}
	return gofs.NewListDirStream(list), 0
}

// latestNode is the `latest` symlink; its target follows the newest checkpoint.
type latestNode struct {
	gofs.Inode
	r *root
}

var (
	_ gofs.NodeGetattrer  = (*latestNode)(nil)
	_ gofs.NodeReadlinker = (*latestNode)(nil)
)

func (l *latestNode) fillAttr(a *fuse.Attr) {
	a.Ino = inoLatest
	a.Mode = modeLink
	a.Nlink = 1
	a.Owner = l.r.m.owner
	a.Size = uint64(len(l.r.latest()))
}

func (l *latestNode) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.SetTimeout(topTimeout)
	l.fillAttr(&out.Attr)
	return 0
}

func (l *latestNode) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	id := l.r.latest()
	if id == "" {
		return nil, syscall.ENOENT
	}
	return []byte(id), 0
}

// byNameNode is by-name/: name -> ../<id>.
type byNameNode struct {
	gofs.Inode
	r *root
}

var (
	_ gofs.NodeGetattrer = (*byNameNode)(nil)
	_ gofs.NodeLookuper  = (*byNameNode)(nil)
	_ gofs.NodeReaddirer = (*byNameNode)(nil)
)

func (b *byNameNode) fillAttr(a *fuse.Attr) {
	a.Ino = inoByName
	a.Mode = modeDir
	a.Nlink = 2
	a.Owner = b.r.m.owner
}

func (b *byNameNode) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.SetTimeout(topTimeout)
	b.fillAttr(&out.Attr)
	return 0
}

func (b *byNameNode) target(name string) string {
	b.r.mu.Lock()
	defer b.r.mu.Unlock()
	return b.r.byName[name]
}

func (b *byNameNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	id := b.target(name)
	if id == "" {
		b.r.refresh(false)
		if id = b.target(name); id == "" {
			return nil, syscall.ENOENT
		}
	}
	l := &nameLink{target: "../" + id, owner: b.r.m.owner}
	l.fillAttr(&out.Attr)
	out.SetEntryTimeout(topTimeout)
	out.SetAttrTimeout(topTimeout)
	return b.NewInode(ctx, l, gofs.StableAttr{Mode: syscall.S_IFLNK}), 0
}

func (b *byNameNode) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	b.r.refresh(false)
	b.r.mu.Lock()
	defer b.r.mu.Unlock()
	names := make([]string, 0, len(b.r.byName))
	for n := range b.r.byName {
		names = append(names, n)
	}
	sort.Strings(names)
	list := make([]fuse.DirEntry, len(names))
	for i, n := range names {
		list[i] = fuse.DirEntry{Name: n, Mode: syscall.S_IFLNK}
	}
	return gofs.NewListDirStream(list), 0
}

// nameLink is one by-name symlink; a renamed target gets a new inode.
type nameLink struct {
	gofs.Inode
	target string
	owner  fuse.Owner
}

var (
	_ gofs.NodeGetattrer  = (*nameLink)(nil)
	_ gofs.NodeReadlinker = (*nameLink)(nil)
)

func (l *nameLink) fillAttr(a *fuse.Attr) {
	a.Mode = modeLink
	a.Nlink = 1
	a.Owner = l.owner
	a.Size = uint64(len(l.target))
}

func (l *nameLink) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.SetTimeout(topTimeout)
	l.fillAttr(&out.Attr)
	return 0
}

func (l *nameLink) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	return []byte(l.target), 0
}
