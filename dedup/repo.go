// Package dedup is the content-addressed checkpoint store: every 4 KiB page
// is kept once, by hash, across all checkpoints, in append-only pack files
// (pack.go, packwriter.go) indexed by a Badger database.
//
// Layout (Badger keys → values; format 3):
//
//	v/format            store format (version.go; formats 1, 2: see migrate.go)
//	p/<hash 32 bytes>   where the page is: pack id, offset, length, flags (packLoc)
//	c/<hash 32 bytes>   page-table chunk: (index u32, hash) records; hash of the value
//	s/<id>              Summary (sealed JSON)
//	m/<id>              manifest: the checkpoint without page tables, with the
//	                    hash of each of its chunks (sealed JSON)
//
// docs/store-format.md is the full description (manifest.go, envelope.go,
// readmanifest.go implement it).
//
// A checkpoint is written pages first (packs sealed with an fsync, then
// indexed), then the chunks the store lacks, then summary and manifest in
// one transaction: the commit point. A crash mid-dump leaves only packs
// and chunks no manifest uses, which GC removes.
//
// Speed: Missing, PutPages and ReadPage answer "is this page stored, and
// where?" from an in-memory index of the stored hashes and locations
// (index.go, loaded on first use by a scan of the p/ keys), PutPages
// appends to one open pack, full packs are sealed in the background, and
// ReadPages reads adjacent pages of a pack with one pread.
//
// Badger locks its directory, so one process owns a store at a time. The
// owner (a running `ckptfs mount`) calls Serve, and every other command reaches
// the store through OpenRepo, which returns either the Store itself or a Client
// speaking to the owner over the unix socket <dir>/ckptfs.sock.
package dedup

import (
	"errors"
	"time"

	"github.com/ckptfs/ckptfs/image"
)

// ErrLocked says the store is owned by another process.
var ErrLocked = errors.New("store is locked by another process")

// Errors of ReadPage (wrapped, with the hash in the message).
var (
	ErrPageMissing = errors.New("page missing")
	ErrPageCorrupt = errors.New("page corrupt")
)

// Repo is the store as every command sees it: a local *Store or a *Client
// of the process that owns the store.
type Repo interface {
	image.PageSource
	// Missing reports which of hashes are not stored yet.
	Missing(hashes []image.Hash) ([]bool, error)
	// PutPages stores pages (idempotent) and returns the bytes newly added.
	PutPages(hashes []image.Hash, pages [][]byte) (added int64, err error)
	// Commit writes c: page tables first, manifest last. It assigns c.ID if empty.
	Commit(c *image.Checkpoint) error
	// List returns the checkpoints, oldest first.
	List() ([]Summary, error)
	// Load returns a checkpoint with its page tables by id, unique id prefix or name.
	Load(id string) (*image.Checkpoint, error)
	// Remove deletes checkpoints (their pages stay until GC).
	Remove(ids ...string) error
	// GC deletes pages no checkpoint references and gives the space back.
	GC() (GCResult, error)
	// Verify re-hashes every page and checks every reference; it returns the problems found.
	Verify() ([]string, error)
	// Stats returns the store's figures.
	Stats() (StoreStats, error)
	Close() error
}

// Summary is one line of List.
type Summary struct {
	ID, Name    string
	Time        time.Time
	RootPID     int
	Tasks       int
	MemoryBytes int64 // saved page bytes of the checkpoint (logical)
	BytesAdded  int64 // bytes the checkpoint added to the store
}

// GCResult says what GC freed.
type GCResult struct {
	Pages  int64 // pages deleted
	Bytes  int64 // page bytes deleted
	Tables int64 // page-table chunks deleted (unused, or of interrupted commits)
	// PacksDropped and PacksRewritten count the pack files deleted whole
	// and those whose live pages were copied to new packs.
	PacksDropped, PacksRewritten int64
	DiskBefore                   int64 // store directory size before
	DiskAfter                    int64 // and after
}

// StoreStats are the figures of a store.
type StoreStats struct {
	Checkpoints  int
	LogicalBytes int64   // sum of the checkpoints' memory bytes
	Pages        int64   // unique pages stored
	PageBytes    int64   // their bytes
	DiskBytes    int64   // size of the store directory on disk
	Ratio        float64 // LogicalBytes / PageBytes (dedup ratio)
}
