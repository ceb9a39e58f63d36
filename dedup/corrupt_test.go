package dedup

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ckptfs/ckptfs/image"
)

// The store corruption test: a store with a few checkpoints is damaged in
// a copy (random bytes flipped in a value log, a table, the MANIFEST or a
// pack, a Badger file or a pack deleted, a pack cut short), then opened, listed, loaded, read and verified:
// never a panic; either the store refuses to open (ErrDamaged or an open
// error) or every damage shows in Verify and nothing reads back wrong.
// Then verify --repair: afterwards the store opens and verifies clean,
// every checkpoint kept reads back exactly as dumped, and a checkpoint is
// lost only if the damage could have touched it (one flipped byte in a
// value log costs at most the one checkpoint whose page it hit; a lost
// MANIFEST or key registry costs nothing).
//
// CKPTFS_CORRUPT_TRIALS sets the number of trials (default 40, 10 with
// -short).

type corruptFixture struct {
	dir    string // the undamaged store (closed)
	cps    []*image.Checkpoint
	layout [][][]fakeVMA // per checkpoint: its tasks' vmas
}

func corruptTrials(t *testing.T) int {
	if s := os.Getenv("CKPTFS_CORRUPT_TRIALS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			t.Fatalf("CKPTFS_CORRUPT_TRIALS=%q", s)
		}
		return n
	}
	if testing.Short() {
		return 10
	}
	return 40
}

func newCorruptFixture(t *testing.T) *corruptFixture {
	dir := filepath.Join(t.TempDir(), "store")
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	f := &corruptFixture{dir: dir}
	for i := range 6 {
		// Pages of its own per checkpoint (seed i), so that one
		// damaged page hurts one checkpoint.
		tasks := [][]fakeVMA{{{seed: uint64(i), first: 0, n: 40}, {seed: uint64(i), first: 100, n: 3}}}
		if i%2 == 1 {
			tasks = append(tasks, []fakeVMA{{seed: uint64(i), first: 200, n: 20}})
		}
		c := dump(t, s, fmt.Sprintf("cp%d", i), tasks...)
		f.cps = append(f.cps, c)
		f.layout = append(f.layout, tasks)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *corruptFixture) copy(t *testing.T) string {
	to := filepath.Join(t.TempDir(), "store")
	if out, err := exec.Command("cp", "-a", f.dir, to).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	return to
}

// damage damages the store copy at dir; it returns what it did and the
// most checkpoints the damage may cost (-1: any).
func damage(t *testing.T, r *rand.Rand, dir string) (string, int) {
	ents, _ := os.ReadDir(dir)
	var vlogs, tables []string
	for _, e := range ents {
		switch filepath.Ext(e.Name()) {
		case ".vlog":
			if fi, _ := e.Info(); fi.Size() > logHeaderSize {
				vlogs = append(vlogs, e.Name())
			}
		case ".sst":
			tables = append(tables, e.Name())
		}
	}
	pick := func(names []string) string { return names[r.IntN(len(names))] }
	packs, _ := filepath.Glob(filepath.Join(dir, packDir, "*"+packExt))
	switch k := r.IntN(13); {
	case k >= 10 && k < 12 && len(packs) > 0: // one byte of a pack
		name := pick(packs)
		off := flipRandom(t, r, name, 1)
		return fmt.Sprintf("flip 1 byte of %s at %v", filepath.Base(name), off), 1
	case k == 12 && len(packs) > 0: // a pack cut short or gone
		name := pick(packs)
		if r.IntN(2) == 0 {
			if err := os.Remove(name); err != nil {
				t.Fatal(err)
			}
			return "delete " + filepath.Base(name), -1
		}
		fi, _ := os.Stat(name)
		n := r.Int64N(fi.Size())
		if err := os.Truncate(name, n); err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("truncate %s to %d bytes", filepath.Base(name), n), -1
	case k >= 10:
		return damage(t, r, dir)
	case k < 4 && len(vlogs) > 0: // one byte of a value log
		name := pick(vlogs)
		off := flipRandom(t, r, filepath.Join(dir, name), 1)
		return fmt.Sprintf("flip 1 byte of %s at %v", name, off), 1
	case k < 5 && len(vlogs) > 0: // several bytes of a value log
		name := pick(vlogs)
		off := flipRandom(t, r, filepath.Join(dir, name), 2+r.IntN(8))
		return fmt.Sprintf("flip bytes of %s at %v", name, off), -1
	case k < 7 && len(tables) > 0:
		name := pick(tables)
		off := flipRandom(t, r, filepath.Join(dir, name), 1+r.IntN(3))
		return fmt.Sprintf("flip bytes of %s at %v", name, off), -1
	case k < 8:
		off := flipRandom(t, r, filepath.Join(dir, "MANIFEST"), 1)
		return fmt.Sprintf("flip 1 byte of MANIFEST at %v", off), 0
	default:
		names := []string{"MANIFEST", "KEYREGISTRY", "MANIFEST"}
		names = append(names, vlogs...)
		names = append(names, tables...)
		name := pick(names)
		if err := os.Remove(filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
		if name == "MANIFEST" || name == "KEYREGISTRY" {
			return "delete " + name, 0
		}
		return "delete " + name, -1
	}
}

func flipRandom(t *testing.T, r *rand.Rand, path string, n int) []int64 {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var offs []int64
	for range n {
		off := r.Int64N(int64(len(b)))
		b[off] ^= byte(1 + r.IntN(255))
		offs = append(offs, off)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return offs
}

// noPanic runs f, failing the test with the stack if it panics.
func noPanic(t *testing.T, what string, f func()) {
	t.Helper()
	defer func() {
		if p := recover(); p != nil {
			t.Fatalf("%s panicked: %v\n%s", what, p, debug.Stack())
		}
	}()
	f()
}

// inspect opens the store and reads all of it. It returns the ids of the
// checkpoints that Verify or reading found damaged, those not listed, and
// whether the store opened; it fails the test on anything read back wrong
// that Verify did not report.
func (f *corruptFixture) inspect(t *testing.T, dir string) (damaged, missing map[string]bool, opened bool) {
	t.Helper()
	damaged, missing = map[string]bool{}, map[string]bool{}
	var s *Store
	noPanic(t, "open", func() {
		var err error
		s, err = Open(dir)
		if err != nil {
			t.Logf("open refused: %v", err)
		}
	})
	if s == nil {
		return damaged, missing, false
	}
	defer s.Close()
	noPanic(t, "read", func() {
		list, err := s.List()
		if err != nil {
			t.Logf("list: %v", err)
			return
		}
		problems, err := s.Verify()
		if err != nil {
			t.Logf("verify: %v", err)
		}
		for _, p := range problems {
			for _, c := range f.cps {
				if strings.Contains(p, c.ID) {
					damaged[c.ID] = true
				}
			}
		}
		listed := map[string]bool{}
		for _, sum := range list {
			listed[sum.ID] = true
		}
		for i, want := range f.cps {
			if !listed[want.ID] {
				missing[want.ID] = true
				continue
			}
			c, err := s.Load(want.ID)
			if err != nil {
				damaged[want.ID] = true
				continue
			}
			if !sameCheckpoint(c, want) {
				if !damaged[want.ID] {
					t.Errorf("checkpoint %s loads changed and verify does not say so:\n%s", want.ID, diffCheckpoint(c, want))
				}
				continue
			}
			buf := make([]byte, image.PageSize)
			for ti, vmas := range f.layout[i] {
				for vi, fv := range vmas {
					for pi, ref := range c.Tasks[ti].VMAs[vi].Pages {
						err := s.ReadPage(ref.Hash, buf)
						if err != nil {
							if !damaged[want.ID] {
								t.Errorf("checkpoint %s: page unreadable (%v) and verify does not say so", want.ID, err)
							}
							continue
						}
						if string(buf) != string(page(fv.seed, fv.first+uint64(pi))) {
							t.Errorf("checkpoint %s: page reads back wrong", want.ID)
						}
					}
				}
			}
		}
	})
	return damaged, missing, true
}

// sameCheckpoint compares what the fixture's checkpoints hold.
func sameCheckpoint(a, b *image.Checkpoint) bool {
	if a.ID != b.ID || a.Name != b.Name || a.RootPID != b.RootPID || !a.Time.Equal(b.Time) ||
		a.Host != b.Host || a.Kernel != b.Kernel || len(a.Tasks) != len(b.Tasks) {
		return false
	}
	for i, x := range a.Tasks {
		y := b.Tasks[i]
		if x.PID != y.PID || x.PPID != y.PPID || x.Comm != y.Comm || x.State != y.State ||
			string(x.Cmdline) != string(y.Cmdline) || len(x.VMAs) != len(y.VMAs) ||
			len(x.Threads) != len(y.Threads) || len(x.FDs) != len(y.FDs) {
			return false
		}
		for j, v := range x.VMAs {
			w := y.VMAs[j]
			if v.Start != w.Start || v.End != w.End || v.Perms != w.Perms || v.Kind != w.Kind ||
				!reflect.DeepEqual(v.Pages, w.Pages) {
				return false
			}
		}
		for j, th := range x.Threads {
			if th.TID != y.Threads[j].TID || th.Comm != y.Threads[j].Comm || string(th.XState) != string(y.Threads[j].XState) {
				return false
			}
		}
		for j, fd := range x.FDs {
			if fd.Num != y.FDs[j].Num || fd.Path != y.FDs[j].Path || fd.Kind != y.FDs[j].Kind {
				return false
			}
		}
	}
	return true
}

func TestStoreCorruption(t *testing.T) {
	f := newCorruptFixture(t)
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("CKPTFS_CORRUPT_SEED"); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	t.Logf("seed %d (CKPTFS_CORRUPT_SEED)", seed)
	r := rand.New(rand.NewPCG(seed, 1))
	lostTotal, refused := 0, 0
	for trial := range corruptTrials(t) {
		dir := f.copy(t)
		what, maxLost := damage(t, r, dir)
		t.Run(strconv.Itoa(trial), func(t *testing.T) {
			t.Log(what)
			before, gone, opened := f.inspect(t, dir)
			if !opened {
				refused++
			}
			var rep *RepairReport
			noPanic(t, "repair", func() {
				var err error
				if rep, err = Repair(dir); err != nil {
					t.Fatalf("repair: %v", err)
				}
			})
			t.Logf("repair: kept %d, lost %v, problems %v", len(rep.Kept), rep.Lost, rep.Problems)
			after, afterGone, ok := f.inspect(t, dir)
			if !ok {
				t.Fatal("the repaired store does not open")
			}
			if len(after) > 0 {
				t.Fatalf("the repaired store has damage: %v", after)
			}
			kept := map[string]bool{}
			for _, k := range rep.Kept {
				kept[strings.Fields(k)[0]] = true
			}
			for _, c := range f.cps {
				if kept[c.ID] == afterGone[c.ID] {
					t.Errorf("checkpoint %s: kept %v by repair, listed %v after it", c.ID, kept[c.ID], !afterGone[c.ID])
				}
			}
			lost := 0
			for _, c := range f.cps {
				if kept[c.ID] {
					continue
				}
				lost++
				if opened && !before[c.ID] && !gone[c.ID] {
					t.Errorf("checkpoint %s lost by repair, but verify found it whole before", c.ID)
				}
			}
			lostTotal += lost
			if maxLost >= 0 && lost > maxLost {
				t.Errorf("%s cost %d checkpoints, want at most %d", what, lost, maxLost)
			}
			if len(rep.Kept)+len(rep.Lost) > len(f.cps) {
				t.Errorf("repair kept %v and lost %v of %d checkpoints", rep.Kept, rep.Lost, len(f.cps))
			}
		})
	}
	t.Logf("%d checkpoints lost in all, %d stores refused to open", lostTotal, refused)
}

// TestOpenRefusesDamage covers the two cases of issue 17 exactly: a byte
// flipped in the middle of the value log (Badger would cut it there) and
// a missing MANIFEST (Badger would start an empty store). Neither store
// is opened or changed; repair gets every checkpoint back.
func TestOpenRefusesDamage(t *testing.T) {
	f := newCorruptFixture(t)
	t.Run("FlippedVlogByte", func(t *testing.T) {
		dir := f.copy(t)
		vlogs, _ := filepath.Glob(filepath.Join(dir, "*.vlog"))
		var vlog string
		var size int64
		for _, v := range vlogs {
			if fi, _ := os.Stat(v); fi.Size() > size {
				vlog, size = v, fi.Size()
			}
		}
		// A byte of the page data of the first entries (one page).
		b, _ := os.ReadFile(vlog)
		b[logHeaderSize+100] ^= 1
		os.WriteFile(vlog, b, 0o600)
		_, err := Open(dir)
		if !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), "verify --repair") {
			t.Fatalf("open: %v, want ErrDamaged", err)
		}
		if fi, _ := os.Stat(vlog); fi.Size() != size {
			t.Fatalf("value log %d bytes after open, was %d", fi.Size(), size)
		}
		t.Log(err)
		rep, err := Repair(dir)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("kept %v lost %v problems %v", rep.Kept, rep.Lost, rep.Problems)
		// The damaged entry is the first pack's index record (format 4),
		// rebuilt from the pack's trailer: nothing is lost. (Were it a
		// page-table chunk, its checkpoint would be.)
		if len(rep.Lost) > 1 || len(rep.Kept) != len(f.cps)-len(rep.Lost) {
			t.Fatalf("kept %d lost %d, want %d and at most 1", len(rep.Kept), len(rep.Lost), len(f.cps)-len(rep.Lost))
		}
	})
	t.Run("MissingManifest", func(t *testing.T) {
		dir := f.copy(t)
		os.Remove(filepath.Join(dir, "MANIFEST"))
		_, err := Open(dir)
		if !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), "Badger MANIFEST is missing but value logs exist") {
			t.Fatalf("open: %v, want ErrDamaged", err)
		}
		if _, err := os.Stat(filepath.Join(dir, "MANIFEST")); err == nil {
			t.Fatal("open created a MANIFEST")
		}
		rep, err := Repair(dir)
		if err != nil {
			t.Fatal(err)
		}
		if len(rep.Kept) != len(f.cps) {
			t.Fatalf("kept %v lost %v, want all %d", rep.Kept, rep.Lost, len(f.cps))
		}
		s, err := Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		for i, c := range f.cps {
			got, err := s.Load(c.ID)
			if err != nil {
				t.Fatal(err)
			}
			checkReadable(t, s, got, f.layout[i]...)
		}
		if p, err := s.Verify(); err != nil || len(p) > 0 {
			t.Fatalf("verify after repair: %v %v", p, err)
		}
	})
}

func diffCheckpoint(a, b *image.Checkpoint) string {
	s := fmt.Sprintf("got  %s %q %d %v %q %q\nwant %s %q %d %v %q %q", a.ID, a.Name, a.RootPID, a.Time, a.Host, a.Kernel,
		b.ID, b.Name, b.RootPID, b.Time, b.Host, b.Kernel)
	for i, t := range a.Tasks {
		if i < len(b.Tasks) {
			s += fmt.Sprintf("\ntask %d: %+v\n   want %+v", i, *t, *b.Tasks[i])
			for j, v := range t.VMAs {
				if j < len(b.Tasks[i].VMAs) {
					s += fmt.Sprintf("\nvma %d: %d pages, want %d", j, len(v.Pages), len(b.Tasks[i].VMAs[j].Pages))
				}
			}
		}
	}
	return s
}

// TestScanLogTail tells a crash's torn last entry (left to Badger to cut)
// from a damaged one (refused), and finds entries after damage.
func TestScanLogTail(t *testing.T) {
	f := newCorruptFixture(t)
	vlogs, _ := filepath.Glob(filepath.Join(f.dir, "*.vlog"))
	var data []byte
	for _, v := range vlogs {
		if b, _ := os.ReadFile(v); len(b) > len(data) {
			data = b
		}
	}
	var entries []logEntry
	clean := scanLog(data, func(e logEntry) { entries = append(entries, e) })
	if clean.damagedAt >= 0 || clean.validEnd != len(data) || len(entries) < 10 {
		t.Fatalf("clean log: %+v, %d entries, %d bytes", clean, len(entries), len(data))
	}
	last := entries[len(entries)-1]
	// Torn: a prefix of the last entry, then zeros (the mapped file's rest).
	torn := append([]byte{}, data[:last.offset+last.size/2]...)
	torn = append(torn, make([]byte, 1<<20)...)
	if s := scanLog(torn, nil); s.damagedAt >= 0 || s.validEnd != last.offset {
		t.Errorf("torn tail: %+v, want valid to %d and no damage", s, last.offset)
	}
	// Damaged: one byte of the last entry's value flipped.
	flipped := append([]byte{}, data...)
	flipped[last.offset+last.size-10] ^= 1
	if s := scanLog(flipped, nil); s.damagedAt != last.offset {
		t.Errorf("flipped last entry: %+v, want damage at %d", s, last.offset)
	}
	// Damaged in the middle: the entries after it are found.
	mid := entries[len(entries)/2]
	flipped = append([]byte{}, data...)
	flipped[mid.offset+mid.size-10] ^= 1
	s := scanLog(flipped, nil)
	if s.damagedAt != mid.offset || s.lost != len(entries)-len(entries)/2-1 {
		t.Errorf("flipped middle entry: %+v, want damage at %d and %d entries after it", s, mid.offset, len(entries)-len(entries)/2-1)
	}
}
