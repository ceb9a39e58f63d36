package restorer

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
	"github.com/ckptfs/ckptfs/dumper"
	"github.com/ckptfs/ckptfs/image"
	"github.com/ckptfs/ckptfs/internal/proc"
)

// The end-to-end tests start a real program (tests/progs), dump it with
// the dumper into a store, kill it, write the checkpoint as plain files and
// restore from them.

var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error
)

func built(t testing.TB) string {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: end-to-end restore (builds test programs, traces them)")
	}
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "ckptfs-restorer-")
		if buildErr != nil {
			return
		}
		// Programs that leave root map their exe from here: the restore
		// opens it as their uid.
		if buildErr = os.Chmod(buildDir, 0o755); buildErr != nil {
			return
		}
		steps := [][]string{
			{"gcc", "-O1", "-g", "-static", "-o", filepath.Join(buildDir, "counter-static"), "../tests/progs/counter.c", "-lpthread"},
			{"gcc", "-O1", "-g", "-o", filepath.Join(buildDir, "counter-pthreads"), "../tests/progs/counter.c", "-lpthread"},
			{"go", "build", "-o", filepath.Join(buildDir, "gocounter"), "../tests/progs/gocounter"},
		}
		for _, s := range steps {
			if out, err := exec.Command(s[0], s[1:]...).CombinedOutput(); err != nil {
				buildErr = fmt.Errorf("%v: %v\n%s", s, err, out)
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatalf("build: %v", buildErr)
	}
	return buildDir
}

type program struct {
	pid    int
	out    string
	cmd    *exec.Cmd
	reaped bool
}

func argv(t testing.TB, kind string, mib int) []string {
	dir := built(t)
	m := strconv.Itoa(mib)
	switch kind {
	case "static":
		return []string{filepath.Join(dir, "counter-static"), m, "100", "0"}
	case "pthreads":
		return []string{filepath.Join(dir, "counter-pthreads"), m, "100", "3"}
	case "go":
		return []string{filepath.Join(dir, "gocounter"), m, "100"}
	case "python":
		return []string{"python3", "../tests/progs/counter.py", m, "100"}
	}
	t.Fatalf("unknown kind %s", kind)
	return nil
}

func start(t testing.TB, kind string, mib int) *program {
	t.Helper()
	return startArgv(t, argv(t, kind, mib))
}

var execCommand = exec.Command

func startArgv(t testing.TB, a []string) *program {
	t.Helper()
	out := filepath.Join(t.TempDir(), filepath.Base(a[0])+".out")
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command(a[0], a[1:]...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &unix.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Not reaped in the background: a concurrent wait4 would steal the
	// dumper's ptrace stops (wait4 sees the tracees of every thread).
	p := &program{pid: cmd.Process.Pid, out: out, cmd: cmd}
	t.Cleanup(func() {
		if !p.reaped {
			unix.Kill(p.pid, unix.SIGKILL)
			cmd.Wait()
		}
	})
	p.waitTicks(t, 2)
	return p
}

func (p *program) lines() []string {
	b, _ := os.ReadFile(p.out)
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		out = append(out, sc.Text())
	}
	return out
}

func (p *program) ticks() []string {
	var out []string
	for _, l := range p.lines() {
		if strings.Contains(l, " tick ") {
			out = append(out, l)
		}
	}
	return out
}

func (p *program) waitTicks(t testing.TB, n int) {
	t.Helper()
	want := len(p.ticks()) + n
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
		if len(p.ticks()) >= want {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("pid %d: no new tick in 30s; output:\n%s\n%s", p.pid, strings.Join(p.lines(), "\n"), threadStates(p.pid))
}

// tickNum returns N of "... tick N ok".
func tickNum(t testing.TB, line string) int {
	f := strings.Fields(line)
	for i := range f {
		if f[i] == "tick" && i+1 < len(f) {
			n, err := strconv.Atoi(f[i+1])
			if err == nil {
				return n
			}
		}
	}
	t.Fatalf("not a tick line: %q", line)
	return 0
}

// dumpKill dumps p with --kill, waits until its pid is free and writes the
// checkpoint tree into a directory.
func dumpKill(t testing.TB, p *program) string {
	t.Helper()
	store, err := dedup.Open(filepath.Join(t.TempDir(), "store"))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	res, err := dumper.Dump(store, p.pid, dumper.Options{Kill: true})
	if err != nil {
		t.Fatal(err)
	}
	p.cmd.Wait()
	p.reaped = true
	waitGone(t, p.pid)
	dir := filepath.Join(t.TempDir(), "ckpt")
	c, err := store.Load(res.Checkpoint.ID) // with its page tables, which the dump streamed
	if err != nil {
		t.Fatal(err)
	}
	if err := image.WriteTree(dir, image.Render(c, store)); err != nil {
		t.Fatal(err)
	}
	return dir
}

func waitGone(t testing.TB, pid int) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); os.IsNotExist(err) {
			return
		}
		// Orphans of the test's programs are ours (TestMain): reap them.
		var ws unix.WaitStatus
		unix.Wait4(pid, &ws, unix.WNOHANG|unix.WALL, nil)
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("pid %d still exists", pid)
}

// restored is a process restored by a test: killed and reaped at the end.
func restore(t testing.TB, dir string) int {
	t.Helper()
	return restoreOpts(t, dir, Options{})
}

func restoreOpts(t testing.TB, dir string, opts Options) int {
	t.Helper()
	var log bytes.Buffer
	opts.Log = &log
	pid, err := Restore(dir, opts)
	if testing.Verbose() {
		t.Logf("restore log:\n%s", log.String())
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		unix.Kill(pid, unix.SIGKILL)
		var ws unix.WaitStatus
		unix.Wait4(pid, &ws, 0, nil) // the root is our child
	})
	return pid
}

func testResume(t *testing.T, kind string, mib int) {
	p := start(t, kind, mib)
	dir := dumpKill(t, p)
	before := p.ticks()
	last := tickNum(t, before[len(before)-1])
	pid := restoreOpts(t, dir, Options{LeaveStopped: true})
	if pid != p.pid {
		t.Fatalf("restored pid %d, want %d", pid, p.pid)
	}
	// Compare with the checkpoint before it runs: a running program soon
	// changes its own layout (Go grows its heap, malloc merges vmas).
	for i := 0; i < 200 && !stopped(pid); i++ {
		time.Sleep(5 * time.Millisecond)
	}
	checkSame(t, dir, pid)
	unix.Kill(pid, unix.SIGCONT)
	p.waitTicks(t, 2)
	// A signal to every thread: Go's handlers need each thread's
	// sigaltstack back, SIGURG is ignored by the C and python programs.
	for _, th := range mustThreads(t, pid) {
		unix.Tgkill(pid, th, unix.SIGURG)
	}
	p.waitTicks(t, 3)
	for _, l := range p.lines()[len(before):] {
		if !strings.Contains(l, " tick ") {
			t.Errorf("restored process printed %q", l)
		}
	}
	after := p.ticks()
	for i, l := range after[len(before):] {
		if !strings.HasSuffix(l, " ok") {
			t.Fatalf("restored process printed %q", l)
		}
		if n := tickNum(t, l); n != last+1+i {
			t.Fatalf("restored process printed tick %d after %d (line %q)", n, last+i, l)
		}
		if !strings.Contains(l, " "+strconv.Itoa(p.pid)+" ") {
			t.Fatalf("restored process reports another pid: %q", l)
		}
	}
	if st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); len(st) == 0 {
		t.Fatal("restored process is gone")
	}
	t.Logf("%s: %d ticks before dump, resumed at tick %d", kind, len(before), last+1)
}

func TestRestoreStatic(t *testing.T) { testResume(t, "static", 16) }

// TestMain makes the test a child subreaper and marks the fds the test binary inherited (beyond 0-2) close-on-exec,
// so that test programs do not inherit pipes nobody can restore.
func TestMain(m *testing.M) {
	if lazyServeMain() { // lazy_test.go: this binary as the page server
		return
	}
	ents, _ := os.ReadDir("/proc/self/fd")
	for _, e := range ents {
		if n, err := strconv.Atoi(e.Name()); err == nil && n > 2 {
			unix.CloseOnExec(n)
		}
	}
	// Orphans (children of killed test programs) come to this process, not
	// to pid 1, which reaps them late here: waitGone reaps them.
	unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
	// Keep the main thread to the main goroutine: a goroutine that exits
	// locked on it (the dumper's) wedges it instead of ending the thread,
	// and tracees it killed then stay unreapable zombies.
	runtime.LockOSThread()
	flag.Parse()                     // -bench is read before the run (armRestorable)
	report, unarm := armRestorable() // restorable_test.go
	code := m.Run()
	if !report() && code == 0 {
		code = 1
	}
	unarm()
	if buildDir != "" {
		os.RemoveAll(buildDir) // the test programs built for the run
	}
	os.Exit(code)
}

func TestRestorePthreads(t *testing.T) { testResume(t, "pthreads", 16) }
func TestRestoreGo(t *testing.T)       { testResume(t, "go", 16) }

// TestRestoreGoRepeat restores the same Go checkpoint several times and
// watches each for a second.
func TestRestoreGoRepeat(t *testing.T) {
	p := start(t, "go", 64)
	dir := dumpKill(t, p)
	for i := 0; i < 5; i++ {
		pid, err := Restore(dir, Options{})
		if err != nil {
			t.Fatal(err)
		}
		p.waitTicks(t, 10)
		unix.Kill(pid, unix.SIGKILL)
		var ws unix.WaitStatus
		unix.Wait4(pid, &ws, 0, nil)
	}
}
func TestRestorePython(t *testing.T) { testResume(t, "python", 16) }

// checkSame compares the restored process with its checkpoint: maps,
// threads, exe, cmdline, fds.
func checkSame(t *testing.T, dir string, pid int) {
	t.Helper()
	c, err := image.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	task := c.Task(pid)
	maps, err := proc.Maps(pid)
	if err != nil {
		t.Fatal(err)
	}
	var recorded []proc.Mapping
	for _, v := range task.VMAs {
		recorded = append(recorded, proc.Mapping{Start: v.Start, End: v.End, Perms: v.Perms, Offset: v.Offset,
			Dev: v.Dev, Inode: v.Inode, Name: v.Name, Flags: v.Flags})
	}
	if got, want := renderMerged(maps), renderMerged(recorded); got != want {
		t.Errorf("maps differ:\n--- restored\n%s--- recorded\n%s", got, want)
	}
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if len(ents) != len(task.Threads) {
		t.Errorf("restored %d threads, recorded %d", len(ents), len(task.Threads))
	}
	for _, th := range task.Threads {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d/task/%d", pid, th.TID)); err != nil {
			t.Errorf("thread %d missing", th.TID)
		}
	}
	exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if exe != task.Exe {
		t.Errorf("exe %q, recorded %q", exe, task.Exe)
	}
	cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if !bytes.Equal(cmdline, task.Cmdline) {
		t.Errorf("cmdline %q, recorded %q", cmdline, task.Cmdline)
	}
	for _, f := range task.FDs {
		l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", pid, f.Num))
		if err != nil || (!inheritFD(c, pid, f, ownFDs()) && l != f.Path) {
			t.Errorf("fd %d: %q %v, recorded %q", f.Num, l, err, f.Path)
		}
	}
}

// renderMerged renders a layout, VmFlags included, with neighbours the
// program cannot tell apart joined into one: two adjacent anonymous
// private vmas with the same protection and flags may stay apart in the
// kernel for reasons maps does not show (anon_vma, pgoff after mremap)
// and merge when mapped afresh. CRIU's zdtm compares maps the same way.
func renderMerged(ms []proc.Mapping) string {
	var out []proc.Mapping
	for _, m := range ms {
		if n := len(out); n > 0 {
			last := &out[n-1]
			if last.End == m.Start && last.Inode == 0 && m.Inode == 0 && last.Name == "" && m.Name == "" &&
				last.Perms == m.Perms && strings.HasSuffix(m.Perms, "p") &&
				strings.Join(last.Flags, " ") == strings.Join(m.Flags, " ") {
				last.End = m.End
				continue
			}
		}
		out = append(out, m)
	}
	var b strings.Builder
	for _, m := range out {
		fmt.Fprintf(&b, "%08x-%08x %s %08x %s %d %s [%s]\n", m.Start, m.End, m.Perms, m.Offset, m.Dev, m.Inode,
			m.Name, strings.Join(m.Flags, " "))
	}
	return b.String()
}

func mustThreads(t *testing.T, pid int) []int {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	for _, e := range ents {
		n, _ := strconv.Atoi(e.Name())
		out = append(out, n)
	}
	return out
}

// threadStates describes every thread of pid (state, blocked signals,
// syscall) for failure messages.
func threadStates(pid int) string {
	var b strings.Builder
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	for _, e := range ents {
		st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/status", pid, e.Name()))
		sc, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/syscall", pid, e.Name()))
		kv := map[string]string{}
		for _, l := range strings.Split(string(st), "\n") {
			k, v, _ := strings.Cut(l, ":")
			kv[k] = strings.TrimSpace(v)
		}
		fmt.Fprintf(&b, "thread %s: %s SigBlk %s SigPnd %s syscall %s", e.Name(), kv["State"], kv["SigBlk"], kv["SigPnd"], sc)
	}
	return b.String()
}

// stopped reports whether pid is in group-stop (state T).
func stopped(pid int) bool {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i > 0 && len(s) > i+2 && s[i+2] == 'T'
}
