package dedup

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/ckptfs/ckptfs/image"
	"github.com/ckptfs/ckptfs/internal/testhold"
	badger "github.com/dgraph-io/badger/v4"
)

// tableChunk is the number of page references per page-table value of a
// format-2 manifest, tableChunk3 of format 3.
const (
	tableChunk  = 8192
	tableChunk3 = 256
)

// refSize is the encoded size of one PageRef: index u32 + hash.
const refSize = 4 + 32

func manifestKey(id string) []byte { return []byte("m/" + id) }
func summaryKey(id string) []byte  { return []byte("s/" + id) }
func tablePrefix(id string) []byte { return []byte("t/" + id + "/") }

func tableKey(id string, task, vma, chunk int) []byte {
	k := tablePrefix(id)
	k = binary.BigEndian.AppendUint32(k, uint32(task))
	k = binary.BigEndian.AppendUint32(k, uint32(vma))
	return binary.BigEndian.AppendUint32(k, uint32(chunk))
}

// parseTableKey splits a page-table key into id, task, vma, chunk.
func parseTableKey(k []byte) (id string, task, vma, chunk int, ok bool) {
	if !bytes.HasPrefix(k, []byte("t/")) || len(k) < 2+1+12 {
		return "", 0, 0, 0, false
	}
	rest := k[2:]
	n := len(rest) - 12
	if rest[n-1] != '/' {
		return "", 0, 0, 0, false
	}
	return string(rest[:n-1]), int(binary.BigEndian.Uint32(rest[n:])), int(binary.BigEndian.Uint32(rest[n+4:])),
		int(binary.BigEndian.Uint32(rest[n+8:])), true
}

func encodeRefs(refs []image.PageRef) []byte {
	b := make([]byte, 0, len(refs)*refSize)
	for _, r := range refs {
		b = binary.BigEndian.AppendUint32(b, r.Index)
		b = append(b, r.Hash[:]...)
	}
	return b
}

func decodeRefs(b []byte, dst []image.PageRef) ([]image.PageRef, error) {
	if len(b)%refSize != 0 {
		return dst, fmt.Errorf("page table of %d bytes", len(b))
	}
	for ; len(b) > 0; b = b[refSize:] {
		var r image.PageRef
		r.Index = binary.BigEndian.Uint32(b)
		copy(r.Hash[:], b[4:refSize])
		dst = append(dst, r)
	}
	return dst, nil
}

// NewID returns a checkpoint id for t: sortable by time, short, unique
// enough ("20261125-121314-3f2a").
func NewID(t time.Time) string {
	var r [2]byte
	rand.Read(r[:])
	return t.UTC().Format("20060102-150405") + "-" + hex.EncodeToString(r[:])
}

// Commit writes checkpoint c: it seals the open pack (its pages are then
// on disk and indexed), writes the page-table chunks the store lacks
// (checks those a dump stored already, VMA.Table, are whole), then
// summary and manifest in one transaction (the commit point), then syncs.
// The pages must already be stored. c.ID is assigned if empty; c.Time too if zero.
func (s *Store) Commit(c *image.Checkpoint) error {
	if c.Time.IsZero() {
		c.Time = time.Now()
	}
	auto := c.ID == ""
	if auto {
		c.ID = NewID(c.Time)
	}
	if err := CheckEntryName(c.ID); err != nil {
		return fmt.Errorf("commit: checkpoint id: %w", err)
	}
	if c.Name != "" {
		if err := CheckEntryName(c.Name); err != nil {
			return fmt.Errorf("commit: checkpoint name: %w", err)
		}
	}
	s.gcMu.RLock()
	defer s.gcMu.RUnlock()
	s.commitMu.Lock() // ids are checked and taken one commit at a time
	defer s.commitMu.Unlock()
	for try := 0; ; try++ {
		err := view(s.db, func(txn *badger.Txn) error {
			_, err := txn.Get(manifestKey(c.ID))
			return err
		})
		if errors.Is(err, badger.ErrKeyNotFound) {
			break
		}
		if err != nil {
			return fmt.Errorf("commit %s: %w", c.ID, err)
		}
		if !auto || try == 10 {
			return fmt.Errorf("commit %s: checkpoint exists", c.ID)
		}
		c.ID = NewID(c.Time) // same second: another random suffix
	}

	mb, chunks, err := encodeManifest(c)
	if err != nil {
		return fmt.Errorf("commit %s: encode manifest: %w", c.ID, err)
	}
	// The pages first: the open pack is sealed and indexed.
	if err := s.seal(); err != nil {
		return fmt.Errorf("commit %s: %w", c.ID, err)
	}
	if err := s.putChunks(chunks); err != nil {
		return fmt.Errorf("commit %s: page tables: %w", c.ID, err)
	}
	if err := s.checkStoredTables(c); err != nil { // tables.go
		return fmt.Errorf("commit %s: %w", c.ID, err)
	}
	testhold.At("commit-chunks")

	sum := Summary{ID: c.ID, Name: c.Name, Time: c.Time, RootPID: c.RootPID, Tasks: len(c.Tasks),
		MemoryBytes: c.MemoryBytes(), BytesAdded: c.Stats.BytesAdded}
	sb, err := sealedSummary(sum)
	if err != nil {
		return fmt.Errorf("commit %s: encode summary: %w", c.ID, err)
	}
	err = s.db.Update(func(txn *badger.Txn) error {
		if err := s.markFormat(txn); err != nil {
			return err
		}
		if err := txn.Set(summaryKey(c.ID), sb); err != nil {
			return err
		}
		return txn.Set(manifestKey(c.ID), seal(kindManifest, manifestKey(c.ID), mb))
	})
	if err != nil {
		return fmt.Errorf("commit %s: manifest: %w", c.ID, err)
	}
	s.format.Store(StoreFormat)
	if err := s.db.Sync(); err != nil {
		return fmt.Errorf("commit %s: sync: %w", c.ID, err)
	}
	// Files Badger made meanwhile (value logs, tables) lose group and
	// other bits even without the commands' umask of 077. The checkpoint
	// is in: a failure here is reported, not the commit's.
	if err := privateFiles(s.dir); err != nil {
		s.logf("%v", err)
	}
	return nil
}

// CheckEntryName says whether s can be a checkpoint id or name: each is a
// directory entry of the mount (MNT/<id>, MNT/by-name/<name>), so it is one
// path component: not empty, not "." or "..", no "/" or NUL, at most 255
// bytes. Other bytes (newlines included) are allowed: every file that shows
// them quotes them.
func CheckEntryName(s string) error {
	switch {
	case s == "" || s == "." || s == "..":
		return fmt.Errorf("%q is not a usable name", s)
	case strings.ContainsAny(s, "/\x00"):
		return fmt.Errorf("%q holds a '/' or a NUL byte", s)
	case len(s) > 255:
		return fmt.Errorf("%d bytes long, at most 255", len(s))
	}
	return nil
}

// sealedSummary is the stored value of sum: sealed JSON.
func sealedSummary(sum Summary) ([]byte, error) {
	b, err := encodeSummary(sum)
	if err != nil {
		return nil, err
	}
	return seal(kindSummary, summaryKey(sum.ID), b), nil
}

// List returns the summaries of all checkpoints, oldest first. A damaged
// summary fails it.
func (s *Store) List() ([]Summary, error) { return s.list(nil) }

// list returns the sound summaries, oldest first. A damaged one is passed
// to onBad (by id) if that is not nil, and fails the list otherwise.
func (s *Store) list(onBad func(id string, err error)) ([]Summary, error) {
	var list []Summary
	err := view(s.db, func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte("s/"), PrefetchValues: true, PrefetchSize: 64})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			var sum Summary
			key := it.Item().Key()
			err := it.Item().Value(func(v []byte) (err error) {
				sum, err = readSummary(key, v)
				if err == nil && sum.ID != string(key[2:]) {
					err = fmt.Errorf("%w: it names checkpoint %q", ErrCorrupt, sum.ID)
				}
				return err
			})
			if err != nil && onBad != nil {
				onBad(string(key[2:]), err)
				continue
			}
			if err != nil {
				return fmt.Errorf("summary %s: %w", key[2:], err)
			}
			list = append(list, sum)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list: %w", err)
	}
	sort.SliceStable(list, func(i, j int) bool {
		if !list[i].Time.Equal(list[j].Time) {
			return list[i].Time.Before(list[j].Time)
		}
		return list[i].ID < list[j].ID
	})
	return list, nil
}

// Resolve turns what a user typed into a checkpoint id: an exact id, a
// name (the newest checkpoint of that name), or a unique id prefix.
func Resolve(list []Summary, ref string) (string, error) {
	if ref == "" {
		return "", fmt.Errorf("empty checkpoint id")
	}
	for _, s := range list {
		if s.ID == ref {
			return s.ID, nil
		}
	}
	for i := len(list) - 1; i >= 0; i-- {
		if list[i].Name == ref {
			return list[i].ID, nil
		}
	}
	var found []string
	for _, s := range list {
		if strings.HasPrefix(s.ID, ref) {
			found = append(found, s.ID)
		}
	}
	switch len(found) {
	case 0:
		return "", fmt.Errorf("no checkpoint %q", ref)
	case 1:
		return found[0], nil
	}
	return "", fmt.Errorf("checkpoint %q is ambiguous: %s", ref, strings.Join(found, ", "))
}

func (s *Store) resolve(ref string) (string, error) {
	list, err := s.List()
	if err != nil {
		return "", err
	}
	return Resolve(list, ref)
}

// Load returns checkpoint ref (id, unique id prefix or name) with its page tables.
func (s *Store) Load(ref string) (*image.Checkpoint, error) {
	id, err := s.resolve(ref)
	if err != nil {
		return nil, err
	}
	return s.loadID(id)
}

// loadID is Load of an exact id.
func (s *Store) loadID(id string) (*image.Checkpoint, error) {
	return s.loadWith(id, loadCheckpoint)
}

// loadWith reads checkpoint id with load, in a read transaction.
func (s *Store) loadWith(id string, load func(*badger.Txn, string) (*image.Checkpoint, error)) (*image.Checkpoint, error) {
	var c *image.Checkpoint
	err := view(s.db, func(txn *badger.Txn) (err error) {
		c, err = load(txn, id)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", id, err)
	}
	return c, nil
}

// eachTable calls f for every page-table chunk of checkpoint id, in key
// (task, vma, chunk) order.
func eachTable(txn *badger.Txn, id string, f func(task, vma, chunk int, refs []byte) error) error {
	it := txn.NewIterator(badger.IteratorOptions{Prefix: tablePrefix(id), PrefetchValues: true, PrefetchSize: 16})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		_, task, vma, chunk, ok := parseTableKey(it.Item().Key())
		if !ok {
			return fmt.Errorf("bad page table key %q", it.Item().Key())
		}
		err := it.Item().Value(func(v []byte) error { return f(task, vma, chunk, v) })
		if err != nil {
			return err
		}
	}
	return nil
}

// Remove deletes checkpoints: manifest and summary first, then the page
// tables. Their pages stay until GC.
func (s *Store) Remove(refs ...string) error {
	list, err := s.List()
	if err != nil {
		return err
	}
	var ids []string
	for _, r := range refs {
		id, err := Resolve(list, r)
		if err != nil {
			return fmt.Errorf("remove: %w", err)
		}
		ids = append(ids, id)
	}
	s.gcMu.RLock()
	defer s.gcMu.RUnlock()
	for _, id := range ids {
		err := s.db.Update(func(txn *badger.Txn) error {
			if err := txn.Delete(manifestKey(id)); err != nil {
				return err
			}
			return txn.Delete(summaryKey(id))
		})
		if err != nil {
			return fmt.Errorf("remove %s: %w", id, err)
		}
		if err := s.deletePrefix(tablePrefix(id)); err != nil {
			return fmt.Errorf("remove %s: page tables: %w", id, err)
		}
	}
	if err := s.db.Sync(); err != nil {
		return fmt.Errorf("remove: sync: %w", err)
	}
	return nil
}

// deletePrefix deletes every key starting with prefix.
func (s *Store) deletePrefix(prefix []byte) error {
	var keys [][]byte
	err := view(s.db, func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			keys = append(keys, it.Item().KeyCopy(nil))
		}
		return nil
	})
	if err != nil {
		return err
	}
	return s.deleteKeys(keys)
}

func (s *Store) deleteKeys(keys [][]byte) error {
	wb := s.db.NewWriteBatch()
	defer wb.Cancel()
	for _, k := range keys {
		if err := wb.Delete(k); err != nil {
			return err
		}
	}
	return wb.Flush()
}

// putChunks stores the page-table chunks (content-addressed, c/<hash>)
// that the store does not hold yet: a vma whose pages did not change since
// an earlier checkpoint costs no new chunk.
func (s *Store) putChunks(chunks [][][][]byte) error {
	var values [][]byte
	for _, vmas := range chunks {
		for _, vchunks := range vmas {
			values = append(values, vchunks...)
		}
	}
	return s.putValues(values) // tables.go
}
