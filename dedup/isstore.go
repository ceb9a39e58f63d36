package dedup

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// ErrNotStore says a directory is no ckptfs store.
var ErrNotStore = errors.New("not a ckptfs store")

// IsStore reports whether dir holds a store: our lock file or Badger's
// files (its MANIFEST, value logs or tables). It creates nothing.
func IsStore(dir string) (bool, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("store %s: %w", dir, err)
	}
	for _, e := range ents {
		switch n := e.Name(); {
		case n == lockName, n == "MANIFEST", filepath.Ext(n) == ".vlog", filepath.Ext(n) == ".sst":
			return true, nil
		}
	}
	return false, nil
}

// OpenExistingRepo is OpenRepo for commands that only use a store (ls,
// stats, verify, gc, rm): a directory that is not a store is refused with
// an error wrapping ErrNotStore, and nothing is created in it.
func OpenExistingRepo(dir string) (Repo, error) {
	ok, err := IsStore(dir)
	if err != nil {
		return nil, err
	}
	if !ok {
		if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("store %s does not exist: %w", dir, ErrNotStore)
		}
		return nil, fmt.Errorf("%s is %w (no store files in it)", dir, ErrNotStore)
	}
	return OpenRepo(dir)
}
