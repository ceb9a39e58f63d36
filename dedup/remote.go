package dedup

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/ckptfs/ckptfs/image"
)

// A remote store keeps a store's data as objects (Objects: S3), under
// the store's prefix:
//
//	ckptfs-store        marker: "ckptfs remote store 1\n"
//	packs/<id>          a pack, as in a local store (pack.go)
//	index/<id>          its index: pack size u64, then its trailer and footer
//	tables/<id>         the page-table values of checkpoint id: u32 length, value, …
//	summaries/<id>      the sealed summary (as s/<id>)
//	manifests/<id>      the sealed manifest (as m/<id>): the commit point
//	locks/<random>      a lock (remote_lock.go)
//
// Every object is written once, whole, under a name no other writer uses
// (random pack ids, checkpoint ids), so hosts writing at once never
// overwrite each other; a pack's index is written after the pack, a
// checkpoint's manifest after its tables and packs. The bucket is trusted
// no more than a local disk: manifests are sealed and checked, tables
// checked against the hashes the manifest records, pages against their
// hashes on every read. docs/store-format.md describes it.
const (
	remoteMarker     = "ckptfs-store"
	remoteMarkerText = "ckptfs remote store 1\n"
	remotePacks      = "packs/"
	remoteIndex      = "index/"
	remoteTables     = "tables/"
	remoteSummaries  = "summaries/"
	remoteManifests  = "manifests/"
)

// remotePackTarget is the size at which a remote pack is uploaded.
const remotePackTarget = 16 << 20

// RemoteStore is a store in object storage; it implements Repo.
type RemoteStore struct {
	obj   Objects
	ctx   context.Context
	cache *remoteCache
	lock  *remoteLock

	mu     sync.Mutex
	index  map[image.Hash]packLoc // every page of every indexed pack
	sizes  map[packID]int64       // the packs' sizes
	packs  map[packID]*remotePack // the indexed packs
	loaded bool
	open   *memPack
	up     *remoteUploader // packs being uploaded (remote_upload.go)

	reads *segmentCache

	// listed is the last List, kept for remoteListFresh: a mount asks
	// for the list on every lookup of its top level.
	listMu   sync.Mutex
	listed   []Summary
	listedAt time.Time
}

// remoteListFresh is how long a List answers from its last listing.
const remoteListFresh = 2 * time.Second

// forgetList makes the next List ask the bucket.
func (r *RemoteStore) forgetList() {
	r.listMu.Lock()
	r.listed = nil
	r.listMu.Unlock()
}

// memPack is a pack being assembled in memory.
type memPack struct {
	id      packID
	buf     []byte
	entries []packEntry
}

// OpenRemote opens the store held by obj, creating it if create and it
// does not exist (else an absent store is an error wrapping ErrNotStore).
// It takes a shared lock (remote_lock.go) held until Close.
func OpenRemote(ctx context.Context, obj Objects, create bool) (*RemoteStore, error) {
	m, err := obj.Get(ctx, remoteMarker)
	switch {
	case errors.Is(err, ErrObjectMissing) && create:
		if err := obj.Put(ctx, remoteMarker, []byte(remoteMarkerText)); err != nil {
			return nil, fmt.Errorf("create store %s: %w", obj, err)
		}
	case errors.Is(err, ErrObjectMissing):
		return nil, fmt.Errorf("%s is %w (no %s object)", obj, ErrNotStore, remoteMarker)
	case err != nil:
		return nil, fmt.Errorf("open store %s: %w", obj, err)
	case string(m) != remoteMarkerText:
		return nil, fmt.Errorf("open store %s: %w: marker %q (a newer ckptfs?)", obj, ErrCorrupt, m)
	}
	cache, err := openRemoteCache(obj.String())
	if err != nil {
		return nil, err
	}
	r := &RemoteStore{obj: obj, ctx: ctx, cache: cache, reads: newSegmentCache(RemoteCacheBytes), up: newRemoteUploader()}
	if r.lock, err = takeLock(ctx, obj, false); err != nil {
		return nil, err
	}
	return r, nil
}

// Objects returns the store's object service.
func (r *RemoteStore) Objects() Objects { return r.obj }

// Close uploads a pack still open (its pages are then stored, though no
// checkpoint may use them: gc drops such packs) and drops the lock.
func (r *RemoteStore) Close() error {
	r.mu.Lock()
	err := r.flushLocked()
	r.mu.Unlock()
	if lerr := r.lock.release(); err == nil {
		err = lerr
	}
	return err
}

// loadIndexLocked reads the index of every pack (from the local cache,
// fetching only those it lacks).
func (r *RemoteStore) loadIndexLocked() error {
	if r.loaded {
		return nil
	}
	packs, err := r.cache.syncIndex(r.ctx, r.obj)
	if err != nil {
		return err
	}
	r.index, r.sizes = make(map[image.Hash]packLoc), make(map[packID]int64)
	for id, p := range packs {
		r.sizes[id] = p.size
		for _, e := range p.entries {
			r.index[e.hash] = e.loc
		}
	}
	r.packs, r.loaded = packs, true
	return nil
}

// Missing reports which hashes are not stored.
func (r *RemoteStore) Missing(hashes []image.Hash) ([]bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.loadIndexLocked(); err != nil {
		return nil, err
	}
	miss := make([]bool, len(hashes))
	for i, h := range hashes {
		_, ok := r.index[h]
		miss[i] = !ok
	}
	return miss, nil
}

// PutPages appends the pages the store lacks to the open pack, uploading
// it when it is full.
func (r *RemoteStore) PutPages(hashes []image.Hash, pages [][]byte) (int64, error) {
	if len(hashes) != len(pages) {
		return 0, fmt.Errorf("put pages: %d hashes for %d pages", len(hashes), len(pages))
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.loadIndexLocked(); err != nil {
		return 0, err
	}
	var added int64
	for i, h := range hashes {
		p := pages[i]
		if len(p) != image.PageSize {
			return added, fmt.Errorf("put page %s: %d bytes, want %d", h, len(p), image.PageSize)
		}
		if IsZero(p) {
			return added, fmt.Errorf("put page %s: zero pages are not stored", h)
		}
		if _, ok := r.index[h]; ok {
			continue
		}
		if r.open == nil {
			r.open = &memPack{id: newPackID(), buf: append(make([]byte, 0, remotePackTarget+image.PageSize), packHeader()...)}
		}
		loc := packLoc{pack: r.open.id, offset: int64(len(r.open.buf)), length: image.PageSize}
		r.open.buf = append(r.open.buf, p...)
		r.open.entries = append(r.open.entries, packEntry{hash: h, loc: loc})
		r.index[h] = loc
		added += image.PageSize
		if len(r.open.buf) >= remotePackTarget {
			if err := r.startUploadLocked(); err != nil {
				return added, err
			}
		}
	}
	return added, nil
}

// flushLocked uploads the open pack and waits for every upload
// (remote_upload.go).
func (r *RemoteStore) flushLocked() error {
	if err := r.startUploadLocked(); err != nil {
		return err
	}
	return r.up.wait()
}

// Flush uploads the pages put so far (a pre-copy pass ends with it, so
// that the final pass, the tree frozen, sends only what is new).
func (r *RemoteStore) Flush() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.flushLocked()
}

// encodeRemoteIndex is the index object of a pack of size bytes whose
// trailer and footer are tail.
func encodeRemoteIndex(size int64, tail []byte) []byte {
	b := binary.BigEndian.AppendUint64(nil, uint64(size))
	return append(b, tail...)
}

// Commit uploads the open pack, the checkpoint's page tables, its summary
// and last its manifest.
func (r *RemoteStore) Commit(c *image.Checkpoint) error {
	if c.Time.IsZero() {
		c.Time = time.Now()
	}
	if c.ID == "" {
		// Hosts commit without seeing each other's ids (S3 has no
		// portable create-if-absent): 40 random bits, not 16.
		var r [3]byte
		rand.Read(r[:])
		c.ID = NewID(c.Time) + hex.EncodeToString(r[:])
	}
	if err := CheckEntryName(c.ID); err != nil {
		return fmt.Errorf("commit: checkpoint id: %w", err)
	}
	if c.Name != "" {
		if err := CheckEntryName(c.Name); err != nil {
			return fmt.Errorf("commit: checkpoint name: %w", err)
		}
	}
	if _, err := r.obj.Get(r.ctx, remoteManifests+c.ID); err == nil {
		return fmt.Errorf("commit %s: checkpoint exists", c.ID)
	} else if !errors.Is(err, ErrObjectMissing) {
		return fmt.Errorf("commit %s: %w", c.ID, err)
	}
	mb, chunks, err := encodeManifest(c)
	if err != nil {
		return fmt.Errorf("commit %s: encode manifest: %w", c.ID, err)
	}
	r.mu.Lock()
	err = r.flushLocked()
	r.mu.Unlock()
	if err != nil {
		return fmt.Errorf("commit %s: %w", c.ID, err)
	}
	var tb []byte
	seen := make(map[image.Hash]bool)
	for _, vmas := range chunks {
		for _, vchunks := range vmas {
			for _, ch := range vchunks {
				if h := Sum(ch); !seen[h] {
					seen[h] = true
					tb = binary.BigEndian.AppendUint32(tb, uint32(len(ch)))
					tb = append(tb, ch...)
				}
			}
		}
	}
	if err := r.obj.Put(r.ctx, remoteTables+c.ID, tb); err != nil {
		return fmt.Errorf("commit %s: page tables: %w", c.ID, err)
	}
	sum := Summary{ID: c.ID, Name: c.Name, Time: c.Time, RootPID: c.RootPID, Tasks: len(c.Tasks),
		MemoryBytes: c.MemoryBytes(), BytesAdded: c.Stats.BytesAdded}
	sb, err := sealedSummary(sum)
	if err != nil {
		return fmt.Errorf("commit %s: encode summary: %w", c.ID, err)
	}
	if err := r.obj.Put(r.ctx, remoteSummaries+c.ID, sb); err != nil {
		return fmt.Errorf("commit %s: summary: %w", c.ID, err)
	}
	if err := r.obj.Put(r.ctx, remoteManifests+c.ID, seal(kindManifest, manifestKey(c.ID), mb)); err != nil {
		return fmt.Errorf("commit %s: manifest: %w", c.ID, err)
	}
	r.cache.keepSummary(c.ID, sb)
	r.forgetList()
	return nil
}

// manifestIDs lists the committed checkpoints.
func (r *RemoteStore) manifestIDs() ([]string, error) {
	objs, err := r.obj.List(r.ctx, remoteManifests)
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, o := range objs {
		id := strings.TrimPrefix(o.Name, remoteManifests)
		if CheckEntryName(id) == nil {
			ids = append(ids, id)
		}
	}
	return ids, nil
}

// List returns the summaries, oldest first: one listing of manifests/,
// and a GET of each summary the local cache lacks; within
// remoteListFresh of the last listing, that one.
func (r *RemoteStore) List() ([]Summary, error) {
	r.listMu.Lock()
	defer r.listMu.Unlock()
	if r.listed != nil && time.Since(r.listedAt) < remoteListFresh {
		return append([]Summary(nil), r.listed...), nil
	}
	list, err := r.list()
	if err == nil {
		r.listed, r.listedAt = append([]Summary{}, list...), time.Now()
	}
	return list, err
}

func (r *RemoteStore) list() ([]Summary, error) {
	ids, err := r.manifestIDs()
	if err != nil {
		return nil, err
	}
	var out []Summary
	for _, id := range ids {
		v, ok := r.cache.summary(id)
		if !ok {
			if v, err = r.obj.Get(r.ctx, remoteSummaries+id); err != nil {
				return nil, fmt.Errorf("summary of %s: %w", id, err)
			}
		}
		s, err := readSummary(summaryKey(id), v)
		if err != nil {
			return nil, fmt.Errorf("summary of %s: %w: %v", id, ErrCorrupt, err)
		}
		if s.ID != id {
			return nil, fmt.Errorf("summary of %s: %w: it names %q", id, ErrCorrupt, s.ID)
		}
		if !ok {
			r.cache.keepSummary(id, v)
		}
		out = append(out, s)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Time.Before(out[j].Time) })
	return out, nil
}

// resolve finds the checkpoint id, unique id prefix or name ref names:
// in the last listing, or if it is not there (another host's new
// checkpoint) in a fresh one.
func (r *RemoteStore) resolve(ref string) (string, error) {
	for try := 0; ; try++ {
		list, err := r.List()
		if err != nil {
			return "", err
		}
		id, err := resolveIn(list, ref)
		if !errors.Is(err, errNoCheckpoint) || try == 1 {
			return id, err
		}
		r.forgetList()
	}
}

var errNoCheckpoint = errors.New("not found")

func resolveIn(list []Summary, ref string) (string, error) {
	var byPrefix []string
	name := ""
	for _, s := range list {
		if s.ID == ref {
			return s.ID, nil
		}
		if strings.HasPrefix(s.ID, ref) {
			byPrefix = append(byPrefix, s.ID)
		}
		if s.Name == ref {
			name = s.ID // newest of that name: the list is oldest first
		}
	}
	switch {
	case len(byPrefix) == 1:
		return byPrefix[0], nil
	case len(byPrefix) > 1:
		return "", fmt.Errorf("checkpoint %q: ambiguous prefix (%d checkpoints)", ref, len(byPrefix))
	case name != "":
		return name, nil
	}
	return "", fmt.Errorf("checkpoint %q: %w", ref, errNoCheckpoint)
}

// Load returns checkpoint ref with its page tables, checked as a local
// store checks them.
func (r *RemoteStore) Load(ref string) (*image.Checkpoint, error) {
	id, err := r.resolve(ref)
	if err != nil {
		return nil, err
	}
	c, _, err := r.load(id)
	return c, err
}

// load reads checkpoint id and returns it with the chunk hashes it uses.
func (r *RemoteStore) load(id string) (*image.Checkpoint, []image.Hash, error) {
	mv, err := r.obj.Get(r.ctx, remoteManifests+id)
	if err != nil {
		return nil, nil, fmt.Errorf("checkpoint %s: %w", id, err)
	}
	tv, err := r.obj.Get(r.ctx, remoteTables+id)
	if err != nil {
		return nil, nil, fmt.Errorf("checkpoint %s: page tables: %w", id, err)
	}
	values := make(map[image.Hash][]byte)
	for b := tv; len(b) > 0; {
		if len(b) < 4 || int(binary.BigEndian.Uint32(b)) > len(b)-4 {
			return nil, nil, fmt.Errorf("checkpoint %s: page tables: %w: cut short", id, ErrCorrupt)
		}
		n := binary.BigEndian.Uint32(b)
		v := b[4 : 4+n]
		values[Sum(v)] = v
		b = b[4+n:]
	}
	get := func(h image.Hash, f func([]byte) error) error {
		v, ok := values[h]
		if !ok {
			return errChunkMissing
		}
		return f(v)
	}
	c, used, err := decodeFormat3(id, mv, get)
	if err != nil {
		return nil, nil, fmt.Errorf("checkpoint %s: %w", id, err)
	}
	return c, used, nil
}

// decodeFormat3 decodes and checks the sealed manifest v of checkpoint id
// (format 3) and its page tables, read through get.
func decodeFormat3(id string, v []byte, get chunkGetter) (*image.Checkpoint, []image.Hash, error) {
	body, err := unseal(kindManifest, manifestKey(id), v)
	if err != nil {
		return nil, nil, fmt.Errorf("manifest: %w", err)
	}
	c, specs, format, err := decodeManifest(body)
	if err != nil {
		return nil, nil, fmt.Errorf("manifest: %w", err)
	}
	if format < 3 {
		return nil, nil, fmt.Errorf("manifest: %w: format %d in a remote store", ErrCorrupt, format)
	}
	if c.ID != id {
		return nil, nil, fmt.Errorf("manifest: %w: it names checkpoint %q", ErrCorrupt, c.ID)
	}
	for _, t := range c.Tasks {
		for _, v := range t.VMAs {
			v.Pages = nil
		}
	}
	used, err := readChunks(get, c, specs)
	if err != nil {
		return nil, nil, err
	}
	for ti, t := range c.Tasks {
		for vi, v := range t.VMAs {
			if len(v.Pages) != specs[ti][vi].pages {
				return nil, nil, fmt.Errorf("page table of task %d vma %s: %w: %d page references, the manifest records %d",
					t.PID, v.DirName(), ErrCorrupt, len(v.Pages), specs[ti][vi].pages)
			}
			if err := checkRefs(v); err != nil {
				return nil, nil, fmt.Errorf("page table of task %d vma %s: %w: %v", t.PID, v.DirName(), ErrCorrupt, err)
			}
		}
	}
	return c, used, nil
}

// Remove deletes checkpoints: manifest first (the checkpoint is gone),
// then its summary and tables.
func (r *RemoteStore) Remove(refs ...string) error {
	for _, ref := range refs {
		id, err := r.resolve(ref)
		if err != nil {
			return err
		}
		for _, name := range []string{remoteManifests, remoteSummaries, remoteTables} {
			if err := r.obj.Delete(r.ctx, name+id); err != nil {
				return fmt.Errorf("remove %s: %w", id, err)
			}
		}
		r.cache.dropSummary(id)
		r.forgetList()
	}
	return nil
}

// Stats returns the store's figures (DiskBytes: the packs' bytes).
func (r *RemoteStore) Stats() (StoreStats, error) {
	list, err := r.List()
	if err != nil {
		return StoreStats{}, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.loadIndexLocked(); err != nil {
		return StoreStats{}, err
	}
	st := StoreStats{Checkpoints: len(list), Pages: int64(len(r.index))}
	for _, s := range list {
		st.LogicalBytes += s.MemoryBytes
	}
	st.PageBytes = st.Pages * image.PageSize
	for _, n := range r.sizes {
		st.DiskBytes += n
	}
	if st.PageBytes > 0 {
		st.Ratio = float64(st.LogicalBytes) / float64(st.PageBytes)
	}
	return st, nil
}
