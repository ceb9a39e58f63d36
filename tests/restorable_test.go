package tests

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ckptfs/ckptfs/dedup"
	"github.com/ckptfs/ckptfs/dumper"
	"github.com/ckptfs/ckptfs/image"
	"github.com/ckptfs/ckptfs/restorer"
)

// Every checkpoint a dump of the suite commits is checked against the
// rules restore refuses by (restorer.Refusals, the tree half of restore's
// preflight): a dump that succeeds must be one a restore does not refuse.
// TestMain sets CKPTFS_TEST_RESTORABLE, so every dump (the ckptfs binary
// however a test runs it, --track and --every included, and dumper.Dump
// called here) loads what it committed back from its store, checks it and
// logs the verdict (dumper/restorable.go); TestMain reports the count and
// fails the run if any was refused or could not be checked.

var restorableLog string

// armRestorable sets up the check for the whole run; the returned func
// removes the log.
func armRestorable() (cleanup func()) {
	if benchmarking() {
		return func() {} // the check would be timed with the dumps
	}
	dir, err := os.MkdirTemp("", "ckptfs-restorable-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "restorable:", err)
		return func() {}
	}
	os.Chmod(dir, 0o777) // dumps run by other users log here too
	restorableLog = filepath.Join(dir, "log")
	if err := os.WriteFile(restorableLog, nil, 0o666); err == nil {
		os.Chmod(restorableLog, 0o666) // less the umask
	}
	os.Setenv(dumper.RestorableEnv, restorableLog)
	dumper.RestoreRules = restorer.Refusals
	return func() { os.RemoveAll(dir) }
}

// reportRestorable prints what the dumps logged; false if a checkpoint
// was refused or left unchecked.
func reportRestorable() bool {
	if restorableLog == "" {
		return true
	}
	l, err := dumper.ReadRestorableLog(restorableLog)
	if err != nil {
		fmt.Fprintln(os.Stderr, "restorable:", err)
		return false
	}
	if l.Checked > 0 {
		fmt.Fprintf(os.Stderr, "restorable: %d checkpoints dumped by the suite checked against restore's rules, %d refused or unchecked\n", l.Checked, len(l.Bad))
	}
	for _, b := range l.Bad {
		fmt.Fprintln(os.Stderr, "restorable:", b)
	}
	return len(l.Bad) == 0
}

// loggedRestorable returns the log's verdict line for checkpoint id.
func loggedRestorable(t testing.TB, id string) string {
	t.Helper()
	b, err := os.ReadFile(restorableLog)
	if err != nil {
		t.Fatalf("restorable log: %v", err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[1] == id {
			return l
		}
	}
	return ""
}

// TestDumpedCheckpointsRestorable checks the checker: a dump by the
// binary and a dump by dumper.Dump in this process are each logged as
// restorable; a checkpoint the rules refuse is logged as refused (into a
// log of its own, so the run does not fail for it).
func TestDumpedCheckpointsRestorable(t *testing.T) {
	if benchmarking() {
		t.Skip("not armed with -bench: the check would be timed with the dumps")
	}
	if restorableLog == "" {
		t.Fatal("TestMain did not arm the check")
	}
	p := startProgram(t, "static", 1)
	store := t.TempDir() + "/store"
	id := lastLine(ckptfs(t, "dump", "-s", store, itoa(p.Pid)))
	if l := loggedRestorable(t, id); !strings.HasPrefix(l, "ok ") {
		t.Fatalf("dump of %s logged %q, want ok", id, l)
	}
	repo, err := dedup.Open(t.TempDir() + "/store2")
	if err != nil {
		t.Fatal(err)
	}
	res, err := dumper.Dump(repo, p.Pid, dumper.Options{})
	repo.Close()
	if err != nil {
		t.Fatal(err)
	}
	if l := loggedRestorable(t, res.Checkpoint.ID); !strings.HasPrefix(l, "ok ") {
		t.Fatalf("dumper.Dump of %s logged %q, want ok", res.Checkpoint.ID, l)
	}

	own := filepath.Join(t.TempDir(), "log")
	t.Setenv(dumper.RestorableEnv, own)
	rules := dumper.RestoreRules
	t.Cleanup(func() { dumper.RestoreRules = rules })
	dumper.RestoreRules = func(*image.Checkpoint) error { return errors.New("refused on purpose") }
	repo, err = dedup.Open(t.TempDir() + "/store3")
	if err != nil {
		t.Fatal(err)
	}
	res, err = dumper.Dump(repo, p.Pid, dumper.Options{})
	repo.Close()
	if err != nil {
		t.Fatal(err)
	}
	l, err := dumper.ReadRestorableLog(own)
	if err != nil || l.Checked != 1 || len(l.Bad) != 1 || !strings.Contains(l.Bad[0], `refused `+res.Checkpoint.ID+` "refused on purpose"`) {
		t.Fatalf("a refused checkpoint logged %+v (%v)", l, err)
	}
	if _, errOut, err := ckptfsRun(t, "restorable", "-s", store, "nosuchid"); err == nil {
		t.Fatalf("restorable of a missing checkpoint succeeded\n%s", errOut)
	}
}

// benchmarking says whether the run was asked for benchmarks (-bench).
func benchmarking() bool {
	f := flag.Lookup("test.bench")
	return f != nil && f.Value.String() != ""
}
