package dedup

import (
	"fmt"
	"strings"

	"github.com/ckptfs/ckptfs/image"
)

// GC deletes the packs of a remote store that hold no page a checkpoint
// uses, packs no index names (uploads of a dump that died), and the
// tables and summaries of checkpoints without a manifest. It runs under
// an exclusive lock: it refuses (ErrBusy) while another process holds a
// lock that is not stale. Packs with some live pages are kept whole (a
// remote gc does not rewrite packs).
func (r *RemoteStore) GC() (GCResult, error) {
	var res GCResult
	if err := r.lock.release(); err != nil {
		return res, fmt.Errorf("gc: %w", err)
	}
	excl, err := takeLock(r.ctx, r.obj, true)
	if err != nil {
		if l, lerr := takeLock(r.ctx, r.obj, false); lerr == nil {
			r.lock = l
		}
		return res, fmt.Errorf("gc: %w", err)
	}
	defer func() {
		excl.release()
		if l, lerr := takeLock(r.ctx, r.obj, false); lerr == nil {
			r.lock = l
		}
	}()

	ids, err := r.manifestIDs()
	if err != nil {
		return res, fmt.Errorf("gc: %w", err)
	}
	live := make(map[image.Hash]bool)
	committed := make(map[string]bool)
	for _, id := range ids {
		c, _, err := r.load(id)
		if err != nil {
			return res, fmt.Errorf("gc: %w (nothing deleted)", err)
		}
		committed[id] = true
		for _, h := range checkpointHashes(c) {
			live[h] = true
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.flushLocked(); err != nil {
		return res, fmt.Errorf("gc: %w", err)
	}
	r.loaded = false
	if err := r.loadIndexLocked(); err != nil {
		return res, fmt.Errorf("gc: %w", err)
	}
	for _, n := range r.sizes {
		res.DiskBefore += n
	}
	objs, err := r.obj.List(r.ctx, remotePacks)
	if err != nil {
		return res, fmt.Errorf("gc: %w", err)
	}
	for _, o := range objs {
		id, ok := parsePackName(strings.TrimPrefix(o.Name, remotePacks) + packExt)
		if !ok {
			continue
		}
		p := r.packs[id]
		keep := false
		if p != nil {
			for _, e := range p.entries {
				if live[e.hash] && r.index[e.hash].pack == id {
					keep = true
					break
				}
			}
		}
		if keep {
			continue
		}
		if p != nil {
			for _, e := range p.entries {
				if r.index[e.hash].pack == id {
					res.Pages++
					res.Bytes += int64(e.loc.length)
					delete(r.index, e.hash)
				}
			}
			// The index first: no reader locates a page in a pack gone.
			if err := r.obj.Delete(r.ctx, remoteIndex+id.String()); err != nil {
				return res, fmt.Errorf("gc: %w", err)
			}
			delete(r.packs, id)
			delete(r.sizes, id)
		}
		if err := r.obj.Delete(r.ctx, o.Name); err != nil {
			return res, fmt.Errorf("gc: %w", err)
		}
		res.PacksDropped++
	}
	for _, prefix := range []string{remoteTables, remoteSummaries} {
		objs, err := r.obj.List(r.ctx, prefix)
		if err != nil {
			return res, fmt.Errorf("gc: %w", err)
		}
		for _, o := range objs {
			if !committed[strings.TrimPrefix(o.Name, prefix)] {
				if err := r.obj.Delete(r.ctx, o.Name); err != nil {
					return res, fmt.Errorf("gc: %w", err)
				}
				if prefix == remoteTables {
					res.Tables++
				}
			}
		}
	}
	for _, n := range r.sizes {
		res.DiskAfter += n
	}
	return res, nil
}

// Verify reads every indexed pack whole, checks its trailer against its
// index object and every page against its hash, then loads every
// checkpoint and checks that every page it references is indexed.
func (r *RemoteStore) Verify() ([]string, error) {
	r.mu.Lock()
	if err := r.flushLocked(); err != nil {
		r.mu.Unlock()
		return nil, err
	}
	r.loaded = false
	err := r.loadIndexLocked()
	packs := r.packs
	index := r.index
	r.mu.Unlock()
	if err != nil {
		return nil, err
	}
	var problems []string
	buf := make([]byte, image.PageSize)
	for id, p := range packs {
		data, err := r.obj.Get(r.ctx, remotePacks+id.String())
		if err != nil {
			problems = append(problems, fmt.Sprintf("pack %s: %v", id, err))
			continue
		}
		if int64(len(data)) != p.size {
			problems = append(problems, fmt.Sprintf("pack %s: %d bytes, its index says %d", id, len(data), p.size))
			continue
		}
		tail := encodeTrailer(p.entries)
		if len(data) < len(tail) || string(data[len(data)-len(tail):]) != string(tail) {
			problems = append(problems, fmt.Sprintf("pack %s: trailer differs from its index", id))
		}
		for _, e := range p.entries {
			raw := data[e.loc.offset : e.loc.offset+int64(e.loc.length)]
			if err := decodeBlob(raw, e.loc.flags, buf); err != nil || Sum(buf) != e.hash {
				problems = append(problems, fmt.Sprintf("page %s in pack %s: %v", e.hash, id, ErrPageCorrupt))
			}
		}
	}
	ids, err := r.manifestIDs()
	if err != nil {
		return nil, err
	}
	for _, id := range ids {
		c, _, err := r.load(id)
		if err != nil {
			problems = append(problems, err.Error())
			continue
		}
		for _, t := range c.Tasks {
			for _, v := range t.VMAs {
				for _, ref := range v.Pages {
					if _, ok := index[ref.Hash]; !ok {
						problems = append(problems, fmt.Sprintf("checkpoint %s task %d vma %s: page %s %v",
							id, t.PID, v.DirName(), ref.Hash, ErrPageMissing))
					}
				}
			}
		}
	}
	return problems, nil
}
