package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/dedup"
	"github.com/ckptfs/ckptfs/image"
)

// newStore makes an empty store in a temporary directory.
func newStore(t testing.TB) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "store")
	s, err := dedup.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestExitUsage(t *testing.T) {
	store := newStore(t)
	for _, args := range [][]string{
		{"frob"},
		{"ls", "--bogus"},
		{"ls"}, // no -s and no $CKPTFS_STORE
		{"ls", "-s", store, "extra"},
		{"dump", "-s", store, "notapid"},
		{"dump", "-s", store},
		{"mount", t.TempDir()},        // one argument, no store
		{"mount", store},              // the store given as the mount point
		{"mount", t.TempDir(), store}, // swapped
		{"restore"},
	} {
		r := ckptfs(t, args...)
		if r.code != exitUsage {
			t.Errorf("ckptfs %s: exit %d, want %d (usage)\n%s", strings.Join(args, " "), r.code, exitUsage, r.stderr)
		}
		if !strings.Contains(r.stderr, "ckptfs:") {
			t.Errorf("ckptfs %s: no error message: %q", strings.Join(args, " "), r.stderr)
		}
	}
	if r := ckptfs(t, "mount", store); !strings.Contains(r.stderr, "give the mount point too") {
		t.Errorf("mount STORE: %q", r.stderr)
	}
}

func TestExitOK(t *testing.T) {
	store := newStore(t)
	for _, args := range [][]string{{"ls", "-s", store}, {"version"}, {"--version"}, {"check"}, {"stats", "-s", store}} {
		if r := ckptfs(t, args...); r.code != exitOK {
			t.Errorf("ckptfs %s: exit %d\n%s", strings.Join(args, " "), r.code, r.stderr)
		}
	}
}

func TestExitNoStore(t *testing.T) {
	empty := t.TempDir()
	for _, args := range [][]string{
		{"ls", "-s", filepath.Join(empty, "missing")},
		{"stats", "-s", empty},
		{"verify", "-s", empty},
		{"gc", "-s", empty},
	} {
		if r := ckptfs(t, args...); r.code != exitNoStore {
			t.Errorf("ckptfs %s: exit %d, want %d\n%s", strings.Join(args, " "), r.code, exitNoStore, r.stderr)
		}
	}
}

func TestExitError(t *testing.T) {
	// A directory that is no checkpoint: an error, nothing else.
	if r := ckptfs(t, "restore", t.TempDir()); r.code != exitError {
		t.Errorf("restore of an empty directory: exit %d\n%s", r.code, r.stderr)
	}
}

// TestExitLocked holds the store open in this process (which does not
// serve it): ls gives up after its wait with exit status 11.
func TestExitLocked(t *testing.T) {
	store := newStore(t)
	s, err := dedup.Open(store)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	r := ckptfs(t, "--json", "ls", "-s", store)
	if r.code != exitLocked {
		t.Fatalf("ls of a locked store: exit %d\n%s", r.code, r.stderr)
	}
	var m errorMessage
	if err := json.Unmarshal([]byte(lastLine(r.stderr)), &m); err != nil || m.Code != exitLocked || m.CodeName != "locked" {
		t.Errorf("--json error %q: %+v %v", r.stderr, m, err)
	}
}

// TestExitDamaged stores a page under a hash that is not its own: verify
// finds it and exits 12.
func TestExitDamaged(t *testing.T) {
	store := newStore(t)
	s, err := dedup.Open(store)
	if err != nil {
		t.Fatal(err)
	}
	page := make([]byte, image.PageSize)
	copy(page, "not the page of that hash")
	wrong := dedup.Sum([]byte(strings.Repeat("x", image.PageSize)))
	if _, err := s.PutPages([]image.Hash{wrong}, [][]byte{page}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	r := ckptfs(t, "verify", "-s", store)
	if r.code != exitDamaged {
		t.Fatalf("verify of a damaged store: exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	r = ckptfs(t, "--json", "verify", "-s", store)
	var v verifyResult
	_, doc := splitStatus(t, r.stdout) // status lines, then the document
	if err := json.Unmarshal([]byte(doc), &v); err != nil || v.OK || len(v.Problems) == 0 || r.code != exitDamaged {
		t.Errorf("verify --json: exit %d, %+v %v\n%s", r.code, v, err, r.stdout)
	}
}

// TestExitRefused dumps a process that holds a TCP socket neither bound
// nor connected: refused, exit status 3, and the process runs on.
func TestExitRefused(t *testing.T) {
	needRoot(t)
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "tcp")
	defer f.Close()
	pid := startSleeper(t, f)
	store := filepath.Join(t.TempDir(), "store")
	r := ckptfs(t, "dump", "-s", store, strconv.Itoa(pid))
	if r.code != exitRefused {
		t.Fatalf("dump of a process with a TCP socket: exit %d\n%s", r.code, r.stderr)
	}
	if !strings.Contains(r.stderr, "cannot checkpoint") {
		t.Errorf("refusal does not say why: %q", r.stderr)
	}
	if err := unix.Kill(pid, 0); err != nil {
		t.Errorf("the refused process is gone: %v", err)
	}
}

// TestExitInterrupted: a dump waiting for a busy store gets SIGINT and
// exits 130, having done nothing.
func TestExitInterrupted(t *testing.T) {
	needRoot(t)
	pid := startSleeper(t)
	store := newStore(t)
	s, err := dedup.Open(store)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	cmd := exec.Command(filepath.Join(binDir, "ckptfs"), "dump", "-s", store, strconv.Itoa(pid))
	cmd.Env = withoutStoreEnv()
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(stderr)
	var seen []string
	for sc.Scan() {
		seen = append(seen, sc.Text())
		if strings.Contains(sc.Text(), "waiting for its turn") {
			break
		}
	}
	cmd.Process.Signal(os.Interrupt)
	for sc.Scan() {
		seen = append(seen, sc.Text())
	}
	err = cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != exitInterrupted {
		t.Fatalf("interrupted dump: %v, want exit %d\n%s", err, exitInterrupted, strings.Join(seen, "\n"))
	}
}

// TestExitCodeMapping checks the one mapping from errors to statuses.
func TestExitCodeMapping(t *testing.T) {
	for _, c := range []struct {
		err  error
		want int
	}{
		{nil, 0},
		{errors.New("x"), 1},
		{usageErr(errors.New("x")), 2},
		{wrap(&dumperUnsupported), 3},
		{wrap(dedup.ErrNotStore), 10},
		{wrap(dedup.ErrLocked), 11},
		{wrap(dedup.ErrBusy), 11},
		{wrap(errDamage), 12},
		{wrap(dedup.ErrPageCorrupt), 12},
		{wrap(restorerMismatch), 12},
		{wrap(dumperAborted), 130},
	} {
		if got := exitCodeOf(c.err); got != c.want {
			t.Errorf("exitCodeOf(%v) = %d, want %d", c.err, got, c.want)
		}
	}
}

// lastLine returns the last non-empty line of s.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
