package tests

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/ckptfs/ckptfs/dedup"
	"github.com/ckptfs/ckptfs/dumper"
)

// openStore opens a store directly (no mount holds it in these tests).
func openStore(t *testing.T, dir string) *dedup.Store {
	t.Helper()
	s, err := dedup.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestDumpTwice dumps each program kind twice while it runs: both dumps are
// listed, the program keeps running with intact memory, verify is clean,
// the second dump adds at most 1% of the memory, and rm of the first plus
// gc shrinks the store while the second still verifies.
func TestDumpTwice(t *testing.T) {
	for _, kind := range progKinds {
		t.Run(kind, func(t *testing.T) {
			p := startProgram(t, kind, 32)
			store := filepath.Join(t.TempDir(), "store")
			id1 := lastLine(ckptfs(t, "dump", "-s", store, "--name", "first", itoa(p.Pid)))
			p.waitTicks(t, 2)
			id2 := lastLine(ckptfs(t, "dump", "-s", store, itoa(p.Pid)))
			p.waitTicks(t, 2)
			p.checkHealthy(t)
			if ok, state := running(p.Pid); !ok {
				t.Fatalf("program state %s after dumps", state)
			}
			ls := ckptfs(t, "ls", "-s", store)
			if !strings.Contains(ls, id1) || !strings.Contains(ls, id2) || !strings.Contains(ls, "first") {
				t.Fatalf("ls does not list %s (first) and %s:\n%s", id1, id2, ls)
			}
			ckptfs(t, "verify", "-s", store)

			s := openStore(t, store)
			list, err := s.List()
			if err != nil {
				t.Fatal(err)
			}
			if len(list) != 2 {
				t.Fatalf("store lists %d checkpoints", len(list))
			}
			second := list[1]
			if second.MemoryBytes < 30<<20 {
				t.Errorf("second dump holds %d bytes of memory, want >= 30 MiB (32 less a zeroed MiB)", second.MemoryBytes)
			}
			if second.BytesAdded*100 > second.MemoryBytes {
				t.Errorf("second dump added %d bytes, more than 1%% of its %d bytes", second.BytesAdded, second.MemoryBytes)
			}
			t.Logf("%s: memory %d KiB, first added %d KiB, second added %d KiB (%.3f%%)", kind,
				second.MemoryBytes>>10, list[0].BytesAdded>>10, second.BytesAdded>>10,
				100*float64(second.BytesAdded)/float64(second.MemoryBytes))
			before, err := s.Stats()
			if err != nil {
				t.Fatal(err)
			}
			s.Close()

			ckptfs(t, "rm", "-s", store, id1)
			ckptfs(t, "gc", "-s", store)
			s = openStore(t, store)
			after, err := s.Stats()
			if err != nil {
				t.Fatal(err)
			}
			if after.PageBytes >= before.PageBytes {
				t.Errorf("gc did not shrink the store: %d -> %d page bytes", before.PageBytes, after.PageBytes)
			}
			if _, err := s.Load(id2); err != nil {
				t.Errorf("second checkpoint after gc: %v", err)
			}
			s.Close()
			ckptfs(t, "verify", "-s", store)
			p.waitTicks(t, 1)
			p.checkHealthy(t)
		})
	}
}

// TestFailedDumpHarmsNothing makes a dump fail after part of the memory
// was stored: the error is reported, no checkpoint appears and the program
// runs on, untraced and with intact memory.
func TestFailedDumpHarmsNothing(t *testing.T) {
	for _, kind := range []string{"static", "pthreads", "go"} {
		t.Run(kind, func(t *testing.T) {
			p := startProgram(t, kind, 32)
			s := openStore(t, filepath.Join(t.TempDir(), "store"))
			defer s.Close()
			_, err := dumper.Dump(s, p.Pid, dumper.Options{FailAfterPages: 1000})
			if err == nil || !strings.Contains(err.Error(), "injected failure") {
				t.Fatalf("dump error = %v, want the injected failure", err)
			}
			list, err := s.List()
			if err != nil || len(list) != 0 {
				t.Fatalf("failed dump left checkpoints %v (%v)", list, err)
			}
			if ok, state := running(p.Pid); !ok {
				t.Fatalf("program state %s after failed dump", state)
			}
			status, _ := os.ReadFile("/proc/" + itoa(p.Pid) + "/status")
			if !strings.Contains(string(status), "TracerPid:\t0\n") {
				t.Fatalf("program still traced after failed dump")
			}
			p.waitTicks(t, 2)
			p.checkHealthy(t)
		})
	}
}

// TestDumpBadInput checks the errors for an unknown pid, no permission and
// a missing store argument.
func TestDumpBadInput(t *testing.T) {
	store := filepath.Join(t.TempDir(), "store")
	_, stderr, err := ckptfsErr(t, "dump", "-s", store, "999999999")
	if err == nil || !strings.Contains(stderr, "no such process") {
		t.Errorf("unknown pid: err=%v stderr=%q", err, stderr)
	}
	if _, err := os.Stat(store); !os.IsNotExist(err) {
		t.Errorf("a failed first dump left the store %s behind (%v)", store, err)
	}
	_, stderr, err = ckptfsErr(t, "ls", "-s", store)
	if err == nil || !strings.Contains(stderr, "does not exist") {
		t.Errorf("ls of a missing store: err=%v stderr=%q", err, stderr)
	}
	_, stderr, err = ckptfsErr(t, "dump", "1")
	if err == nil || !strings.Contains(stderr, "no store") {
		t.Errorf("no store: err=%v stderr=%q", err, stderr)
	}

	p := startProgram(t, "static", 4)
	open := filepath.Join(os.TempDir(), "ckptfs-nobody-"+itoa(os.Getpid()))
	if err := os.MkdirAll(open, 0o777); err != nil {
		t.Fatal(err)
	}
	os.Chmod(open, 0o777)
	defer os.RemoveAll(open)
	cmd := exec.Command(filepath.Join(built(t), "ckptfs"), "dump", "-s", filepath.Join(open, "store"), itoa(p.Pid))
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "permission") {
		t.Errorf("dump as nobody of a root process: err=%v output=%q", err, out)
	}
	if ok, state := running(p.Pid); !ok {
		t.Fatalf("program state %s after refused dump", state)
	}
	p.waitTicks(t, 1)
	p.checkHealthy(t)
}
