package dedup

import (
	"errors"
	"fmt"
	"github.com/dgraph-io/badger/v4/options"
	"github.com/dgraph-io/badger/v4/table"
	"github.com/dgraph-io/ristretto/v2/z"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	badger "github.com/dgraph-io/badger/v4"
	"golang.org/x/sys/unix"
)

// ErrDamaged says a store's Badger files are damaged in a way that opening
// it would make worse (Badger would cut a log, or start an empty
// database): the store is not opened; `ckptfs verify --repair` salvages it.
var ErrDamaged = errors.New("store is damaged")

// Badger, opening a database read-write, repairs it its own way: it cuts
// the last value log and every memtable log at the first entry whose
// checksum fails (a flipped byte in the middle loses every entry after
// it), and with no MANIFEST it starts an empty database and deletes the
// tables it does not know. checkBadgerFiles looks first, reading the
// files without changing them, and refuses those cases; what Badger does
// after a crash (a torn entry at the end of a log, an unfinished
// transaction) it still does.

// badgerFiles lists a store directory's Badger files by kind.
type badgerFiles struct {
	manifest bool
	vlogs    []string // by file id
	mems     []string
	tables   []string
}

func listBadgerFiles(dir string) (badgerFiles, error) {
	var f badgerFiles
	ents, err := os.ReadDir(dir)
	if err != nil {
		return f, err
	}
	for _, e := range ents {
		name := e.Name()
		switch {
		case name == badger.ManifestFilename:
			f.manifest = true
		case strings.HasSuffix(name, ".vlog"):
			f.vlogs = append(f.vlogs, name)
		case strings.HasSuffix(name, ".mem"):
			f.mems = append(f.mems, name)
		case strings.HasSuffix(name, ".sst"):
			f.tables = append(f.tables, name)
		}
	}
	byID := func(names []string) {
		sort.Slice(names, func(i, j int) bool { return fileID(names[i]) < fileID(names[j]) })
	}
	byID(f.vlogs)
	byID(f.mems)
	byID(f.tables)
	return f, nil
}

// fileID is the number in a Badger file name ("000012.vlog" -> 12).
func fileID(name string) uint64 {
	n, _ := strconv.ParseUint(strings.TrimSuffix(name, filepath.Ext(name)), 10, 64)
	return n
}

// mapFile maps a file read-only (nil for an empty one); unmap with
// unix.Munmap.
func mapFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file", path)
	}
	if st.Size() == 0 {
		return nil, nil
	}
	return unix.Mmap(int(f.Fd()), 0, int(st.Size()), unix.PROT_READ, unix.MAP_SHARED)
}

// hasEntries reports whether a log file holds at least one good entry.
func hasEntries(path string) bool {
	data, err := mapFile(path)
	if err != nil || data == nil {
		return err != nil // unreadable: assume it held data
	}
	defer unix.Munmap(data)
	found := false
	off := nextCandidate(data, logHeaderSize)
	if off < len(data) {
		found = true
	}
	return found
}

// removeEmptyLogs deletes memtable logs and value logs of 0 bytes: a
// kill between Badger's creating such a file and sizing it leaves one
// (gc's memtable flushes make it likely), Badger then refuses to open the
// store ("Create a new file"), and the file holds nothing.
func removeEmptyLogs(dir string, f badgerFiles) error {
	for _, name := range append(append([]string{}, f.mems...), f.vlogs...) {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Size() == 0 {
			if err := os.Remove(p); err != nil {
				return fmt.Errorf("open store: remove empty %s: %w", name, err)
			}
		}
	}
	return nil
}

// checkBadgerFiles refuses to let Badger open the store in dir if that
// would lose data (see above). Empty logs a kill left are removed first.
func checkBadgerFiles(dir string) error {
	f, err := listBadgerFiles(dir)
	if err != nil {
		return fmt.Errorf("open store: %w", err)
	}
	if err := removeEmptyLogs(dir, f); err != nil {
		return err
	}
	if f, err = listBadgerFiles(dir); err != nil {
		return fmt.Errorf("open store: %w", err)
	}
	damaged := func(format string, a ...any) error {
		return fmt.Errorf("store %s: %s; run ckptfs verify --repair -s %s: %w", dir, fmt.Sprintf(format, a...), dir, ErrDamaged)
	}
	if !f.manifest {
		for _, v := range f.vlogs {
			if hasEntries(filepath.Join(dir, v)) {
				return damaged("Badger MANIFEST is missing but value logs exist (%s)", v)
			}
		}
		for _, m := range f.mems {
			if hasEntries(filepath.Join(dir, m)) {
				return damaged("Badger MANIFEST is missing but memtable logs exist (%s)", m)
			}
		}
		if len(f.tables) > 0 {
			return damaged("Badger MANIFEST is missing but tables exist (%s)", f.tables[0])
		}
		return nil // a new store
	}
	listed, err := checkManifest(dir, f)
	if err != nil {
		return damaged("%v", err)
	}
	if len(f.tables) > 0 && len(f.vlogs) == 0 {
		// Badger would start a new value log 1 and write over what the
		// tables' value pointers point to.
		return damaged("its tables exist but every value log is missing")
	}
	for _, name := range f.tables {
		if !listed[fileID(name)] {
			// A table the MANIFEST does not list is one a kill cut
			// short while a flush or compaction wrote it (often 0
			// bytes): it holds nothing the store needs, and Badger's
			// Open deletes it.
			continue
		}
		if err := checkTable(filepath.Join(dir, name)); err != nil {
			return damaged("table %s: %v", name, err)
		}
	}
	// Badger replays every memtable log and the last value log.
	logs := f.mems
	if n := len(f.vlogs); n > 0 {
		logs = append(logs[:len(logs):len(logs)], f.vlogs[n-1])
	}
	for _, name := range logs {
		data, err := mapFile(filepath.Join(dir, name))
		if err != nil {
			return damaged("%v", err)
		}
		if data == nil {
			continue
		}
		s := scanLog(data, nil)
		unix.Munmap(data)
		if s.damagedAt >= 0 {
			return damaged("%s is damaged at offset %d (opening would cut it there, losing that entry and %d good ones after it)", name, s.damagedAt, s.lost)
		}
	}
	return nil
}

// checkManifest replays Badger's MANIFEST without changing it: it must
// read to its end (Badger cuts it at the first short record) and every
// table it lists must exist. It returns the ids of those tables.
func checkManifest(dir string, f badgerFiles) (map[uint64]bool, error) {
	path := filepath.Join(dir, badger.ManifestFilename)
	fp, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("Badger MANIFEST: %w", err)
	}
	defer fp.Close()
	st, err := fp.Stat()
	if err != nil {
		return nil, fmt.Errorf("Badger MANIFEST: %w", err)
	}
	m, end, err := badger.ReplayManifestFile(fp, 0, badger.DefaultOptions(dir))
	if err != nil {
		return nil, fmt.Errorf("Badger MANIFEST is damaged: %w", err)
	}
	if end < st.Size() {
		return nil, fmt.Errorf("Badger MANIFEST is damaged at offset %d of %d", end, st.Size())
	}
	have := map[uint64]bool{}
	for _, t := range f.tables {
		have[fileID(t)] = true
	}
	for id := range m.Tables {
		if !have[id] {
			return nil, fmt.Errorf("table %06d.sst that Badger's MANIFEST lists is missing", id)
		}
	}
	listed := map[uint64]bool{}
	for id := range m.Tables {
		listed[id] = true
	}
	return listed, nil
}

// checkTable verifies every block checksum of a Badger table, here and not
// inside Badger's Open: a damaged table can make Badger panic in a goroutine
// of its own (table.(*Table).block, slice bounds), which nothing can
// recover, where this one recovers into an error.
func checkTable(path string) (err error) {
	defer recoverBadger(&err, "check table")
	_, mf, err := openTable(path, options.OnTableRead)
	if err != nil {
		return err
	}
	mf.Close(-1)
	return nil
}

// openTable opens a Badger table read-only, checking checksums as mode
// says. Close it with mf.Close(-1), not t.DecrRef: at zero references that
// deletes the file. It can panic on a damaged table (recoverBadger).
func openTable(path string, mode options.ChecksumVerificationMode) (t *table.Table, mf *z.MmapFile, err error) {
	fd, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	mf, err = z.OpenMmapFileUsing(fd, 0, false)
	if err != nil {
		fd.Close()
		return nil, nil, err
	}
	opened := false
	defer func() { // also on a panic, which goes on to the caller
		if !opened {
			mf.Close(-1)
		}
	}()
	t, err = table.OpenTable(mf, table.Options{ReadOnly: true, ChkMode: mode})
	if err != nil {
		return nil, nil, err
	}
	opened = true
	return t, mf, nil
}
