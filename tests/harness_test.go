package tests

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/dedup"
	"github.com/ckptfs/ckptfs/internal/proc"
)

// The end-to-end tests run the real ckptfs binary against real programs
// built here: a static C program, a glibc C program with pthreads, a Go
// program and a python3 script, each re-checking its memory as it runs.

var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error
)

// built returns the directory holding the ckptfs binary and the test programs.
func built(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "ckptfs-e2e-")
		if buildErr != nil {
			return
		}
		if buildErr = os.Chmod(buildDir, 0o755); buildErr != nil { // other users run it too
			return
		}
		_, file, _, _ := runtime.Caller(0)
		here := filepath.Dir(file)
		steps := [][]string{
			{"go", "build", "-o", filepath.Join(buildDir, "ckptfs"), "../cmd/ckptfs"},
			{"gcc", "-O1", "-g", "-static", "-o", filepath.Join(buildDir, "counter-static"), "progs/counter.c", "-lpthread"},
			{"gcc", "-O1", "-g", "-o", filepath.Join(buildDir, "counter-pthreads"), "progs/counter.c", "-lpthread"},
			{"go", "build", "-o", filepath.Join(buildDir, "gocounter"), "./progs/gocounter"},
			{"gcc", "-O2", "-o", filepath.Join(buildDir, "memhog"), "progs/memhog.c"},
			{"gcc", "-O1", "-o", filepath.Join(buildDir, "holder"), "progs/holder.c"},
			{"gcc", "-O1", "-o", filepath.Join(buildDir, "ipc"), "progs/ipc.c"},
			{"gcc", "-O1", "-o", filepath.Join(buildDir, "zombie"), "progs/zombie.c"},
		}
		for _, s := range steps {
			cmd := exec.Command(s[0], s[1:]...)
			cmd.Dir = here
			if out, err := cmd.CombinedOutput(); err != nil {
				buildErr = fmt.Errorf("%v: %v\n%s", s, err, out)
				return
			}
		}
		buildErr = copyFile(filepath.Join(here, "progs/counter.py"), filepath.Join(buildDir, "counter.py"))
	})
	if buildErr != nil {
		t.Fatalf("build: %v", buildErr)
	}
	return buildDir
}

// TestMain removes the directory of the binaries built for the tests and
// fails the run if a checkpoint the suite dumped would be refused by
// restore (restorable_test.go).
func TestMain(m *testing.M) {
	flag.Parse()             // -bench is read before the run (armRestorable)
	unarm := armRestorable() // restorable_test.go
	code := m.Run()
	if !reportRestorable() && code == 0 { // restorable_test.go
		code = 1
	}
	unarm()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

func copyFile(from, to string) error {
	b, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	return os.WriteFile(to, b, 0o644)
}

// ckptfs runs the binary and returns stdout; it fails the test on error.
func ckptfs(t testing.TB, args ...string) string {
	t.Helper()
	out, errOut, err := ckptfsErr(t, args...)
	if err != nil {
		t.Fatalf("ckptfs %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, out, errOut)
	}
	return out
}

// ckptfsErr runs the binary and returns stdout, stderr and the error. (The
// checkpoint of a successful dump is checked against restore's rules by
// the dump itself: restorable_test.go.)
func ckptfsErr(t testing.TB, args ...string) (string, string, error) {
	t.Helper()
	return ckptfsRun(t, args...)
}

// ckptfsRun runs the binary and returns stdout, stderr and the error.
func ckptfsRun(t testing.TB, args ...string) (string, string, error) {
	t.Helper()
	cmd := exec.Command(filepath.Join(built(t), "ckptfs"), args...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	return out.String(), errOut.String(), err
}

// lastLine returns the last non-empty line of s.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

// program is a test program started by a test, its output going to a file.
type program struct {
	Name string
	Cmd  *exec.Cmd
	Out  string // output file
	Pid  int
}

// progKinds are the program kinds every end-to-end test covers.
var progKinds = []string{"static", "pthreads", "go", "python"}

// startProgram starts a test program of the given kind with mib MiB of
// checked memory, waits until it printed its first tick, and kills it when
// the test ends.
func startProgram(t testing.TB, kind string, mib int) *program {
	t.Helper()
	dir := built(t)
	period := "100"
	var argv []string
	switch kind {
	case "static":
		argv = []string{filepath.Join(dir, "counter-static"), strconv.Itoa(mib), period, "0"}
	case "pthreads":
		argv = []string{filepath.Join(dir, "counter-pthreads"), strconv.Itoa(mib), period, "3"}
	case "go":
		argv = []string{filepath.Join(dir, "gocounter"), strconv.Itoa(mib), period}
	case "holder-tcp", "holder-uring", "holder-device", "holder-pty":
		argv = []string{filepath.Join(dir, "holder"), strings.TrimPrefix(kind, "holder-")}
	case "ipc-pair", "ipc-loop", "ipc-shm", "ipc-deleted":
		argv = []string{filepath.Join(dir, "ipc"), strings.TrimPrefix(kind, "ipc-")}
	case "zombie", "zombie-files", "zombie-files-siblings":
		argv = []string{filepath.Join(dir, "zombie"), strings.TrimPrefix(kind, "zombie-")}
	case "python":
		argv = []string{"python3", filepath.Join(dir, "counter.py"), strconv.Itoa(mib), period}
	default:
		t.Fatalf("unknown program kind %q", kind)
	}
	return startArgv(t, kind, argv)
}

// startArgv starts argv in a process group of its own, stdin /dev/null and
// output to a file, waits until it printed its first tick, and kills it
// when the test ends.
func startArgv(t testing.TB, name string, argv []string) *program {
	t.Helper()
	out := filepath.Join(t.TempDir(), strings.ReplaceAll(name, " ", "-")+".out")
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	devnull, _ := os.Open(os.DevNull)
	defer devnull.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = devnull, f, f
	cmd.SysProcAttr = &unix.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Not reaped in the background: a waiting goroutine would also take
	// the ptrace stops of in-process dumps. kill reaps it.
	p := &program{Name: name, Cmd: cmd, Out: out, Pid: cmd.Process.Pid}
	t.Cleanup(p.kill)
	p.waitTicks(t, 1)
	return p
}

// checkUnharmed checks what a failed or refused dump must leave: the
// program running, untraced, printing good ticks, and no checkpoint.
func (p *program) checkUnharmed(t testing.TB, store string) {
	t.Helper()
	if ok, state := running(p.Pid); !ok {
		t.Fatalf("%s (pid %d) in state %s after the failed dump", p.Name, p.Pid, state)
	}
	status, _ := os.ReadFile("/proc/" + itoa(p.Pid) + "/status")
	if !strings.Contains(string(status), "TracerPid:\t0\n") {
		t.Fatalf("%s (pid %d) still traced after the failed dump", p.Name, p.Pid)
	}
	noCheckpoint(t, store)
	p.waitTicks(t, 2)
	p.checkHealthy(t)
}

// kill kills and reaps the program (once).
func (p *program) kill() {
	if p.Cmd == nil {
		return
	}
	_ = unix.Kill(p.Pid, unix.SIGKILL)
	_ = p.Cmd.Wait()
	p.Cmd = nil
}

// ticks returns the tick lines printed so far.
func (p *program) ticks() []string {
	b, _ := os.ReadFile(p.Out)
	var lines []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if strings.Contains(sc.Text(), " tick ") {
			lines = append(lines, sc.Text())
		}
	}
	return lines
}

// waitTicks waits until the program printed n more tick lines than it had.
func (p *program) waitTicks(t testing.TB, n int) []string {
	t.Helper()
	start := len(p.ticks())
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if l := p.ticks(); len(l) >= start+n {
			return l
		}
		time.Sleep(20 * time.Millisecond)
	}
	b, _ := os.ReadFile(p.Out)
	t.Fatalf("%s (pid %d) printed no new tick in 20s; output:\n%s", p.Name, p.Pid, b)
	return nil
}

// checkHealthy fails unless every line of output is a good tick.
func (p *program) checkHealthy(t testing.TB) {
	t.Helper()
	b, _ := os.ReadFile(p.Out)
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		// NULs: a test blanked the output before a restore (redump_test.go).
		if line = strings.Trim(line, "\x00"); line == "" {
			continue
		}
		if !strings.HasSuffix(line, " ok") {
			t.Fatalf("%s (pid %d) printed %q; output:\n%s", p.Name, p.Pid, line, b)
		}
	}
}

// running reports whether pid exists and is not a zombie or stopped.
func running(pid int) (bool, string) {
	st, err := stat(pid)
	if err != nil {
		return false, "gone"
	}
	return st.State == "R" || st.State == "S" || st.State == "D", st.State
}

// stat reads /proc/<pid>/stat with the dumper's own parser.
func stat(pid int) (proc.Stat, error) {
	b, err := proc.Read(pid, "stat")
	if err != nil {
		return proc.Stat{}, err
	}
	return proc.ParseStat(b)
}

// waitGone waits until /proc/<pid> disappears (init here reaps late).
func waitGone(t testing.TB, pid int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		var ws unix.WaitStatus
		unix.Wait4(pid, &ws, unix.WNOHANG, nil) // reap it if it is ours (child or orphan we reap)
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); os.IsNotExist(err) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("pid %d still exists after 30s", pid)
}

func itoa(n int) string { return strconv.Itoa(n) }

var (
	progMu    sync.Mutex
	progBuilt = map[string]error{}
)

// buildProg compiles tests/progs/<name>.c (once per test binary) into the
// build directory with the given extra gcc flags and returns its path.
func buildProg(t testing.TB, name string, flags ...string) string {
	t.Helper()
	dir := built(t)
	out := filepath.Join(dir, name)
	progMu.Lock()
	defer progMu.Unlock()
	err, done := progBuilt[name]
	if !done {
		_, file, _, _ := runtime.Caller(0)
		args := append([]string{"-O1", "-g", "-Wall", "-o", out, "progs/" + name + ".c"}, flags...)
		cmd := exec.Command("gcc", args...)
		cmd.Dir = filepath.Dir(file)
		if b, e := cmd.CombinedOutput(); e != nil {
			err = fmt.Errorf("gcc %s: %v\n%s", name, e, b)
		}
		progBuilt[name] = err
	}
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// noCheckpoint fails if store holds a checkpoint. A store that a failed
// first dump would have created must not exist at all.
func noCheckpoint(t testing.TB, store string) {
	t.Helper()
	if ok, err := dedup.IsStore(store); err == nil && !ok {
		return // missing or empty: ls would refuse it
	}
	if out := ckptfs(t, "ls", "-s", store); strings.Count(strings.TrimSpace(out), "\n") > 0 {
		t.Fatalf("failed dump left a checkpoint:\n%s", out)
	}
}
