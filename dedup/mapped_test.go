package dedup

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"testing"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/ckptfs/ckptfs/internal/proc"
)

func rssFileBytes(t *testing.T) int64 {
	t.Helper()
	b, err := proc.Read(os.Getpid(), "status")
	if err != nil {
		t.Fatal(err)
	}
	var kib int64
	for _, c := range proc.KeyValues(b)["RssFile"] {
		if c >= '0' && c <= '9' {
			kib = kib*10 + int64(c-'0')
		}
	}
	return kib << 10
}

// Values written to the store's value log stay in the process's RSS
// (Badger writes through a mapping) until ReleaseMappedPages; they read
// back the same after it.
func TestReleaseMappedPages(t *testing.T) {
	s := openT(t)
	var values [][]byte
	for i := range 4096 { // 36 MiB of chunk-sized values
		v := make([]byte, tableChunk3*refSize)
		binary.BigEndian.PutUint64(v, uint64(i))
		values = append(values, v)
	}
	if err := s.PutTables(values); err != nil {
		t.Fatal(err)
	}
	before := rssFileBytes(t)
	if err := s.ReleaseMappedPages(); err != nil {
		t.Fatal(err)
	}
	after := rssFileBytes(t)
	if before-after < 16<<20 {
		t.Fatalf("RssFile %d MiB before, %d MiB after the release", before>>20, after>>20)
	}
	err := view(s.db, func(txn *badger.Txn) error {
		for _, v := range values {
			err := getChunk(txnChunks(txn), Sum(v), "value", func(b []byte) error {
				if !bytes.Equal(b, v) {
					return fmt.Errorf("value %x read back differs", v[:8])
				}
				return nil
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
