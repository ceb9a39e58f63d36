package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// checkLog checks a diagnostics log: it starts and ends, every line is a
// slog record, and it has each of want.
func checkLog(t testing.TB, path string, want ...string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	log := string(b)
	for _, l := range strings.Split(strings.TrimSpace(log), "\n") {
		if !strings.HasPrefix(l, "time=") || !strings.Contains(l, " level=") {
			t.Errorf("not a log record: %q", l)
		}
	}
	for _, w := range append([]string{"msg=start", "msg=done"}, want...) {
		if !strings.Contains(log, w) {
			t.Errorf("log %s has no %q:\n%s", path, w, log)
		}
	}
	return log
}

// TestDiagnosticsLog: dump -o FILE --log-level debug records every phase
// and every injected call with its result in FILE; -v on stderr stays the
// phase summary; at the default level (info) there are no injected calls.
func TestDiagnosticsLog(t *testing.T) {
	needRoot(t)
	pid := startSleeper(t)
	dir := t.TempDir()
	store, debugLog, infoLog := filepath.Join(dir, "store"), filepath.Join(dir, "debug.log"), filepath.Join(dir, "info.log")
	r := mustCkptfs(t, "dump", "-v", "-s", store, "-o", debugLog, "--log-level", "debug", strconv.Itoa(pid))
	log := checkLog(t, debugLog, "level=DEBUG msg=inject", "msg=\"inject done\"", "line=\"dump: memory copied",
		"command=\"ckptfs dump-tracer\"")
	if !strings.Contains(log, "ret=0x") {
		t.Errorf("no injected call's result in the log")
	}
	if strings.Contains(r.stderr, "inject") || !strings.Contains(r.stderr, "dump: memory copied") {
		t.Errorf("-v output is not the phase summary:\n%s", r.stderr)
	}
	mustCkptfs(t, "dump", "-s", store, "-o", infoLog, strconv.Itoa(pid))
	if log := checkLog(t, infoLog, "msg=phase"); strings.Contains(log, "inject") {
		t.Errorf("injected calls at level info")
	}
	if r := ckptfs(t, "ls", "-s", store, "--log-level", "loud"); r.code != exitUsage {
		t.Errorf("--log-level loud: exit %d", r.code)
	}
}
