package dedup

import (
	"errors"
	"fmt"
	"strconv"

	badger "github.com/dgraph-io/badger/v4"
)

// StoreFormat is the newest store format this version reads and writes:
//
//	1  no version key; gob summaries and manifests (ckptfs before the key)
//	2  key v/format; sealed JSON summaries and manifests whose hashes, and
//	   the page-table hashes the manifests record, are checked on read
//	3  pages in pack files (STORE/packs), Badger as their index (a key
//	   p/<hash> per page); page-table chunks content-addressed (c/<hash>)
//	4  as 3, but the page index is one record x/<pack> per pack
//	   (packindex.go), read into memory at first use
//
// docs/store-format.md describes them. This version opens stores of
// format 4 only; `ckptfs migrate` (Migrate) converts older ones.
const StoreFormat = 4

// ErrOldStore says a store has an older format, which `ckptfs migrate`
// converts.
var ErrOldStore = errors.New("store format is older than this ckptfs uses")

// formatKey holds the store's format as ASCII decimal. A store without it
// is of format 1.
var formatKey = []byte("v/format")

// ErrNewerStore says a store was written by a newer ckptfs.
var ErrNewerStore = errors.New("store format is newer than this ckptfs")

// readFormat returns the format of the open database db.
func readFormat(db *badger.DB) (int, error) {
	f := 1
	err := db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(formatKey)
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		return item.Value(func(v []byte) error {
			n, err := strconv.Atoi(string(v))
			if err != nil || n < 1 {
				return fmt.Errorf("bad store format %q", v)
			}
			f = n
			return nil
		})
	})
	return f, err
}

// checkFormat reads the format of a store being opened. A new (empty)
// store gets the current format at once; an older or a newer one is
// refused (old: unless migrating).
func checkFormat(db *badger.DB, dir string, fresh, migrating bool) (int, error) {
	if fresh {
		err := db.Update(func(txn *badger.Txn) error {
			return txn.Set(formatKey, []byte(strconv.Itoa(StoreFormat)))
		})
		if err != nil {
			return 0, fmt.Errorf("store %s: write format: %w", dir, err)
		}
		return StoreFormat, nil
	}
	f, err := readFormat(db)
	if err != nil {
		return 0, fmt.Errorf("store %s: read format: %w", dir, err)
	}
	if f == 1 && !fresh {
		// A store whose creation was cut short (killed between Badger's
		// making its files and the format key's commit) holds nothing at
		// all: it is new, not of format 1.
		empty, err := emptyStore(db, dir)
		if err != nil {
			return 0, fmt.Errorf("store %s: read format: %w", dir, err)
		}
		if empty {
			return checkFormat(db, dir, true, migrating)
		}
	}
	if f > StoreFormat {
		return 0, fmt.Errorf("store %s has format %d; this ckptfs reads formats 1 to %d (use a newer ckptfs): %w",
			dir, f, StoreFormat, ErrNewerStore)
	}
	if f < StoreFormat && !migrating {
		return 0, fmt.Errorf("store %s has format %d; this ckptfs uses format %d: convert it with `ckptfs migrate -s %s` (in place; an older ckptfs cannot read it afterwards): %w",
			dir, f, StoreFormat, dir, ErrOldStore)
	}
	return f, nil
}

// markFormat records, in the transaction of a commit, that the store now
// holds a checkpoint of the current format; the commit calls
// s.format.Store(StoreFormat) once the transaction is in.
func (s *Store) markFormat(txn *badger.Txn) error {
	if s.format.Load() >= StoreFormat {
		return nil
	}
	return txn.Set(formatKey, []byte(strconv.Itoa(StoreFormat)))
}

// Format returns the store's format (see StoreFormat).
func (s *Store) Format() int { return int(s.format.Load()) }

// emptyStore says whether the store holds no key and no pack.
func emptyStore(db *badger.DB, dir string) (bool, error) {
	packs, err := listPacks(dir)
	if err != nil || len(packs) > 0 {
		return false, err
	}
	empty := true
	err = db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{})
		defer it.Close()
		it.Rewind()
		empty = !it.Valid()
		return nil
	})
	return empty, err
}
