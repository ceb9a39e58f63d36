package dumper

import (
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/image"
	"github.com/ckptfs/ckptfs/internal/proc"
	"github.com/ckptfs/ckptfs/internal/ptrace"
)

// frozenTask is a process whose threads are all stopped under ptrace.
type frozenTask struct {
	pid     int
	tids    []int // leader first
	zombie  bool
	state   string // /proc state letter before the dump (R, S, D, T, Z)
	stopped bool   // was in group-stop (state T) before the dump
}

// frozenTree is the seized process tree, parents before children.
type frozenTree struct {
	tasks    []*frozenTask
	seized   []int // every tid seized, in order
	frozenAt time.Time
}

// seizeTree stops every thread of every process in the tree rooted at root,
// breadth first, a level of the tree at a time: every thread of the level
// is seized and interrupted before any stop is waited for, so the threads
// stop at the same time rather than one scheduling round trip after the
// other. On error, everything seized so far is released. stop is asked
// before each process; an error from it ends the seize.
func seizeTree(root int, stop func() error) (_ *frozenTree, err error) {
	t := &frozenTree{}
	defer func() {
		if err != nil {
			t.release()
		}
	}()
	seen := map[int]bool{}
	level := []int{root}
	for len(level) > 0 {
		var procs []*frozenTask
		for _, pid := range level {
			if seen[pid] {
				continue
			}
			seen[pid] = true
			if err := stop(); err != nil {
				return nil, err
			}
			ft, err := newFrozenTask(pid, pid == root)
			if err != nil {
				return nil, err
			}
			if ft != nil { // nil: exited meanwhile
				procs = append(procs, ft)
			}
		}
		procs, err := t.seizeLevel(procs, root)
		if err != nil {
			return nil, err
		}
		level = nil
		for _, ft := range procs {
			t.tasks = append(t.tasks, ft)
			if !ft.zombie {
				kids, _ := proc.Children(ft.pid) // none if it exited meanwhile
				level = append(level, kids...)
			}
		}
	}
	return t, nil
}

// newFrozenTask reads pid's state before it is seized: nil if it exited.
func newFrozenTask(pid int, isRoot bool) (*frozenTask, error) {
	st, err := proc.Read(pid, "stat")
	if err != nil {
		if isRoot {
			return nil, fmt.Errorf("process %d: %w", pid, ErrNoProcess)
		}
		return nil, nil
	}
	stat, err := proc.ParseStat(st)
	if err != nil {
		return nil, err
	}
	ft := &frozenTask{pid: pid, state: stat.State, stopped: stat.State == "T"}
	if stat.State == "Z" || stat.State == "X" {
		if isRoot {
			return nil, fmt.Errorf("process %d is a zombie", pid)
		}
		ft.zombie = true
	}
	return ft, nil
}

// seizeLevel stops all threads of procs, re-listing each process' threads
// until no new thread shows up in any (once all are stopped none can be
// created). It returns the processes still there, zombies included.
func (t *frozenTree) seizeLevel(procs []*frozenTask, root int) ([]*frozenTask, error) {
	gone := map[*frozenTask]bool{}
	done := map[int]bool{}
	type started struct {
		ft  *frozenTask
		tid int
	}
	for {
		var round []started
		for _, ft := range procs {
			if ft.zombie || gone[ft] {
				continue
			}
			tids, err := proc.Tasks(ft.pid)
			if err != nil {
				if ft.pid == root {
					return nil, fmt.Errorf("process %d: %w", ft.pid, err)
				}
				gone[ft] = true
				continue
			}
			for _, tid := range tids {
				if done[tid] {
					continue
				}
				done[tid] = true
				ok, err := t.seizeStart(tid)
				if err != nil {
					return nil, err
				}
				if ok {
					round = append(round, started{ft, tid})
				}
			}
		}
		fresh := 0
		for _, s := range round {
			ok, err := t.seizeWait(s.tid)
			if err != nil {
				return nil, err
			}
			if ok {
				s.ft.tids = append(s.ft.tids, s.tid)
				fresh++
			}
		}
		if fresh == 0 {
			break
		}
	}
	var out []*frozenTask
	for _, ft := range procs {
		if gone[ft] {
			continue
		}
		if !ft.zombie && len(ft.tids) == 0 && ft.pid != root && zombie(ft.pid) {
			// It exited between the listing of its threads and their
			// seize; its parent, frozen a level up, has not reaped it.
			if _, err := proc.Read(ft.pid, "stat"); err != nil {
				continue
			}
			ft.zombie, ft.state, ft.stopped = true, "Z", false
		}
		if !ft.zombie && (len(ft.tids) == 0 || ft.tids[0] != ft.pid) {
			return nil, fmt.Errorf("process %d: could not stop its main thread (%s; %d of its threads stopped)",
				ft.pid, procState(ft.pid), len(ft.tids))
		}
		out = append(out, ft)
	}
	return out, nil
}

// seizeStart seizes one thread and asks it to stop; ok=false if it exited
// meanwhile. seizeWait waits for the stop.
func (t *frozenTree) seizeStart(tid int) (ok bool, err error) {
	if err := ptrace.Seize(tid, unix.PTRACE_O_TRACESYSGOOD); err != nil {
		if errors.Is(err, unix.ESRCH) {
			return false, nil
		}
		if errors.Is(err, unix.EPERM) {
			if tp := tracerOf(tid); tp != 0 {
				return false, fmt.Errorf("thread %d is already traced by pid %d: %w", tid, tp, err)
			}
			return false, fmt.Errorf("no permission to trace %d (run as root or as its owner, check /proc/sys/kernel/yama/ptrace_scope): %w", tid, err)
		}
		return false, err
	}
	if t.frozenAt.IsZero() {
		t.frozenAt = time.Now()
	}
	t.seized = append(t.seized, tid)
	if err := ptrace.Interrupt(tid); err != nil {
		return false, err
	}
	return true, nil
}

// seizeWait waits for the interrupt stop of a thread seizeStart seized;
// ok=false if it exited meanwhile.
func (t *frozenTree) seizeWait(tid int) (ok bool, err error) {
	for {
		ws, err := ptrace.Wait(tid)
		if err != nil {
			return false, err
		}
		if ws.Exited() || ws.Signaled() {
			for i := len(t.seized) - 1; i >= 0; i-- {
				if t.seized[i] == tid {
					t.seized = append(t.seized[:i], t.seized[i+1:]...)
					break
				}
			}
			return false, nil
		}
		if !ws.Stopped() {
			continue
		}
		if ptrace.IsEventStop(ws) {
			return true, nil
		}
		// A signal arrived before our interrupt: let the program have it
		// (it would have anyway) and wait for the interrupt stop.
		if err := unix.PtraceCont(tid, int(ws.StopSignal())); err != nil {
			return false, fmt.Errorf("resume %d with signal %d: %w", tid, ws.StopSignal(), err)
		}
	}
}

// kill kills the frozen tree and waits, as its tracer, until every seized
// thread has exited, so that the real parents can reap the processes (a
// killed tracee is a zombie its tracer must see first).
func (t *frozenTree) kill() {
	for _, ft := range t.tasks {
		_ = unix.Kill(ft.pid, unix.SIGKILL)
	}
	// The kernel reports a leader's exit only once its other threads are
	// gone, and those wait for us, their tracer: leaders last.
	for _, ft := range t.tasks {
		for i := len(ft.tids) - 1; i >= 0; i-- {
			for {
				ws, err := ptrace.Wait(ft.tids[i])
				if err != nil || ws.Exited() || ws.Signaled() {
					break
				}
			}
		}
	}
	t.seized = nil
}

// release detaches every seized thread; a thread that was in group-stop
// stays stopped, the others run on.
func (t *frozenTree) release() {
	for i := len(t.seized) - 1; i >= 0; i-- {
		reenterWait(t.seized[i])
		_ = ptrace.Detach(t.seized[i], 0)
	}
	t.seized = nil
}

// reenterWait makes a thread whose epoll wait the freeze broke with EINTR
// (the kernel never restarts those) re-enter it, so the program sees no
// EINTR it would not have seen. A thread with a signal pending keeps its
// EINTR: that signal would have interrupted the wait anyway.
func reenterWait(tid int) {
	r, err := ptrace.GetRegs(tid)
	if err != nil || !image.EINTRByFreeze(&r) {
		return
	}
	if own, err := ptrace.PeekSiginfo[image.Siginfo](tid, false); err != nil || len(own) > 0 {
		return
	}
	if shared, err := ptrace.PeekSiginfo[image.Siginfo](tid, true); err != nil || len(shared) > 0 {
		return
	}
	image.ReenterSyscall(&r)
	_ = ptrace.SetRegs(tid, r)
}

func tracerOf(tid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", tid))
	if err != nil {
		return 0
	}
	var n int
	fmt.Sscanf(proc.KeyValues(b)["TracerPid"], "%d", &n)
	return n
}

// walkTree visits root and its descendants breadth first, parents before
// children; visit says whether to descend into a process' children.
func walkTree(root int, visit func(pid int) (descend bool, err error)) error {
	seen := map[int]bool{}
	queue := []int{root}
	for len(queue) > 0 {
		pid := queue[0]
		queue = queue[1:]
		if seen[pid] {
			continue
		}
		seen[pid] = true
		descend, err := visit(pid)
		if err != nil {
			return err
		}
		if !descend {
			continue
		}
		kids, _ := proc.Children(pid) // none if it exited meanwhile
		queue = append(queue, kids...)
	}
	return nil
}

// procState says what /proc tells of pid now, for an error message.
func procState(pid int) string {
	b, err := proc.Read(pid, "stat")
	if err != nil {
		return "gone"
	}
	st, err := proc.ParseStat(b)
	if err != nil {
		return "stat unreadable"
	}
	return "state " + st.State
}
