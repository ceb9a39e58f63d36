package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// startRandomMemProcess starts a process with mib MiB of distinct pages
// (python3, os.urandom) and returns it once they are written.
func startRandomMemProcess(t testing.TB, mib int) *exec.Cmd {
	t.Helper()
	return startPython(t, "b = os.urandom("+strconv.Itoa(mib)+" << 20)")
}

// mustCkptfsToFiles runs ckptfs with stdout and stderr to files, not
// pipes: a restored process may keep them (its stdout was a pipe to the
// outside, restore's own stdout now), and Wait would wait for it.
func mustCkptfsToFiles(t testing.TB, args ...string) result {
	t.Helper()
	dir := t.TempDir()
	out, err := os.Create(filepath.Join(dir, "stdout"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	errOut, err := os.Create(filepath.Join(dir, "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	defer errOut.Close()
	cmd := exec.Command(filepath.Join(binDir, "ckptfs"), args...)
	cmd.Env = withoutStoreEnv()
	cmd.Stdout, cmd.Stderr = out, errOut
	err = cmd.Run()
	o, _ := os.ReadFile(out.Name())
	e, _ := os.ReadFile(errOut.Name())
	if err != nil {
		t.Fatalf("ckptfs %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, o, e)
	}
	return result{string(o), string(e), 0}
}

// screenBars returns the phases with a complete bar ("done in") on a
// screen, and fails the test if a line of it has a log line (prefix) in
// the middle of a bar.
func screenBars(t testing.TB, screen string, logPrefixes ...string) map[string]bool {
	t.Helper()
	bars := map[string]bool{}
	for _, l := range strings.Split(screen, "\n") {
		l = strings.TrimRight(cursorUp.ReplaceAllString(l, ""), "\r")
		for _, p := range logPrefixes {
			if i := strings.Index(l, p); i > 0 {
				t.Errorf("a log line interleaved with a bar: %q", l)
			}
		}
		if f := strings.Fields(l); len(f) > 0 && strings.Contains(l, "done in") {
			bars[f[0]] = true
		}
	}
	return bars
}

// noTerminalOutput fails the test if out has escape sequences or bars.
func noTerminalOutput(t testing.TB, what, out string) {
	t.Helper()
	if strings.ContainsAny(out, "\r\x1b") || strings.Contains(out, "done in") || strings.Contains(out, "ETA") {
		t.Errorf("%s: progress output without a terminal: %q", what, out)
	}
}

// phasesOf returns the phases of status lines, each with whether its
// last line said it was complete.
func phasesOf(status []map[string]any) map[string]bool {
	done := map[string]bool{}
	for _, m := range status {
		done[m["phase"].(string)] = m["bytes_done"] == m["bytes_total"] && m["bytes_total"].(float64) > 0
	}
	return done
}

// TestStoreProgressOnPty: verify and gc of a local store draw their phase
// bars (bytes, rate, ETA, then "done in") on a terminal, with their result
// line whole below them; on a pipe or with --quiet they draw nothing;
// with --json they print status lines that match the schema before their
// document.
func TestStoreProgressOnPty(t *testing.T) {
	needRoot(t)
	p := startRandomMemProcess(t, 24)
	pid := strconv.Itoa(p.Process.Pid)
	store := filepath.Join(t.TempDir(), "store")
	first := strings.TrimSpace(mustCkptfs(t, "dump", "-s", store, pid).stdout)
	second := strings.TrimSpace(mustCkptfs(t, "dump", "-s", store, pid).stdout)

	stdout, screen := runOnPty(t, "verify", "-s", store)
	bars := screenBars(t, screen)
	if !bars["verify"] || !bars["refs"] || !strings.HasPrefix(stdout, "ok: every page") {
		t.Errorf("verify on a terminal: bars %v, stdout %q; screen:\n%s", bars, stdout, screen)
	}
	if !strings.Contains(screen, "/s  done in") {
		t.Errorf("verify on a terminal: no rate:\n%s", screen)
	}
	noTerminalOutput(t, "verify on a pipe", mustCkptfs(t, "verify", "-s", store).stderr)
	if _, screen := runOnPty(t, "--quiet", "verify", "-s", store); strings.Contains(screen, "\x1b[") {
		t.Errorf("verify --quiet on a terminal: %q", screen)
	}
	r := mustCkptfs(t, "--json", "verify", "-s", store)
	status, doc := splitStatus(t, r.stdout)
	validate(t, "verify", doc)
	if ph := phasesOf(status); !ph["verify"] || !ph["refs"] {
		t.Errorf("verify --json: phases %v:\n%s", ph, r.stdout)
	}
	noTerminalOutput(t, "verify --json", r.stderr)

	// gc after rm of the first (the second has the same pages: nothing
	// freed) on a terminal, then of the second (every page freed: the
	// database reclaims the space) with --json.
	mustCkptfs(t, "rm", "-s", store, first)
	stdout, screen = runOnPty(t, "gc", "-s", store)
	bars = screenBars(t, screen)
	if !bars["mark"] || !bars["sweep"] || !strings.HasPrefix(stdout, "freed ") {
		t.Errorf("gc on a terminal: bars %v, stdout %q; screen:\n%s", bars, stdout, screen)
	}
	mustCkptfs(t, "rm", "-s", store, second)
	r = mustCkptfs(t, "--json", "gc", "-s", store)
	status, doc = splitStatus(t, r.stdout)
	validate(t, "gc", doc)
	if ph := phasesOf(status); !ph["sweep"] || !ph["reclaim"] {
		t.Errorf("gc --json: phases %v:\n%s", ph, r.stdout)
	}
	noTerminalOutput(t, "gc on a pipe", mustCkptfs(t, "gc", "-s", store).stderr)
}

// TestLazyFillProgressOnPty: restore --lazy --lazy-wait on a terminal
// draws the fill bar of the page server's background fill, complete,
// with the -v lines whole above it, and prints the pid once every page is
// in; on a pipe nothing is drawn; with --json the fill's status lines
// match the schema and end complete.
func TestLazyFillProgressOnPty(t *testing.T) {
	needRoot(t)
	p := startRandomMemProcess(t, 24)
	pid := p.Process.Pid
	store := filepath.Join(t.TempDir(), "store")
	mustCkptfs(t, "dump", "-s", store, strconv.Itoa(pid))
	mnt := t.TempDir()
	mustCkptfs(t, "mount", "--daemon", store, mnt)
	defer unmountRetry(mnt)
	killChild(p)
	waitGone(t, pid)
	kill := func() { unix.Kill(pid, unix.SIGKILL); waitGone(t, pid) }
	defer kill()
	lazyLog := filepath.Join(t.TempDir(), "lazy.log")
	latest := filepath.Join(mnt, "latest")

	stdout, screen := runOnPty(t, "restore", "-v", "--lazy", "--lazy-wait", "--lazy-log", lazyLog, latest)
	if strings.TrimSpace(stdout) != strconv.Itoa(pid) {
		t.Errorf("stdout %q, want the pid %d", stdout, pid)
	}
	bars := screenBars(t, screen, "restore: ")
	if !bars["fill"] || !strings.Contains(screen, "restore: lazy fill complete") {
		t.Errorf("lazy restore on a terminal: bars %v; screen:\n%s", bars, screen)
	}
	kill()

	r := mustCkptfsToFiles(t, "restore", "--lazy", "--lazy-wait", "--lazy-log", lazyLog, latest)
	noTerminalOutput(t, "lazy restore on a pipe", r.stderr)
	kill()

	r = mustCkptfsToFiles(t, "--json", "restore", "--lazy", "--lazy-wait", "--lazy-log", lazyLog, latest)
	msgs := validateLines(t, "restore_line", r.stdout)
	var fill []map[string]any
	for _, m := range msgs {
		if m["phase"] == "fill" {
			fill = append(fill, m)
		}
	}
	if ph := phasesOf(fill); !ph["fill"] || msgs[len(msgs)-1]["root_pid"] != float64(pid) {
		t.Errorf("lazy restore --json: fill lines %v:\n%s", fill, r.stdout)
	}
	if got := fill[len(fill)-1]["bytes_done"].(float64); got < 24<<20 {
		t.Errorf("lazy restore --json: %v bytes filled, want the 24 MiB at least", got)
	}
}

// TestLazyWaitNeedsLazy: --lazy-wait alone is a usage error.
func TestLazyWaitNeedsLazy(t *testing.T) {
	if r := ckptfs(t, "restore", "--lazy-wait", t.TempDir()); r.code != exitUsage || !strings.Contains(r.stderr, "--lazy-wait needs --lazy") {
		t.Errorf("restore --lazy-wait without --lazy: exit %d, %q", r.code, r.stderr)
	}
}

// TestLazyWaitBadPage: restore --lazy-wait of a copy of a checkpoint with
// one byte of a page changed: the page server poisons that page, the
// restore prints the pid (the program runs) and exits 1 saying the fill
// failed.
func TestLazyWaitBadPage(t *testing.T) {
	needRoot(t)
	p := startRandomMemProcess(t, 8)
	pid := p.Process.Pid
	store := filepath.Join(t.TempDir(), "store")
	mustCkptfs(t, "dump", "-s", store, strconv.Itoa(pid))
	mnt := t.TempDir()
	mustCkptfs(t, "mount", "--daemon", store, mnt)
	defer unmountRetry(mnt)
	cp := filepath.Join(t.TempDir(), "copy")
	if out, err := exec.Command("cp", "-a", filepath.Join(mnt, "latest")+"/", cp).CombinedOutput(); err != nil {
		t.Fatalf("cp -a: %v\n%s", err, out)
	}
	killChild(p)
	waitGone(t, pid)
	defer func() { unix.Kill(pid, unix.SIGKILL); waitGone(t, pid) }()

	// One byte of the first saved page of the largest vma (the 8 MiB).
	pagesFiles, _ := filepath.Glob(filepath.Join(cp, "tasks", "*", "vmas", "*", "pages"))
	var big string
	var bigSize int64
	for _, f := range pagesFiles {
		if st, err := os.Stat(f); err == nil && st.Size() > bigSize {
			big, bigSize = f, st.Size()
		}
	}
	pm, err := os.ReadFile(filepath.Join(filepath.Dir(big), "pagemap"))
	if err != nil {
		t.Fatal(err)
	}
	addr, err := strconv.ParseUint(strings.Fields(string(pm))[0], 0, 64)
	if err != nil {
		t.Fatal(err)
	}
	start, err := strconv.ParseUint(strings.SplitN(filepath.Base(filepath.Dir(big)), "-", 2)[0], 16, 64)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(big, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1)
	f.ReadAt(b, int64(addr-start)+100)
	b[0] ^= 0xff
	f.WriteAt(b, int64(addr-start)+100)
	f.Close()

	lazyLog := filepath.Join(t.TempDir(), "lazy.log")
	dir := t.TempDir()
	out, _ := os.Create(filepath.Join(dir, "stdout"))
	defer out.Close()
	var errOut strings.Builder
	cmd := exec.Command(filepath.Join(binDir, "ckptfs"), "restore", "--lazy", "--lazy-wait", "--lazy-log", lazyLog, cp)
	cmd.Env = withoutStoreEnv()
	cmd.Stdout, cmd.Stderr = out, &errOut
	err = cmd.Run()
	stdout, _ := os.ReadFile(out.Name())
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != exitError {
		t.Fatalf("restore --lazy-wait of a changed page: %v, want exit %d\n%s", err, exitError, errOut.String())
	}
	if strings.TrimSpace(string(stdout)) != strconv.Itoa(pid) || !strings.Contains(errOut.String(), "lazy fill failed") {
		t.Errorf("stdout %q, want the pid %d; stderr %q", stdout, pid, errOut.String())
	}
}
