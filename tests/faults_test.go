package tests

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/internal/proc"
)

// The fault-injection tests stop `ckptfs dump` at random moments and at
// every point where the program is changed to be collected (hold points,
// internal/testhold: CKPTFS_TEST_HOLD=point[:n] makes the dump print
// "CKPTFS_HOLD point" and pause there), with SIGKILL, SIGINT or SIGTERM, and
// check the program is unharmed: running (or still stopped, for one in
// group-stop), untraced, every thread's signal
// mask as before, its own checks (memory, counters, children, mask) all ok,
// and the store verifies clean. Trials per kind: 12 (4 with -short), or
// CKPTFS_FAULT_TRIALS.

// faultKind is a program the fault test dumps.
type faultKind struct {
	name  string
	start func(t *testing.T) *program
	// holds are the hold points worth aiming at, with how many times
	// (at most) the dump passes each.
	holds map[string]int
	// stopped: the program is in group-stop (SIGSTOP) during the trials
	// and must still be after each; it is continued at the end.
	stopped bool
}

func faultKinds(t *testing.T) []faultKind {
	prog := func(mode string, n int) func(t *testing.T) *program {
		return func(t *testing.T) *program {
			bin := buildProg(t, "faultprog", "-pthread")
			return startArgv(t, "faultprog-"+mode, []string{bin, mode, itoa(n)})
		}
	}
	// inject: one per thread (between its two extras calls) plus one per
	// signal handler read; restop: one per thread; collect: one per process.
	return []faultKind{
		{"single", prog("threads", 0), map[string]int{"seized": 1, "inject": 3, "restop": 1, "collect": 1, "copy": 1, "release": 1, "commit": 1}, false},
		{"threads200", prog("threads", 200), map[string]int{"seized": 1, "inject": 203, "restop": 201, "collect": 1, "copy": 1, "release": 1, "commit": 1}, false},
		{"go", func(t *testing.T) *program { return startProgram(t, "go", 1) }, map[string]int{"seized": 1, "inject": 60, "restop": 5, "collect": 1, "copy": 1, "release": 1, "commit": 1}, false},
		{"forktree", prog("forks", 4), map[string]int{"seized": 1, "inject": 15, "restop": 5, "collect": 5, "copy": 3, "release": 1, "commit": 1}, false},
		{"stopped", prog("threads", 3), map[string]int{"seized": 1, "inject": 6, "restop": 4, "copy": 1, "release": 1}, true},
	}
}

func faultTrials(t *testing.T) int {
	if s := os.Getenv("CKPTFS_FAULT_TRIALS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("CKPTFS_FAULT_TRIALS=%q", s)
		}
		return n
	}
	if testing.Short() {
		return 4
	}
	return 12
}

// faultTrial is one stopped dump.
type faultTrial struct {
	sig   unix.Signal
	hold  string        // hold point, "" for a random moment
	delay time.Duration // for a random moment: after the start
}

func (tr faultTrial) String() string {
	if tr.hold != "" {
		return fmt.Sprintf("%v at %s", tr.sig, tr.hold)
	}
	return fmt.Sprintf("%v after %v", tr.sig, tr.delay)
}

// TestDumpFaults stops dumps of five kinds of program (a single-threaded
// and a 200-thread C program, a Go program, a fork tree, a stopped C
// program): half SIGKILL at a
// hold point, a quarter SIGKILL at a random moment, a quarter SIGINT or
// SIGTERM (at a hold point or a random moment).
func TestDumpFaults(t *testing.T) {
	trials := faultTrials(t)
	for _, k := range faultKinds(t) {
		t.Run(k.name, func(t *testing.T) {
			p := k.start(t)
			if k.stopped {
				if err := unix.Kill(p.Pid, unix.SIGSTOP); err != nil {
					t.Fatal(err)
				}
				waitStopped(t, p.Pid)
			}
			store := filepath.Join(t.TempDir(), "store")
			// A dump that completes: the store exists and how long a dump
			// takes is known, to aim the random moments.
			start := time.Now()
			ckptfs(t, "dump", "-s", store, itoa(p.Pid))
			took := time.Since(start)
			masks := treeMasks(t, p.Pid)
			rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(p.Pid)))
			points := make([]string, 0, len(k.holds))
			for name := range k.holds {
				points = append(points, name)
			}
			harmed, counts := 0, map[string]int{}
			for i := 0; i < trials; i++ {
				tr := faultTrial{sig: unix.SIGKILL}
				switch i % 4 {
				case 1:
					tr.sig = []unix.Signal{unix.SIGINT, unix.SIGTERM}[rng.IntN(2)]
				case 3:
					tr.delay = time.Duration(rng.Int64N(int64(took) * 3 / 2))
				}
				if tr.delay == 0 && (i%4 != 1 || rng.IntN(2) == 0) {
					name := points[rng.IntN(len(points))]
					tr.hold = fmt.Sprintf("%s:%d", name, 1+rng.IntN(k.holds[name]))
				} else if tr.delay == 0 {
					tr.delay = time.Duration(rng.Int64N(int64(took) * 3 / 2))
				}
				outcome := runFaultTrial(t, store, p.Pid, tr)
				counts[outcome]++
				if err := checkAfterFault(t, p, store, masks, k.stopped); err != nil {
					harmed++
					t.Errorf("trial %d (%v, %s): %v", i, tr, outcome, err)
					if harmed >= 3 {
						t.FailNow()
					}
				}
			}
			if k.stopped {
				unix.Kill(p.Pid, unix.SIGCONT)
				p.waitTicks(t, 2)
				p.checkHealthy(t)
			}
			t.Logf("%s: %d trials, %d harmed; outcomes %v", k.name, trials, harmed, counts)
		})
	}
}

// runFaultTrial starts a dump, stops it as tr says and waits until the
// dump's tracer process is gone too (the stderr pipe they share closes).
// It returns what happened: "held", "completed" (the dump finished before
// the signal), and checks the exit status and that a dump stopped by
// SIGINT/SIGTERM committed nothing.
func runFaultTrial(t *testing.T, store string, pid int, tr faultTrial) string {
	t.Helper()
	before := checkpointCount(t, store)
	cmd := exec.Command(filepath.Join(built(t), "ckptfs"), "dump", "-s", store, itoa(pid))
	cmd.Env = os.Environ()
	if tr.hold != "" {
		cmd.Env = append(cmd.Env, "CKPTFS_TEST_HOLD="+tr.hold)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stdout strings.Builder
	cmd.Stdout = &stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	held := make(chan struct{})
	var errText strings.Builder
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		sc := bufio.NewScanner(stderr)
		once := sync.Once{}
		for sc.Scan() {
			errText.WriteString(sc.Text() + "\n")
			if strings.HasPrefix(sc.Text(), "CKPTFS_HOLD ") {
				once.Do(func() { close(held) })
			}
		}
		io.Copy(io.Discard, stderr)
	}()
	exited := make(chan error, 1)
	go func() { wg.Wait(); exited <- cmd.Wait() }()
	outcome := "completed"
	var wait <-chan time.Time
	if tr.hold != "" {
		wait = nil
	} else {
		wait = time.After(tr.delay)
	}
	var werr error
	select {
	case <-held:
		outcome = "held"
		unix.Kill(cmd.Process.Pid, tr.sig)
		werr = <-exited
	case <-wait:
		outcome = "signalled"
		unix.Kill(cmd.Process.Pid, tr.sig)
		werr = <-exited
	case werr = <-exited:
	}
	code, signaled := 0, false
	var ee *exec.ExitError
	if errors.As(werr, &ee) {
		code = ee.ExitCode()
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			// Before it passes signals on (at its very start) the front
			// dies of them; then it had started no tracer.
			code, signaled = 128+int(ws.Signal()), true
		}
	} else if werr != nil {
		t.Fatalf("dump (%v): %v", tr, werr)
	}
	after := checkpointCount(t, store)
	switch {
	case code == 0:
		if after != before+1 {
			t.Errorf("dump (%v) exited 0 but the store has %d checkpoints, had %d", tr, after, before)
		}
		if outcome == "signalled" {
			outcome = "completed"
		}
	case tr.sig == unix.SIGKILL && code == 137:
		// killed: a commit that was under way may have completed.
	case tr.sig != unix.SIGKILL && code == 128+int(tr.sig):
		if after != before {
			t.Errorf("dump stopped by %v committed a checkpoint", tr.sig)
		}
		if !signaled && !strings.Contains(errText.String(), "released as it was") {
			t.Errorf("dump stopped by %v said:\n%s", tr.sig, errText.String())
		}
		outcome = "stopped"
	default:
		t.Errorf("dump (%v) exited %d:\n%s", tr, code, errText.String())
	}
	if tr.hold != "" && outcome == "completed" {
		outcome = "not-held" // the point came fewer times than aimed at
	}
	return outcome
}

// waitStopped waits until every thread of pid is in group-stop.
func waitStopped(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		tids, _ := proc.Tasks(pid)
		all := len(tids) > 0
		for _, tid := range tids {
			b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/status", pid, tid))
			all = all && strings.HasPrefix(proc.KeyValues(b)["State"], "T")
		}
		if all {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%d did not stop", pid)
}

// checkpointCount counts the checkpoints of store (0 if it does not exist).
func checkpointCount(t *testing.T, store string) int {
	t.Helper()
	if _, err := os.Stat(store); os.IsNotExist(err) {
		return 0
	}
	out := ckptfs(t, "ls", "-s", store)
	return strings.Count(strings.TrimSpace(out), "\n")
}

// treeMasks returns SigBlk of every thread of the tree rooted at pid.
func treeMasks(t *testing.T, pid int) map[int]string {
	t.Helper()
	masks := map[int]string{}
	queue := []int{pid}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		tids, err := proc.Tasks(p)
		if err != nil {
			t.Fatalf("tasks of %d: %v", p, err)
		}
		for _, tid := range tids {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/status", p, tid))
			if err != nil {
				continue
			}
			kv := proc.KeyValues(b)
			masks[tid] = kv["SigBlk"]
		}
		kids, _ := proc.Children(p)
		queue = append(queue, kids...)
	}
	return masks
}

// checkAfterFault checks the program after a stopped dump: every thread
// recorded at the start still there, untraced, not stopped (or, stopped,
// in group-stop still), with its mask; two more good ticks; the store
// verifies clean.
func checkAfterFault(t *testing.T, p *program, store string, masks map[int]string, stopped bool) error {
	t.Helper()
	for tid, mask := range masks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", tid))
		if err != nil {
			return fmt.Errorf("thread %d gone", tid)
		}
		kv := proc.KeyValues(b)
		if kv["TracerPid"] != "0" {
			return fmt.Errorf("thread %d still traced by %s", tid, kv["TracerPid"])
		}
		st := kv["State"]
		if stopped && !strings.HasPrefix(st, "T") {
			return fmt.Errorf("thread %d in state %s, was stopped (T)", tid, st)
		}
		if !stopped && (strings.HasPrefix(st, "t") || strings.HasPrefix(st, "T") || strings.HasPrefix(st, "Z")) {
			return fmt.Errorf("thread %d in state %s", tid, st)
		}
		if kv["SigBlk"] != mask {
			return fmt.Errorf("thread %d SigBlk %s, was %s", tid, kv["SigBlk"], mask)
		}
	}
	if !stopped {
		p.waitTicks(t, 2)
		p.checkHealthy(t)
	}
	if _, err := os.Stat(store); err == nil {
		out, errOut, err := ckptfsErr(t, "verify", "-s", store)
		if err != nil {
			return fmt.Errorf("verify: %v\n%s%s", err, out, errOut)
		}
	}
	return nil
}

// TestConcurrentDumps runs ten dumps into one store with no mount running:
// they wait their turn, all succeed, and the store verifies clean.
func TestConcurrentDumps(t *testing.T) {
	bin := buildProg(t, "faultprog", "-pthread")
	store := filepath.Join(t.TempDir(), "store")
	const n = 10
	var progs []*program
	for i := 0; i < n; i++ {
		progs = append(progs, startArgv(t, "faultprog-"+itoa(i), []string{bin, "threads", "2"}))
	}
	errs := make(chan error, n)
	for _, p := range progs {
		go func() {
			out, errOut, err := ckptfsErr(t, "dump", "-s", store, itoa(p.Pid))
			if err != nil {
				err = fmt.Errorf("dump %d: %v\n%s%s", p.Pid, err, out, errOut)
			}
			errs <- err
		}()
	}
	for i := 0; i < n; i++ {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if got := checkpointCount(t, store); got != n {
		t.Errorf("%d checkpoints, want %d", got, n)
	}
	ckptfs(t, "verify", "-s", store)
	for _, p := range progs {
		p.waitTicks(t, 1)
		p.checkHealthy(t)
	}
}

// TestRestoreKilledBeforeSeize kills `ckptfs restore` while its stub runs
// unseized (hold point "stub"): no ckptfs-stub is left behind.
func TestRestoreKilledBeforeSeize(t *testing.T) {
	bin := buildProg(t, "faultprog", "-pthread")
	p := startArgv(t, "faultprog", []string{bin, "threads", "0"})
	store := filepath.Join(t.TempDir(), "store")
	id := lastLine(ckptfs(t, "dump", "-s", store, itoa(p.Pid)))
	p.kill() // its pid must be free for the restore
	waitGone(t, p.Pid)
	m := mountStore(t, store)
	cmd := exec.Command(filepath.Join(built(t), "ckptfs"), "restore", filepath.Join(m.mnt, id))
	cmd.Env = append(os.Environ(), "CKPTFS_TEST_HOLD=stub")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(stderr)
	var said strings.Builder
	for sc.Scan() && !strings.HasPrefix(sc.Text(), "CKPTFS_HOLD stub") {
		said.WriteString(sc.Text() + "\n")
	}
	var kids []int // the stub was started by another thread than the main one
	tids, _ := proc.Tasks(cmd.Process.Pid)
	for _, tid := range tids {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", cmd.Process.Pid, tid))
		for _, f := range strings.Fields(string(b)) {
			n, _ := strconv.Atoi(f)
			kids = append(kids, n)
		}
	}
	if len(kids) != 1 {
		t.Fatalf("restore has children %v at the hold point, want its stub; it said:\n%s", kids, said.String())
	}
	stub := kids[0]
	cmd.Process.Kill()
	io.Copy(io.Discard, stderr)
	cmd.Wait()
	waitGone(t, stub)
}
