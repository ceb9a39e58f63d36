package restorer

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// lazyServeEnv makes the test binary the lazy page server (TestMain).
const lazyServeEnv = "CKPTFS_TEST_LAZY_SERVE"

// lazyServeMain runs the page server when the test binary was started as
// one (Options.LazyServer below) and says whether it did.
func lazyServeMain() bool {
	if os.Getenv(lazyServeEnv) != "1" || len(os.Args) < 3 || os.Args[len(os.Args)-2] != "--since" {
		return false
	}
	ns, _ := strconv.ParseInt(os.Args[len(os.Args)-1], 10, 64)
	if err := ServeLazy(os.NewFile(3, "lazy-ctl"), time.Unix(0, ns), os.Stderr, nil); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(0)
	return true
}

// TestLazyRestoreGo restores a Go program lazily (its threads, signal
// handlers and the garbage collector run while pages come in), signals
// every thread, and checks that the page server leaves no fd behind.
func TestLazyRestoreGo(t *testing.T) {
	p := start(t, "go", 64)
	dir := dumpKill(t, p)
	before := len(p.ticks())
	t.Setenv(lazyServeEnv, "1")
	logPath := filepath.Join(t.TempDir(), "lazy.log")
	pid := restoreOpts(t, dir, Options{Lazy: true, LazyLog: logPath, LazyServer: []string{os.Args[0]}})
	p.waitTicks(t, 2)
	for _, th := range mustThreads(t, pid) {
		unix.Tgkill(pid, th, unix.SIGURG)
	}
	deadline := time.Now().Add(time.Minute)
	var log string
	for !strings.Contains(log, "all pages in, ") {
		if strings.Contains(log, "failures") || time.Now().After(deadline) {
			t.Fatalf("page server did not finish; log:\n%s", log)
		}
		time.Sleep(20 * time.Millisecond)
		b, _ := os.ReadFile(logPath)
		log = string(b)
	}
	t.Logf("page server log:\n%s", log)
	p.waitTicks(t, 2)
	for _, l := range p.ticks()[before:] {
		if !strings.HasSuffix(l, " ok") {
			t.Fatalf("restored process printed %q", l)
		}
	}
	// The server closes its userfaultfd before logging the end; the
	// task's own was closed before it ran.
	fds, _ := filepath.Glob(fmt.Sprintf("/proc/%d/fd/*", pid))
	for _, fd := range fds {
		if l, _ := os.Readlink(fd); strings.Contains(l, "userfaultfd") {
			t.Errorf("fd %s of the restored process is %s", filepath.Base(fd), l)
		}
	}
}
