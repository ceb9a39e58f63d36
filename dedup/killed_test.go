package dedup

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
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
