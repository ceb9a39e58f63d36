package dedup

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/ckptfs/ckptfs/internal/pageout"
)

// ReleaseMappedPages takes the pages of the store's files that Badger
// maps (value logs, tables, memtable logs) out of this process's resident
// set (internal/pageout): Badger writes its value log through a mapping,
// so without it every index record and page-table chunk a dump writes
// stays in the dumper's RSS. The pages stay in the page cache; Badger
// faults back those it reads.
func (s *Store) ReleaseMappedPages() error {
	dir, err := filepath.Abs(s.dir)
	if err == nil {
		dir, err = filepath.EvalSymlinks(dir) // maps names the real path
	}
	if err != nil {
		return fmt.Errorf("release mapped pages: %w", err)
	}
	prefix := dir + "/"
	_, err = pageout.Files(func(p string) bool { return strings.HasPrefix(p, prefix) })
	return err
}
