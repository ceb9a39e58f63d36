package main

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"
)

// cursorUp is mpb's redraw: cursor up N lines, erase to the end.
var cursorUp = regexp.MustCompile("\x1b\\[[0-9]+A\x1b\\[J")

// startMemProcess starts a process with mib MiB of written memory (python3)
// and returns it once the memory is written.
func startMemProcess(t testing.TB, mib int) *exec.Cmd {
	t.Helper()
	return startPython(t, "b = bytearray(range(256)) * ("+strconv.Itoa(mib)+" << 12)")
}

// startPython runs python3 with setup, then waits until it has run it and
// keeps the process sleeping until the test ends.
func startPython(t testing.TB, setup string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("python3", "-c", "import os, time\n"+setup+"\nprint('ready', flush=True)\ntime.sleep(1000)")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Skipf("python3: %v", err)
	}
	t.Cleanup(func() { killChild(cmd) })
	buf := make([]byte, 6)
	if _, err := io.ReadFull(out, buf); err != nil {
		t.Fatal(err)
	}
	return cmd
}

// runOnPty runs ckptfs with stderr on a pty (120 columns) and returns
// stdout and what the terminal got.
func runOnPty(t testing.TB, args ...string) (stdout, screen string) {
	t.Helper()
	ptm, pts, err := pty.Open()
	if err != nil {
		t.Skipf("no pty: %v", err)
	}
	defer ptm.Close()
	if err := pty.Setsize(ptm, &pty.Winsize{Rows: 30, Cols: 120}); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(binDir, "ckptfs"), args...)
	cmd.Env = withoutStoreEnv()
	// stdout is a file, not a pipe Wait would wait on: a restored
	// process may keep it (its stdout was a pipe to the outside).
	out, err := os.CreateTemp(t.TempDir(), "stdout")
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	cmd.Stdout, cmd.Stderr = out, pts
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pts.Close()
	var term bytes.Buffer
	copied := make(chan struct{})
	go func() { io.Copy(&term, ptm); close(copied) }()
	err = cmd.Wait()
	<-copied // EIO once the last holder of the pts is gone
	if err != nil {
		t.Fatalf("ckptfs %s: %v\n%s", strings.Join(args, " "), err, term.String())
	}
	b, _ := os.ReadFile(out.Name())
	return string(b), term.String()
}

// TestProgressOnPty: with stderr on a terminal, dump draws its copy,
// store and commit bars (mpb, escape sequences), the -v phase lines are
// whole lines above them, and stdout has the id alone.
func TestProgressOnPty(t *testing.T) {
	needRoot(t)
	p := startMemProcess(t, 64)
	store := filepath.Join(t.TempDir(), "store")
	stdout, screen := runOnPty(t, "dump", "-v", "-s", store, strconv.Itoa(p.Process.Pid))
	for _, want := range []string{"dump: memory copied", "dump: pages stored, committed", "dumped 1 task(s)"} {
		if !strings.Contains(screen, want) {
			t.Errorf("no %q on the terminal:\n%s", want, screen)
		}
	}
	bars := map[string]bool{}
	for _, l := range strings.Split(screen, "\n") {
		l = strings.TrimRight(cursorUp.ReplaceAllString(l, ""), "\r")
		// A log line is a line of its own, never in the middle of a bar.
		if i := strings.Index(l, "dump: "); i > 0 && !strings.HasPrefix(l, "ckptfs: dump: ") {
			t.Errorf("a log line interleaved with a bar: %q", l)
		}
		if f := strings.Fields(l); len(f) > 0 && strings.Contains(l, "done in") {
			bars[f[0]] = true
		}
	}
	for _, b := range []string{"copy", "store"} {
		if !bars[b] {
			t.Errorf("no complete %s bar on the terminal:\n%s", b, screen)
		}
	}
	if !strings.Contains(screen, "\ncommit ") {
		t.Errorf("no commit line:\n%s", screen)
	}
	if id := strings.TrimSpace(stdout); len(id) == 0 || strings.ContainsAny(id, " \n\x1b") {
		t.Errorf("stdout is not the id alone: %q", stdout)
	}
}

// TestNoProgressWithoutTerminal: stderr a pipe (or --quiet on a terminal):
// no bars, no escape sequences.
func TestNoProgressWithoutTerminal(t *testing.T) {
	needRoot(t)
	p := startMemProcess(t, 16)
	store := filepath.Join(t.TempDir(), "store")
	r := mustCkptfs(t, "dump", "-s", store, strconv.Itoa(p.Process.Pid))
	if strings.ContainsAny(r.stderr, "\r\x1b") || strings.Contains(r.stderr, "copy ") {
		t.Errorf("progress on a pipe: %q", r.stderr)
	}
	if !strings.Contains(r.stderr, "dumped 1 task(s)") {
		t.Errorf("no summary line: %q", r.stderr)
	}
	_, screen := runOnPty(t, "dump", "--quiet", "-s", store, strconv.Itoa(p.Process.Pid))
	if strings.Contains(screen, "\x1b[") || strings.Contains(screen, "dumped") {
		t.Errorf("--quiet on a terminal: %q", screen)
	}
}

// TestRestoreProgressOnPty: a restore from a mount on a terminal draws its
// pages bar, complete, with the -v lines whole around it.
func TestRestoreProgressOnPty(t *testing.T) {
	needRoot(t)
	p := startMemProcess(t, 64)
	pid := p.Process.Pid
	store := filepath.Join(t.TempDir(), "store")
	mustCkptfs(t, "dump", "-s", store, strconv.Itoa(pid))
	mnt := t.TempDir()
	mustCkptfs(t, "mount", "--daemon", store, mnt)
	defer unmountRetry(mnt)
	killChild(p)
	waitGone(t, pid)
	stdout, screen := runOnPty(t, "restore", "-v", filepath.Join(mnt, "latest"))
	defer func() { unix.Kill(pid, unix.SIGKILL); waitGone(t, pid) }()
	if strings.TrimSpace(stdout) != strconv.Itoa(pid) {
		t.Errorf("stdout %q, want the pid %d", stdout, pid)
	}
	bars := map[string]bool{}
	for _, l := range strings.Split(screen, "\n") {
		l = strings.TrimRight(cursorUp.ReplaceAllString(l, ""), "\r")
		if i := strings.Index(l, "restore: "); i > 0 {
			t.Errorf("a log line interleaved with a bar: %q", l)
		}
		if f := strings.Fields(l); len(f) > 0 && strings.Contains(l, "done in") {
			bars[f[0]] = true
		}
	}
	// Pages read through the store's mount are checked by the store: the
	// restore's own verify has nothing to do, and no bar then.
	if !bars["pages"] || !strings.Contains(screen, "restore: done") {
		t.Errorf("bars %v; screen:\n%s", bars, screen)
	}
}

// unmountRetry unmounts a test's mount, waiting while it is busy.
func unmountRetry(mnt string) {
	for i := 0; i < 100 && unix.Unmount(mnt, 0) == unix.EBUSY; i++ {
		time.Sleep(50 * time.Millisecond)
	}
}
