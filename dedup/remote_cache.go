package dedup

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/ckptfs/ckptfs/image"
)

// remoteCache is the local copy of a remote store's small immutable
// objects: the index object of every pack and the summaries, under
// $XDG_CACHE_HOME/ckptfs/<hash of the store's URL>/ (~/.cache without
// XDG_CACHE_HOME). Opening a store lists index/ and fetches only the
// index objects the cache lacks; ls lists manifests/ and fetches only new
// summaries. What the cache holds is checked like what the bucket sends
// (trailer hash, seals): a damaged cache file is fetched again. Nothing
// is lost by deleting it.
type remoteCache struct {
	dir string // "" if no cache could be made: everything is fetched
}

// RemoteCacheDir overrides the cache's root (tests).
var RemoteCacheDir = ""

func openRemoteCache(url string) (*remoteCache, error) {
	root := RemoteCacheDir
	if root == "" {
		root = os.Getenv("XDG_CACHE_HOME")
		if root == "" {
			home, err := os.UserHomeDir()
			if err != nil {
				return &remoteCache{}, nil
			}
			root = filepath.Join(home, ".cache")
		}
		root = filepath.Join(root, "ckptfs")
	}
	sum := sha256.Sum256([]byte(url))
	dir := filepath.Join(root, hex.EncodeToString(sum[:8]))
	for _, sub := range []string{"index", "summaries"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			return nil, fmt.Errorf("cache of %s: %w", url, err)
		}
	}
	os.WriteFile(filepath.Join(dir, "store"), []byte(url+"\n"), 0o600)
	return &remoteCache{dir: dir}, nil
}

// put writes a cache file atomically (best effort: the cache is optional).
func (c *remoteCache) put(sub, name string, data []byte) {
	if c.dir == "" {
		return
	}
	p := filepath.Join(c.dir, sub, name)
	tmp := p + ".tmp"
	if os.WriteFile(tmp, data, 0o600) == nil {
		os.Rename(tmp, p)
	}
}

func (c *remoteCache) get(sub, name string) ([]byte, bool) {
	if c.dir == "" {
		return nil, false
	}
	b, err := os.ReadFile(filepath.Join(c.dir, sub, name))
	return b, err == nil
}

func (c *remoteCache) keepIndex(id packID, b []byte) { c.put("index", id.String(), b) }
func (c *remoteCache) keepSummary(id string, b []byte) {
	c.put("summaries", hex.EncodeToString([]byte(id)), b)
}
func (c *remoteCache) summary(id string) ([]byte, bool) {
	return c.get("summaries", hex.EncodeToString([]byte(id)))
}
func (c *remoteCache) dropSummary(id string) {
	if c.dir != "" {
		os.Remove(filepath.Join(c.dir, "summaries", hex.EncodeToString([]byte(id))))
	}
}

// syncIndex lists the store's index objects, fetches those the cache
// lacks (or holds damaged), drops cached ones the store no longer has
// (gc), and returns every indexed pack.
func (c *remoteCache) syncIndex(ctx context.Context, obj Objects) (map[packID]*remotePack, error) {
	objs, err := obj.List(ctx, remoteIndex)
	if err != nil {
		return nil, fmt.Errorf("list index of %s: %w", obj, err)
	}
	packs := make(map[packID]*remotePack)
	live := make(map[string]bool)
	for _, o := range objs {
		name := strings.TrimPrefix(o.Name, remoteIndex)
		id, ok := parsePackName(name + packExt)
		if !ok {
			continue
		}
		live[id.String()] = true
		b, cached := c.get("index", id.String())
		var size int64
		var entries []packEntry
		if cached {
			size, entries, err = parseRemoteIndex(id, b)
		}
		if !cached || err != nil {
			if b, err = obj.Get(ctx, o.Name); err != nil {
				return nil, fmt.Errorf("index of pack %s: %w", id, err)
			}
			if size, entries, err = parseRemoteIndex(id, b); err != nil {
				return nil, err
			}
			c.keepIndex(id, b)
		}
		packs[id] = &remotePack{size: size, entries: entries}
	}
	if c.dir != "" {
		if ents, err := os.ReadDir(filepath.Join(c.dir, "index")); err == nil {
			for _, e := range ents {
				if !live[e.Name()] {
					os.Remove(filepath.Join(c.dir, "index", e.Name()))
				}
			}
		}
	}
	return packs, nil
}

// remotePack is what the index object of a pack says.
type remotePack struct {
	size    int64
	entries []packEntry
}

// parseRemoteIndex decodes and checks an index object: pack size, then
// the pack's trailer and footer (pack.go), entries inside the blob area.
func parseRemoteIndex(id packID, b []byte) (int64, []packEntry, error) {
	bad := func(why string) (int64, []packEntry, error) {
		return 0, nil, fmt.Errorf("index of pack %s: %w: %s", id, ErrCorrupt, why)
	}
	if len(b) < 8+packFooterSize {
		return bad("too short")
	}
	size := int64(binary.BigEndian.Uint64(b))
	tail := b[8:]
	foot := tail[len(tail)-packFooterSize:]
	if !bytes.Equal(foot[40:], packEndMagic) {
		return bad("no footer")
	}
	n := binary.BigEndian.Uint64(foot)
	tb := tail[:len(tail)-packFooterSize]
	if uint64(len(tb)) != n*packEntrySize {
		return bad(fmt.Sprintf("%d bytes of trailer for %d entries", len(tb), n))
	}
	if Sum(tb) != image.Hash(foot[8:40]) {
		return bad("trailer hash mismatch")
	}
	end := size - int64(len(tail))
	entries := make([]packEntry, n)
	for i := range entries {
		e := tb[i*packEntrySize:]
		l := packLoc{pack: id, offset: int64(binary.BigEndian.Uint64(e[32:])),
			length: binary.BigEndian.Uint32(e[40:]), flags: binary.BigEndian.Uint32(e[44:])}
		if l.offset < packHeaderSize || l.length == 0 || l.length > image.PageSize || l.offset+int64(l.length) > end || l.flags&^blobS2 != 0 {
			return bad(fmt.Sprintf("entry %d out of bounds", i))
		}
		entries[i] = packEntry{hash: image.Hash(e[:32]), loc: l}
	}
	return size, entries, nil
}
