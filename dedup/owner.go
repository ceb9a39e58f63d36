package dedup

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// A store is private to its owner: the directory must belong to the user
// that opens it (root included: root does not adopt another user's store,
// where that user could read or swap what root writes), it is mode 0700
// and its files 0600. Badger creates its value logs and tables with mode
// 0666 less the umask; the ckptfs commands set a umask of 077, and every
// Open takes group and other bits off the files already there.

// ErrNotOwner says a store directory belongs to another user.
var ErrNotOwner = errors.New("store belongs to another user")

// prepareStoreDir creates dir (0700) if it does not exist, checks that it
// belongs to us and makes it and its files private. fresh says that dir
// did not exist or was empty: a new store.
func prepareStoreDir(dir string) (fresh bool, err error) {
	ents, err := os.ReadDir(dir)
	fresh = errors.Is(err, os.ErrNotExist) || (err == nil && len(ents) == 0)
	if err := os.MkdirAll(dir, 0700); err != nil {
		return false, fmt.Errorf("create store: %w", err)
	}
	if err := checkOwner(dir); err != nil {
		return false, err
	}
	if err := os.Chmod(dir, 0700); err != nil {
		return false, fmt.Errorf("chmod store: %w", err)
	}
	if err := privateFiles(dir); err != nil {
		return false, err
	}
	return fresh, nil
}

// checkOwner returns an error wrapping ErrNotOwner unless dir belongs to
// the effective uid of this process.
func checkOwner(dir string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("store %s: %w", dir, err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Errorf("store %s: no owner information", dir)
	}
	if me := os.Geteuid(); int(st.Uid) != me {
		return fmt.Errorf("store %s: %w (uid %d, not uid %d): refusing to use it; run ckptfs as its owner",
			dir, ErrNotOwner, st.Uid, me)
	}
	return nil
}

// privateFiles takes the group and other permission bits off every file
// of the store directory dir.
func privateFiles(dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("store %s: %w", dir, err)
	}
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			continue // gone meanwhile
		}
		if fi.Mode().Perm()&0077 != 0 {
			p := filepath.Join(dir, e.Name())
			if err := os.Chmod(p, fi.Mode().Perm()&0700); err != nil {
				return fmt.Errorf("store %s: make %s private: %w", dir, e.Name(), err)
			}
		}
	}
	return nil
}
