package dedup

import (
	"bytes"
	"encoding/binary"
	"errors"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ckptfs/ckptfs/image"
	badger "github.com/dgraph-io/badger/v4"
)

// fill sets every field reachable from v to a value that is not the zero
// value (slices get two elements, pointers a value), so that a field the
// manifest forgets shows in a round trip.
func fill(v reflect.Value, n *int) {
	*n++
	switch v.Kind() {
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		fill(v.Elem(), n)
	case reflect.Struct:
		if v.Type() == reflect.TypeOf(time.Time{}) {
			v.Set(reflect.ValueOf(time.Unix(int64(1700000000+*n), int64(*n)).UTC()))
			return
		}
		for i := 0; i < v.NumField(); i++ {
			if v.Type().Field(i).IsExported() {
				fill(v.Field(i), n)
			}
		}
	case reflect.Slice:
		v.Set(reflect.MakeSlice(v.Type(), 2, 2))
		for i := 0; i < 2; i++ {
			fill(v.Index(i), n)
		}
	case reflect.Array:
		for i := 0; i < v.Len(); i++ {
			fill(v.Index(i), n)
		}
	case reflect.Map:
		v.Set(reflect.MakeMap(v.Type()))
		k, e := reflect.New(v.Type().Key()).Elem(), reflect.New(v.Type().Elem()).Elem()
		fill(k, n)
		fill(e, n)
		v.SetMapIndex(k, e)
	case reflect.String:
		v.SetString("s" + strconv.Itoa(*n))
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(int64(*n % 100))
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		v.SetUint(uint64(*n % 200))
	case reflect.Float32, reflect.Float64:
		v.SetFloat(float64(*n))
	case reflect.Interface:
		// not part of the model
	}
}

// TestManifestCarriesEveryField fills every field of a checkpoint and
// checks that the manifest (and the wire form, which adds the page
// references) gives all of them back. A field added to the model that the
// manifest does not carry fails here: add it to manifest.go and
// docs/store-format.md.
func TestManifestCarriesEveryField(t *testing.T) {
	c := new(image.Checkpoint)
	n := 0
	fill(reflect.ValueOf(c).Elem(), &n)
	for _, task := range c.Tasks {
		for _, v := range task.VMAs {
			v.Start, v.End = 0x10000, 0x20000
			v.Table = nil // a dump's form of Pages, never loaded (tables_test.go)
			v.Pages[0].Index, v.Pages[1].Index = 1, 7
		}
	}
	w, err := toWire(c)
	if err != nil {
		t.Fatal(err)
	}
	got, err := fromWire(w)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, c) {
		t.Fatalf("manifest round trip lost fields:\n got %+v\nwant %+v", got.Tasks[0], c.Tasks[0])
	}
}

// rawValue reads or rewrites a store value behind the store's back.
func rawValue(t *testing.T, s *Store, key []byte) []byte {
	t.Helper()
	var v []byte
	err := s.db.View(func(txn *badger.Txn) error {
		it, err := txn.Get(key)
		if err != nil {
			return err
		}
		v, err = it.ValueCopy(nil)
		return err
	})
	if err != nil {
		t.Fatalf("read %q: %v", key, err)
	}
	return v
}

func setRaw(t *testing.T, s *Store, key, v []byte) {
	t.Helper()
	if err := s.db.Update(func(txn *badger.Txn) error { return txn.Set(key, v) }); err != nil {
		t.Fatal(err)
	}
}

// checkCaught checks that Load of id and Verify both report damage.
func checkCaught(t *testing.T, r Repo, id, what string) {
	t.Helper()
	if _, err := r.Load(id); err == nil || !strings.Contains(err.Error(), what) {
		t.Fatalf("Load of the damaged checkpoint: %v, want an error saying %q", err, what)
	}
	problems, err := r.Verify()
	if err != nil {
		t.Fatal(err)
	}
	if len(problems) == 0 || !strings.Contains(strings.Join(problems, "\n"), id) {
		t.Fatalf("verify did not report the damaged checkpoint %s: %q", id, problems)
	}
}

func TestManifestByteChangeCaught(t *testing.T) {
	s := openT(t)
	c := dump(t, s, "a", []fakeVMA{{1, 0, 3}})
	key := manifestKey(c.ID)
	v := rawValue(t, s, key)
	// The task's cwd is "" in dump(): give it one of the same length as
	// another field instead: change a byte of the comm "t" to "u".
	i := bytes.Index(v, []byte(`"comm":"t"`))
	if i < 0 {
		t.Fatalf("no comm in manifest %q", v)
	}
	v[i+len(`"comm":"`)] = 'u'
	setRaw(t, s, key, v)
	checkCaught(t, s, c.ID, "hash mismatch")
}

func TestManifestCwdChangeCaught(t *testing.T) {
	s := openT(t)
	c := &image.Checkpoint{Name: "cwd", RootPID: 7, Tasks: []*image.Task{{PID: 7, Comm: "x", Cwd: "/home/user",
		Threads: []*image.Thread{{TID: 7}}}}}
	if err := s.Commit(c); err != nil {
		t.Fatal(err)
	}
	key := manifestKey(c.ID)
	v := rawValue(t, s, key)
	v = bytes.Replace(v, []byte("/home/user"), []byte("/etc/xxxxx"), 1)
	setRaw(t, s, key, v)
	checkCaught(t, s, c.ID, "hash mismatch")
}

func TestManifestMovedUnderOtherIDCaught(t *testing.T) {
	s := openT(t)
	a := dump(t, s, "a", []fakeVMA{{1, 0, 3}})
	b := dump(t, s, "b", []fakeVMA{{2, 0, 3}})
	setRaw(t, s, manifestKey(b.ID), rawValue(t, s, manifestKey(a.ID)))
	checkCaught(t, s, b.ID, "hash mismatch")
}

func TestPageTableIndexMoveCaught(t *testing.T) {
	s := openT(t)
	c := dump(t, s, "a", []fakeVMA{{1, 0, 3}}) // indexes 1, 2, 3 in a vma of 5 pages
	key := firstChunkKey(c)
	v := rawValue(t, s, key)
	// Move the last page from index 3 to 4: still ascending and inside the
	// vma, so only the hash can tell.
	binary.BigEndian.PutUint32(v[2*refSize:], 4)
	setRaw(t, s, key, v)
	checkCaught(t, s, c.ID, "hash mismatch")
	// Through the socket too (the mount's read path for other commands).
	cl := serveT(t, s)
	if _, err := cl.Load(c.ID); err == nil || !errors.Is(err, ErrCorrupt) && !strings.Contains(err.Error(), "corrupt") {
		t.Fatalf("Load through the socket: %v", err)
	}
}

func TestPageTableChunkMissingCaught(t *testing.T) {
	s := openT(t)
	c := dump(t, s, "a", []fakeVMA{{1, 0, 3}})
	if err := s.deleteKeys([][]byte{firstChunkKey(c)}); err != nil {
		t.Fatal(err)
	}
	checkCaught(t, s, c.ID, "missing")
}

// firstChunkKey is the key of the first page-table chunk of the first vma
// of c's first task.
func firstChunkKey(c *image.Checkpoint) []byte {
	return chunkKey(Sum(tableChunks(c.Tasks[0].VMAs[0], manifestFormat)[0]))
}

func TestFormat1ReferencesChecked(t *testing.T) {
	// A format-1 checkpoint records no hashes, but its references must
	// still be in order inside their vma.
	v := &image.VMA{Start: 0x1000, End: 0x3000, Pages: []image.PageRef{{Index: 0}, {Index: 2}}}
	if err := checkRefs(v); err == nil {
		t.Fatal("a reference outside the vma passed")
	}
	v.Pages = []image.PageRef{{Index: 1}, {Index: 0}}
	if err := checkRefs(v); err == nil {
		t.Fatal("references out of order passed")
	}
}

func TestStoreFormatKey(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if s.Format() != StoreFormat {
		t.Fatalf("new store has format %d, want %d", s.Format(), StoreFormat)
	}
	setRaw(t, s, formatKey, []byte(strconv.Itoa(StoreFormat+1)))
	s.Close()
	_, err = Open(dir)
	if !errors.Is(err, ErrNewerStore) || !strings.Contains(err.Error(), "use a newer ckptfs") {
		t.Fatalf("open of a newer store: %v", err)
	}
}

// TestOldStoreRefusedThenMigrated: a store of format 1 or 2 is refused
// with a message naming ckptfs migrate; Migrate converts it, after which
// it opens, takes a new checkpoint, lists, loads and verifies; a second
// Migrate changes nothing.
func TestOldStoreRefusedThenMigrated(t *testing.T) {
	for _, v := range []string{"v1", "v2"} {
		t.Run(v, func(t *testing.T) {
			dir := copyStore(t, goldenDir+"/"+v)
			_, err := Open(dir)
			if !errors.Is(err, ErrOldStore) || !strings.Contains(err.Error(), "ckptfs migrate") {
				t.Fatalf("open of a %s store: %v", v, err)
			}
			rep, err := Migrate(dir)
			if err != nil {
				t.Fatal(err)
			}
			if rep.From != int(v[1]-'0') || rep.To != StoreFormat || rep.Checkpoints != 2 || rep.Pages == 0 {
				t.Fatalf("migrate report %+v", rep)
			}
			s, err := Open(dir)
			if err != nil {
				t.Fatal(err)
			}
			if s.Format() != StoreFormat {
				t.Fatalf("migrated store has format %d", s.Format())
			}
			dump(t, s, "new", []fakeVMA{{5, 0, 2}})
			list, err := s.List()
			if err != nil || len(list) != 3 {
				t.Fatalf("list %v %v", list, err)
			}
			for _, sum := range list {
				if _, err := s.Load(sum.ID); err != nil {
					t.Fatal(err)
				}
			}
			if p, err := s.Verify(); err != nil || len(p) > 0 {
				t.Fatalf("verify: %v %q", err, p)
			}
			s.Close()
			if rep, err := Migrate(dir); err != nil || rep.From != StoreFormat || rep.Pages != 0 {
				t.Fatalf("second migrate: %+v %v", rep, err)
			}
		})
	}
}

func TestSummaryDamageCaught(t *testing.T) {
	s := openT(t)
	a := dump(t, s, "a", []fakeVMA{{1, 0, 3}})
	b := dump(t, s, "b", []fakeVMA{{2, 0, 3}})
	v := rawValue(t, s, summaryKey(a.ID))
	v = bytes.Replace(v, []byte(`"name":"a"`), []byte(`"name":"z"`), 1)
	setRaw(t, s, summaryKey(a.ID), v)
	if _, err := s.List(); err == nil || !strings.Contains(err.Error(), "hash mismatch") {
		t.Fatalf("List with a damaged summary: %v", err)
	}
	problems, err := s.Verify()
	if err != nil {
		t.Fatal(err)
	}
	all := strings.Join(problems, "\n")
	if len(problems) != 1 || !strings.Contains(all, a.ID) || !strings.Contains(all, "summary") {
		t.Fatalf("verify of a damaged summary: %q", problems)
	}
	// The other checkpoint is still checked: a damaged page of b shows.
	dropPageEntries(t, s, b.Tasks[0].VMAs[0].Pages[0].Hash)
	if problems, _ = s.Verify(); len(problems) != 2 || !strings.Contains(strings.Join(problems, "\n"), b.ID) {
		t.Fatalf("verify after a page of b went: %q", problems)
	}
}
