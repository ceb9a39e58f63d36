package fs

import (
	"bytes"
	"fmt"
	"github.com/dgraph-io/badger/v4/options"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/ckptfs/ckptfs/dedup"
)

// rewriteRaw changes, behind the store's back, the first value under a key
// starting with prefix: edit gets the value and returns the new one.
func rewriteRaw(t *testing.T, dir, prefix string, edit func([]byte) []byte) {
	t.Helper()
	// The store's tables are uncompressed (dedup's options): a table
	// written with Badger's default compression would not read back.
	db, err := badger.Open(badger.DefaultOptions(dir).WithLogger(nil).WithCompression(options.None))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.Update(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(prefix)})
		it.Rewind()
		if !it.Valid() {
			it.Close()
			return fmt.Errorf("no key %q...", prefix)
		}
		k := it.Item().KeyCopy(nil)
		v, err := it.Item().ValueCopy(nil)
		it.Close()
		if err != nil {
			return err
		}
		return txn.Set(k, edit(v))
	})
	if err != nil {
		t.Fatal(err)
	}
}

// A manifest whose bytes changed, or whose page table moved a page, is
// not shown by the mount: reading the checkpoint fails and the log names
// the damage.
func TestMountRefusesDamagedCheckpoint(t *testing.T) {
	for _, tc := range []struct {
		name, prefix string
		edit         func([]byte) []byte
	}{
		{"manifest cwd", "m/", func(v []byte) []byte { return bytes.Replace(v, []byte(`"cwd":"/`), []byte(`"cwd":"X`), 1) }},
		{"page table index", "c/", func(v []byte) []byte { v[3]++; return v }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s, err := dedup.Open(dir)
			if err != nil {
				t.Fatal(err)
			}
			c, _ := storeCheckpoint(t, s, "one", 1)
			s.Close()
			rewriteRaw(t, dir, tc.prefix, tc.edit)

			var mu sync.Mutex
			var logged []string
			srv := mountStore(t, dir, Options{Logf: func(f string, a ...any) {
				mu.Lock()
				logged = append(logged, fmt.Sprintf(f, a...))
				mu.Unlock()
			}})
			b, err := os.ReadFile(filepath.Join(srv.Mountpoint(), c.ID, "info"))
			if err == nil {
				t.Fatalf("the mount showed the damaged checkpoint:\n%s", b)
			}
			mu.Lock()
			defer mu.Unlock()
			if !strings.Contains(strings.Join(logged, "\n"), "hash mismatch") {
				t.Fatalf("read failed (%v) but the log does not name the damage: %q", err, logged)
			}
		})
	}
}
