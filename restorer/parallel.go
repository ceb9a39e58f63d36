package restorer

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/internal/inject"
	"github.com/ckptfs/ckptfs/internal/ptrace"
)

// Several tracers. Every ptrace request for a tracee must come from the
// thread that traces it, and each injected call waits for the tracee to
// run it: with one tracer thread a tree of many processes is restored one
// call at a time, and on a loaded machine each call waits for a CPU twice.
// Once every process exists (created, as before, on the first tracer: a
// child is traced by its parent's tracer from its clone3 on), the
// processes are dealt out to up to tracersMax tracer threads: a process
// moved to another tracer is parked in the stub's `pause` (its registers
// at the trampoline's syscall with rax = pause, every signal blocked),
// detached, and seized and interrupted again by its new tracer, which
// creates its threads and releases it.
//
// What one task's restore needs from another's keeps its order:
//   - fds (restoreFiles): objects one task creates (eventfd, epoll...) are
//     installed in others; every task restores its fds in turn, in restore
//     order, exactly as a single tracer did;
//   - a task that maps shared memory (memfd and SysV seals and IPC_RMID
//     come after the last mapping), or shares an fd table with another
//     (clone(CLONE_FILES): the temporary fds of one would land in the
//     other's table), restores everything in its turn (orderedTask);
//   - the other tasks restore their memory before their turn and their
//     threads, signals and credentials after it, at the same time as the
//     others' (restoreMemory, restoreRest: calls into the task only);
//   - registers, the stop before release and the detach go in restore
//     order as before, each on the task's tracer.
// CKPTFS_TRACERS=1 restores on one tracer thread.

// tracersMax bounds the tracer threads of a restore.
const tracersMax = 4

// tracerCount is how many tracers restore n processes.
func tracerCount(n int) int {
	most := tracersMax
	if v, err := strconv.Atoi(os.Getenv("CKPTFS_TRACERS")); err == nil && v >= 1 {
		most = v
	}
	return max(1, min(most, n))
}

// sharedFiles runs f, a lookup in r.files, with the tracers excluded from
// it (its caches are filled before and read by every tracer).
func (r *restorer) sharedFiles(f func() (int, error)) (int, error) {
	r.filesMu.Lock()
	defer r.filesMu.Unlock()
	return f()
}

// orderedTask says whether task p restores everything in its turn:
// it maps shared memory or shares its fd table.
func (r *restorer) orderedTask(p *target) bool {
	if p.t.FilesOf != 0 || r.tableShared[p.t.PID] {
		return true
	}
	for _, v := range p.t.VMAs {
		if isSysV(v) || isShmem(v) || (mapsFile(v) && memfdOf(r.c, v) != nil) {
			return true
		}
	}
	return false
}

// tracerOf returns the tracer of p.
func (r *restorer) tracerOf(p *target) *inject.Tracer {
	if tr := r.tracerFor[p]; tr != nil {
		return tr
	}
	return r.tracers[0]
}

// on runs f on p's tracer.
func (r *restorer) on(p *target, f func() error) error { return r.tracerOf(p).Do(f) }

// dealTracers starts the extra tracers and moves to each its share of the
// processes (every tracersMax-th in restore order).
func (r *restorer) dealTracers() error {
	n := tracerCount(len(r.order))
	r.tableShared = map[int]bool{}
	for _, t := range r.c.Tasks {
		if t.FilesOf != 0 {
			r.tableShared[t.FilesOf] = true
		}
	}
	for len(r.tracers) < n {
		tr := inject.NewTracer()
		r.cpus.pinTracer(tr, len(r.tracers)) // affinity.go
		r.tracers = append(r.tracers, tr)
	}
	r.tracerFor = map[*target]*inject.Tracer{}
	var moved []*target
	for i, p := range r.order {
		if tr := r.tracers[i%n]; tr != r.tracers[0] {
			r.tracerFor[p] = tr
			moved = append(moved, p)
			if r.cpus != nil {
				r.cpus.pin(p.pid, r.cpus.cpu(i%n)) // with its tracer
			}
		}
	}
	if len(moved) == 0 {
		return nil
	}
	err := r.tracers[0].Do(func() error {
		for _, p := range moved {
			if err := p.park(); err != nil {
				return fmt.Errorf("task %d: move to another tracer: %w", p.pid, err)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	return r.eachTracer(func(tr *inject.Tracer) error {
		for _, p := range moved {
			if r.tracerFor[p] != tr {
				continue
			}
			if err := p.seizeParked(); err != nil {
				return fmt.Errorf("task %d: move to another tracer: %w", p.pid, err)
			}
		}
		return nil
	})
}

// eachTracer runs f on every tracer at once and returns the first error.
func (r *restorer) eachTracer(f func(tr *inject.Tracer) error) error {
	errs := make([]error, len(r.tracers))
	var wg sync.WaitGroup
	for i, tr := range r.tracers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = tr.Do(func() error { return f(tr) })
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// park leaves p, a stub copy stopped by its tracer (this thread), waiting
// in the stub's pause with every signal blocked, untraced.
func (p *target) park() error {
	var regs unix.PtraceRegs
	if err := unix.PtraceGetRegs(p.pid, &regs); err != nil {
		return fmt.Errorf("get regs: %w", err)
	}
	regs.Rip, regs.Rax, regs.Orig_rax = p.tramp, unix.SYS_PAUSE, ^uint64(0)
	if err := unix.PtraceSetRegs(p.pid, &regs); err != nil {
		return fmt.Errorf("set regs: %w", err)
	}
	return ptrace.Detach(p.pid, 0)
}

// seizeParked traces a parked p from this thread and stops it.
func (p *target) seizeParked() error {
	if err := ptrace.Seize(p.pid, traceOptions); err != nil {
		return err
	}
	if err := ptrace.Interrupt(p.pid); err != nil {
		return err
	}
	for {
		ws, err := ptrace.Wait(p.pid)
		if err != nil {
			return err
		}
		if ws.Exited() || ws.Signaled() {
			return fmt.Errorf("parked task ended (status %#x)", uint32(ws))
		}
		if ptrace.IsEventStop(ws) {
			return nil
		}
		// Anything else (a signal-delivery stop): not the program's yet,
		// every signal is blocked; go on to the interrupt's stop.
		if err := unix.PtraceCont(p.pid, 0); err != nil {
			return err
		}
	}
}

// turns lets tasks through one at a time in restore order.
type turns struct {
	mu   sync.Mutex
	cond sync.Cond
	next int
	err  error // the restore failed: nobody waits any more
}

func newTurns() *turns {
	t := &turns{}
	t.cond.L = &t.mu
	return t
}

// errAborted is what a task waiting for its turn gets when another failed.
var errAborted = errors.New("restore aborted")

func (t *turns) wait(k int) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	for t.next != k && t.err == nil {
		t.cond.Wait()
	}
	if t.err != nil {
		return errAborted
	}
	return nil
}

func (t *turns) done(k int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.next = k + 1
	t.cond.Broadcast()
}

func (t *turns) abort(err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.err == nil {
		t.err = err
	}
	t.cond.Broadcast()
}

// restoreTasks restores every task on its tracer, the tracers at once.
func (r *restorer) restoreTasks() error {
	turn := newTurns()
	err := r.eachTracer(func(tr *inject.Tracer) error {
		for k, p := range r.order {
			if r.tracerOf(p) != tr {
				continue
			}
			if err := r.restoreInTurn(turn, k, p); err != nil {
				if !errors.Is(err, errAborted) {
					err = fmt.Errorf("task %d: %w", p.pid, err)
				}
				turn.abort(err)
				return err
			}
		}
		return nil
	})
	if err != nil {
		turn.mu.Lock()
		defer turn.mu.Unlock()
		return turn.err // the first failure, not the others' aborts
	}
	return nil
}

// restoreInTurn is restoreTask for the k-th task in restore order: its
// calls that depend on the tasks before it in their turn.
func (r *restorer) restoreInTurn(turn *turns, k int, p *target) error {
	ordered := r.orderedTask(p)
	if !ordered {
		if err := r.restoreMemory(p); err != nil {
			return err
		}
	}
	if err := turn.wait(k); err != nil {
		return err
	}
	if ordered {
		if err := r.restoreMemory(p); err != nil {
			return err
		}
	}
	if err := r.restoreFiles(p); err != nil {
		return err
	}
	if ordered {
		if err := r.restoreRest(p); err != nil {
			return err
		}
		turn.done(k)
		return nil
	}
	turn.done(k)
	return r.restoreRest(p)
}
