package dedup

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/ckptfs/ckptfs/image"
	badger "github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
)

// Store is a store opened locally: this process owns the Badger database.
type Store struct {
	dir  string
	db   *badger.DB
	lock *os.File

	// gcMu keeps GC apart from writers: GC takes it exclusively, Missing,
	// PutPages, Commit and Remove share it.
	gcMu sync.RWMutex
	// commitMu serialises commits (id uniqueness).
	commitMu sync.Mutex
	// putMu serialises PutPages so that "added" counts each page once.
	putMu sync.Mutex
	// inflight counts client sessions that have sent pages but not yet
	// committed: their pages are referenced by no manifest yet, so GC must
	// not run.
	inflight atomic.Int64

	closeOnce sync.Once
	closeErr  error
}

// storeOptions are the Badger options, chosen by measurement (see
// bench_test.go and the package report):
//   - pages (4 KiB) go to the value log (ValueThreshold 1 KiB): written once,
//     the LSM holds only keys, so key scans (gc, stats) stay cheap and
//     compactions do not rewrite page data;
//   - value log files of 64 MiB so that GC can rewrite and drop files on
//     stores smaller than the 1 GiB default;
//   - no block compression: pages are not in the LSM, and the tables and
//     manifests are small;
//   - quiet logger.
func storeOptions(dir string) badger.Options {
	return badger.DefaultOptions(dir).
		WithLogger(quietLogger{}).
		WithValueThreshold(1024).
		WithValueLogFileSize(64 << 20).
		WithCompression(options.None).
		WithBlockCacheSize(32 << 20).
		WithNumCompactors(2).
		WithMetricsEnabled(false)
}

// badgerOptions is storeOptions; benchmarks swap it to compare settings.
var badgerOptions = storeOptions

// Open opens (creating if needed) the store in dir. It returns an error
// wrapping ErrLocked if another process owns it.
func Open(dir string) (*Store, error) {
	if err := checkStoreDir(dir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0700); err != nil {
		return nil, fmt.Errorf("create store: %w", err)
	}
	if err := os.Chmod(dir, 0700); err != nil {
		return nil, fmt.Errorf("chmod store: %w", err)
	}
	lock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	db, err := badger.Open(badgerOptions(dir))
	if err != nil {
		lock.Close()
		return nil, fmt.Errorf("open store %s: %w", dir, err)
	}
	return &Store{dir: dir, db: db, lock: lock}, nil
}

// checkStoreDir refuses a directory that has files but is no store, so that
// a mistyped -s does not chmod and fill, say, a home directory.
func checkStoreDir(dir string) error {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) || len(ents) == 0 {
		return nil
	}
	if err != nil {
		return fmt.Errorf("open store: %w", err)
	}
	for _, e := range ents {
		if e.Name() == lockName || e.Name() == "MANIFEST" {
			return nil
		}
	}
	return fmt.Errorf("%s is not a ckptfs store (it is not empty and has no %s)", dir, lockName)
}

// Dir returns the store directory.
func (s *Store) Dir() string { return s.dir }

// Close closes the database and releases the lock.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.closeErr = s.db.Close()
		s.lock.Close()
		if s.closeErr != nil {
			s.closeErr = fmt.Errorf("close store %s: %w", s.dir, s.closeErr)
		}
	})
	return s.closeErr
}

func pageKey(h image.Hash) []byte {
	k := make([]byte, 2+len(h))
	copy(k, "p/")
	copy(k[2:], h[:])
	return k
}

// ReadPage fills buf with page h and checks its hash.
func (s *Store) ReadPage(h image.Hash, buf []byte) error {
	if len(buf) < image.PageSize {
		return fmt.Errorf("read page %s: buffer of %d bytes", h, len(buf))
	}
	buf = buf[:image.PageSize]
	err := s.db.View(func(txn *badger.Txn) error {
		it, err := txn.Get(pageKey(h))
		if err != nil {
			return err
		}
		return it.Value(func(v []byte) error {
			if len(v) != image.PageSize {
				return fmt.Errorf("page %s: %w (%d bytes)", h, ErrPageCorrupt, len(v))
			}
			copy(buf, v)
			return nil
		})
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return fmt.Errorf("page %s: %w", h, ErrPageMissing)
	}
	if err != nil {
		return fmt.Errorf("read page %s: %w", h, err)
	}
	if got := Sum(buf); got != h {
		return fmt.Errorf("page %s: %w (content hashes to %s)", h, ErrPageCorrupt, got)
	}
	return nil
}

// Missing reports which hashes are not stored.
func (s *Store) Missing(hashes []image.Hash) ([]bool, error) {
	s.gcMu.RLock()
	defer s.gcMu.RUnlock()
	return s.missing(hashes)
}

func (s *Store) missing(hashes []image.Hash) ([]bool, error) {
	miss := make([]bool, len(hashes))
	key := make([]byte, 2+32)
	copy(key, "p/")
	err := s.db.View(func(txn *badger.Txn) error {
		for i, h := range hashes {
			copy(key[2:], h[:])
			_, err := txn.Get(key)
			switch {
			case errors.Is(err, badger.ErrKeyNotFound):
				miss[i] = true
			case err != nil:
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("look up pages: %w", err)
	}
	return miss, nil
}

// PutPages stores pages under their hashes; pages already stored are
// skipped. Zero pages and pages of the wrong size are refused. The hashes
// are trusted (the dumper computed them); Verify re-checks them.
func (s *Store) PutPages(hashes []image.Hash, pages [][]byte) (int64, error) {
	if len(hashes) != len(pages) {
		return 0, fmt.Errorf("put pages: %d hashes for %d pages", len(hashes), len(pages))
	}
	for i, p := range pages {
		if len(p) != image.PageSize {
			return 0, fmt.Errorf("put page %s: %d bytes, want %d", hashes[i], len(p), image.PageSize)
		}
		if IsZero(p) {
			return 0, fmt.Errorf("put page %s: zero pages are not stored", hashes[i])
		}
	}
	s.gcMu.RLock()
	defer s.gcMu.RUnlock()
	s.putMu.Lock()
	defer s.putMu.Unlock()
	miss, err := s.missing(hashes)
	if err != nil {
		return 0, err
	}
	wb := s.db.NewWriteBatch()
	defer wb.Cancel()
	var added int64
	seen := make(map[image.Hash]bool)
	for i, h := range hashes {
		if !miss[i] || seen[h] {
			continue
		}
		seen[h] = true
		if err := wb.Set(pageKey(h), pages[i]); err != nil {
			return 0, fmt.Errorf("put page %s: %w", h, err)
		}
		added += image.PageSize
	}
	if err := wb.Flush(); err != nil {
		return 0, fmt.Errorf("put pages: %w", err)
	}
	return added, nil
}

// quietLogger drops Badger's chatter and keeps only its errors.
type quietLogger struct{}

func (quietLogger) Errorf(f string, a ...any) {
	fmt.Fprintln(os.Stderr, "ckptfs: badger:", strings.TrimSpace(fmt.Sprintf(f, a...)))
}
func (quietLogger) Warningf(string, ...any) {}
func (quietLogger) Infof(string, ...any)    {}
func (quietLogger) Debugf(string, ...any)   {}

// diskUsage returns the bytes allocated to the files under dir.
func diskUsage(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		if fi, err := d.Info(); err == nil {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				n += st.Blocks * 512
			}
		}
		return nil
	})
	return n
}
