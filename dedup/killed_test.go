package dedup

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/ckptfs/ckptfs/internal/testhold"
	badger "github.com/dgraph-io/badger/v4"
)

// TestOpenAfterKill: a process writing to a store (pages and commits) is
// SIGKILLed at a random moment, several times over. Every time the store
// opens (what the kill tore is only the end of a log, which Badger cuts
// as it should) and verifies clean: the open checks never take a crash
// for damage.
func TestOpenAfterKill(t *testing.T) {
	if os.Getenv("CKPTFS_TEST_WRITER") != "" {
		writeForever(os.Getenv("CKPTFS_TEST_WRITER"))
		return
	}
	n := 6
	if testing.Short() {
		n = 2
	}
	dir := filepath.Join(t.TempDir(), "store")
	r := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 3))
	for i := range n {
		cmd := exec.Command(os.Args[0], "-test.run=^TestOpenAfterKill$")
		cmd.Env = append(os.Environ(), "CKPTFS_TEST_WRITER="+dir, fmt.Sprintf("CKPTFS_TEST_SEED=%d", i))
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(100+r.IntN(600)) * time.Millisecond)
		cmd.Process.Kill()
		cmd.Wait()
		s, err := Open(dir)
		if err != nil {
			t.Fatalf("kill %d: open: %v", i, err)
		}
		problems, err := s.Verify()
		if err != nil || len(problems) > 0 {
			t.Fatalf("kill %d: verify: %v %v", i, problems, err)
		}
		list, _ := s.List()
		t.Logf("kill %d: %d checkpoints", i, len(list))
		s.Close()
	}
}

// writeForever dumps fake checkpoints into the store at dir until killed.
func writeForever(dir string) {
	s, err := Open(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	seed := uint64(time.Now().UnixNano())
	tb := &testing.T{}
	for i := uint64(0); ; i++ {
		dump(tb, s, "w", []fakeVMA{{seed: seed, first: i * 300, n: 300}})
	}
}

// TestKillDuringDumpAndGC: a process that dumps checkpoints sharing half
// their pages, removes old ones and runs gc (which drops and rewrites
// packs) in a loop is SIGKILLed at a random moment, several times over.
// Each time the store opens and verifies clean, every checkpoint listed
// reads back whole, a new dump goes in and reads back, and a gc leaves no
// pack that no index entry points to (what the kill left behind is freed).
func TestKillDuringDumpAndGC(t *testing.T) {
	if dir := os.Getenv("CKPTFS_TEST_DUMPGC"); dir != "" {
		dumpAndGCForever(dir)
		return
	}
	n := 8
	if testing.Short() {
		n = 3
	}
	dir := filepath.Join(t.TempDir(), "store")
	r := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 5))
	for i := range n {
		cmd := exec.Command(os.Args[0], "-test.run=^TestKillDuringDumpAndGC$")
		cmd.Env = append(os.Environ(), "CKPTFS_TEST_DUMPGC="+dir)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(200+r.IntN(1500)) * time.Millisecond)
		cmd.Process.Kill()
		cmd.Wait()
		s, err := Open(dir)
		if err != nil {
			t.Fatalf("kill %d: open: %v", i, err)
		}
		problems, err := s.Verify()
		if err != nil || len(problems) > 0 {
			t.Fatalf("kill %d: verify: %v %v", i, problems, err)
		}
		list, err := s.List()
		if err != nil {
			t.Fatal(err)
		}
		packs, _ := listPacks(dir)
		t.Logf("kill %d: %d checkpoints, %d packs", i, len(list), len(packs))
		after := []fakeVMA{{seed: 1000 + uint64(i), first: 0, n: 50}}
		c := dump(t, s, "after", after)
		checkReadable(t, s, c, after)
		if _, err := s.GC(); err != nil {
			t.Fatalf("kill %d: gc: %v", i, err)
		}
		if problems, err := s.Verify(); err != nil || len(problems) > 0 {
			t.Fatalf("kill %d: verify after gc: %v %v", i, problems, err)
		}
		used, err := indexedPacks(s)
		if err != nil {
			t.Fatal(err)
		}
		packs, _ = listPacks(dir)
		for _, p := range packs {
			if !used[p] {
				t.Errorf("kill %d: pack %s left after gc with no page indexed in it", i, p)
			}
		}
		if err := s.Remove(c.ID); err != nil {
			t.Fatal(err)
		}
		s.Close()
	}
}

// indexedPacks returns the packs the index points into.
func indexedPacks(s *Store) (map[packID]bool, error) {
	used := make(map[packID]bool)
	err := s.db.View(func(txn *badger.Txn) error {
		return readPackIndex(txn, func(r packRecord) error {
			if r.err != nil {
				return r.err
			}
			if len(r.entries) > 0 {
				used[r.id] = true
			}
			return nil
		})
	})
	return used, err
}

// dumpAndGCForever dumps checkpoints that share half their pages with the
// one before, keeps the newest two and runs gc, until killed.
func dumpAndGCForever(dir string) {
	s, err := Open(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	seed := uint64(time.Now().UnixNano())
	tb := &testing.T{}
	for i := uint64(0); ; i++ {
		dump(tb, s, "w", []fakeVMA{{seed: seed, first: i * 200, n: 400}})
		if i%2 == 0 {
			continue
		}
		list, err := s.List()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		for _, sum := range list[:max(0, len(list)-2)] {
			if err := s.Remove(sum.ID); err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
		}
		if _, err := s.GC(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
}

// TestKillAtEveryStoreStep kills a process exactly at each step of a
// dump's commit and of a gc that drops and rewrites packs (the hold points
// of internal/testhold): after each kill the store verifies clean, its
// checkpoints read back, and a later dump and gc work and leave no pack
// without indexed pages.
func TestKillAtEveryStoreStep(t *testing.T) {
	if dir := os.Getenv("CKPTFS_TEST_STEPS"); dir != "" {
		storeSteps(dir)
		return
	}
	for _, point := range []string{"pack-sealed", "commit-chunks", "gc-packs-written", "gc-index-moved", "gc-pack-removed"} {
		t.Run(point, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "store")
			cmd := exec.Command(os.Args[0], "-test.run=^TestKillAtEveryStoreStep$")
			cmd.Env = append(os.Environ(), "CKPTFS_TEST_STEPS="+dir, testhold.Env+"="+point)
			stderr, err := cmd.StderrPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			sc := bufio.NewScanner(stderr)
			held := false
			for sc.Scan() {
				if sc.Text() == "CKPTFS_HOLD "+point {
					held = true
					break
				}
			}
			cmd.Process.Kill()
			cmd.Wait()
			if !held {
				t.Fatalf("the writer never reached %s", point)
			}
			s, err := Open(dir)
			if err != nil {
				t.Fatalf("open: %v", err)
			}
			defer s.Close()
			if problems, err := s.Verify(); err != nil || len(problems) > 0 {
				t.Fatalf("verify: %v %v", problems, err)
			}
			list, err := s.List()
			if err != nil {
				t.Fatal(err)
			}
			for _, sum := range list {
				c, err := s.Load(sum.ID)
				if err != nil {
					t.Fatal(err)
				}
				switch sum.Name {
				case "b":
					checkReadable(t, s, c, stepsB)
				case "c":
					checkReadable(t, s, c, stepsC)
				}
			}
			t.Logf("%d checkpoints after the kill", len(list))
			after := []fakeVMA{{seed: 77, first: 0, n: 30}}
			c := dump(t, s, "after", after)
			checkReadable(t, s, c, after)
			if _, err := s.GC(); err != nil {
				t.Fatal(err)
			}
			if problems, err := s.Verify(); err != nil || len(problems) > 0 {
				t.Fatalf("verify after gc: %v %v", problems, err)
			}
			used, err := indexedPacks(s)
			if err != nil {
				t.Fatal(err)
			}
			packs, _ := listPacks(dir)
			for _, p := range packs {
				if !used[p] {
					t.Errorf("pack %s left after gc with no page indexed in it", p)
				}
			}
		})
	}
}

var (
	stepsA = []fakeVMA{{seed: 1, first: 0, n: 600}}
	stepsB = []fakeVMA{{seed: 1, first: 400, n: 600}} // shares 200 pages with a
	stepsC = []fakeVMA{{seed: 2, first: 0, n: 100}}
)

// storeSteps dumps a and b, removes a (its pack is then mostly dead: gc
// rewrites it; b's pack stays), dumps c, removes c (its pack is dropped)
// and runs gc: every hold point is passed on the way.
func storeSteps(dir string) {
	s, err := Open(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	tb := &testing.T{}
	a := dump(tb, s, "a", stepsA)
	dump(tb, s, "b", stepsB)
	c := dump(tb, s, "c", stepsC)
	if err := s.Remove(a.ID, c.ID); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	res, err := s.GC()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "gc %+v\n", res)
	os.Exit(0)
}

// TestMigrateKilled: a migrate of the golden v2 store killed after its
// pages moved, after its first checkpoint was converted, and after the
// pack index records were written (v2 and v3: before the p/ keys went),
// leaves a store that a second migrate finishes; it then reads exactly as the
// golden digest says and verifies clean.
func TestMigrateKilled(t *testing.T) {
	if dir := os.Getenv("CKPTFS_TEST_MIGRATE"); dir != "" {
		if _, err := Migrate(dir); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	for _, c := range []struct{ store, point string }{
		{"v2", "migrate-pages"}, {"v2", "migrate-checkpoint"}, {"v2", "migrate-index"}, {"v3", "migrate-index"},
	} {
		point := c.point
		t.Run(c.store+"/"+point, func(t *testing.T) {
			want, err := os.ReadFile(filepath.Join(goldenDir, c.store+".json"))
			if err != nil {
				t.Fatal(err)
			}
			dir := copyStore(t, filepath.Join(goldenDir, c.store))
			cmd := exec.Command(os.Args[0], "-test.run=^TestMigrateKilled$")
			cmd.Env = append(os.Environ(), "CKPTFS_TEST_MIGRATE="+dir, testhold.Env+"="+point)
			stderr, err := cmd.StderrPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			sc := bufio.NewScanner(stderr)
			held := false
			for sc.Scan() {
				if sc.Text() == "CKPTFS_HOLD "+point {
					held = true
					break
				}
			}
			cmd.Process.Kill()
			cmd.Wait()
			if !held {
				t.Fatalf("migrate never reached %s", point)
			}
			if _, err := Open(dir); !errors.Is(err, ErrOldStore) {
				t.Fatalf("open of a half-migrated store: %v, want it refused as old", err)
			}
			if _, err := Migrate(dir); err != nil {
				t.Fatalf("second migrate: %v", err)
			}
			s, err := Open(dir)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			got, _ := json.MarshalIndent(digestStore(t, s), "", "  ")
			if string(got)+"\n" != string(want) {
				t.Fatalf("the migrated store reads differently:\n%s\nwant:\n%s", got, want)
			}
			if p, err := s.Verify(); err != nil || len(p) > 0 {
				t.Fatalf("verify: %v %q", err, p)
			}
		})
	}
}
