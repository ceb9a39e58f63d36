// Package restorer rebuilds processes from a checkpoint tree so that they
// continue where they were, with the same pids and tids.
//
// It needs no code of its own inside the target: a tiny stub process
// (internal/stub) is started under ptrace and turned, one injected system
// call at a time (internal/inject), into the checkpointed process: clone3
// with set_tid gives it its pid, its own mappings are replaced by the
// recorded ones, memory is written with process_vm_writev from the
// checkpoint's sparse pages files, then mm fields, files, signal handlers,
// threads and registers are put back and every thread is released at once.
// A failure kills every process the restorer created.
package restorer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/image"
	"github.com/ckptfs/ckptfs/internal/inject"
	"github.com/ckptfs/ckptfs/internal/phaselog"
	"github.com/ckptfs/ckptfs/internal/ptrace"
	"github.com/ckptfs/ckptfs/internal/stub"
	"github.com/ckptfs/ckptfs/internal/testhold"
)

// Options tune a restore.
type Options struct {
	// TCPClose restores established TCP connections closed: the program
	// reads a reset (kind_tcp.go).
	TCPClose bool
	// Log receives one line per phase with its duration (nil: none).
	Log io.Writer
	// ShellJob puts the restored tasks on the restorer's terminal, in its
	// session (like CRIU's --shell-job): see session.go.
	ShellJob bool
	// LeaveStopped releases every process stopped (SIGSTOP), to be resumed
	// with SIGCONT (like CRIU's --leave-stopped): it runs nothing before.
	LeaveStopped bool
	// NoVerifyPages skips checking every page against its hash in the
	// vma's pagemap before processes are created (verify.go): for a copy
	// of a checkpoint edited on purpose.
	NoVerifyPages bool
	// PidNS restores the tree into a new pid namespace (and a mount
	// namespace with its own /proc), where every pid is free: pidns.go.
	// A tree dumped inside a pid namespace gets one whatever PidNS says.
	PidNS bool
	// OnProgress, if set, is told how far the restore is (progress.go):
	// phase "pages", bytes of memory written of the checkpoint's total.
	OnProgress func(phase string, done, total int64)
	// Lazy runs the tasks before their anonymous memory is in: a page
	// server process fills it while they run (lazy.go, lazyserve.go).
	Lazy bool
	// LazyLog is the page server's log file (default
	// $TMPDIR/ckptfs-lazy-<restore's pid>.log).
	LazyLog string
	// LazyWait (with Lazy) returns only once the page server has filled
	// every page, reporting phase PhaseFill to OnProgress (lazyfill.go).
	// If some pages could not be served, the error wraps ErrLazyFill and
	// the root pid is returned with it: the processes run.
	LazyWait bool
	// LazyServer is the page server's command line (default: this
	// program's hidden lazy-serve command).
	LazyServer []string
	// InheritFDs hands the restorer's own fds to the tree in place of
	// the objects they name (restore --inherit-fd fd[N]:KEY, like CRIU's):
	// inheritfd.go.
	InheritFDs []InheritFD
}

var le = binary.LittleEndian

const traceOptions = unix.PTRACE_O_EXITKILL | unix.PTRACE_O_TRACESYSGOOD |
	unix.PTRACE_O_TRACECLONE | unix.PTRACE_O_TRACEFORK | unix.PTRACE_O_TRACEVFORK

// Restore restores the checkpoint tree in dir (a mounted checkpoint or a
// copy of one) and returns the root pid once every process runs on its own.
func Restore(dir string, opts Options) (int, error) {
	start := time.Now()
	lazyStarted := startLazyAsync(opts, start) // lazy.go: while the tree loads
	defer stopLazy(lazyStarted)
	sp, why := openStorePages(dir) // pagesource.go
	defer sp.close()
	c, whyFiles, err := loadTree(dir, sp, !opts.Lazy) // storemodel.go
	if err != nil {
		return 0, err
	}
	defer unlockTCP(c) // kind_tcp.go: the lock of dump --kill, if still there
	me, err := ownCreds()
	if err != nil {
		return 0, err
	}
	if err := checkRestorer(c, me); err != nil { // restorercreds.go
		return 0, fmt.Errorf("restore %s: %w", dir, err)
	}
	own := ownFDs()
	inNS := wantPidNS(c, opts) // pidns.go
	if inNS {
		if err := checkPidNS(c); err != nil {
			return 0, fmt.Errorf("restore %s: %w", dir, err)
		}
	}
	handed, err := handIn(c, own, opts.InheritFDs) // inheritfd.go
	if err != nil {
		return 0, fmt.Errorf("restore %s: %w", dir, err)
	}
	if err := preflight(c, own, handed, opts.ShellJob, !inNS); err != nil {
		return 0, fmt.Errorf("restore %s: %w", dir, err)
	}
	if err := checkSecurity(c); err != nil { // security.go
		return 0, fmt.Errorf("restore %s: %w", dir, err)
	}
	r := &restorer{c: c, dir: dir, opts: opts, log: phaselog.New(opts.Log, "restore", start), procs: map[int]*target{}, own: own, files: newFiles(own).handIn(handed), shm: map[string]int{}}
	defer r.files.close()
	r.files.tcpClose = opts.TCPClose
	r.files.ids = storeIDs(c, sp) // privopen.go
	if inNS {
		if r.ns, err = newPidNamespace(c); err != nil {
			return 0, fmt.Errorf("restore %s: %w", dir, err)
		}
		defer r.ns.close()
	}
	if sp != nil && sp.tree != nil {
		r.logf("checkpoint loaded from store %s", sp.store)
	} else if whyFiles != "" {
		r.logf("checkpoint loaded from the tree's files (%s)", whyFiles)
	}
	r.logf("loaded and checked")
	if err := r.files.preopen(c); err != nil { // preopen.go
		return 0, fmt.Errorf("restore %s: %w", dir, err)
	}
	if err := r.files.prepareExitedPidfd(c); err != nil { // kind_pidfd.go
		return 0, fmt.Errorf("restore %s: %w", dir, err)
	}
	r.files.restoredPid = func(pid int) (int, bool) {
		if p, ok := r.procs[pid]; ok {
			return p.pid, true
		}
		return 0, false
	}
	r.logf("files opened as their tasks")
	if sp != nil && opts.Lazy {
		// The page server reads the tree's files; what the restorer
		// writes itself (file and shared mappings) is little, and the
		// store's page scans would wait for every pagemap, lazy ones
		// too, before the first task runs.
		sp, why = nil, "lazy restore"
	}
	r.pages = sp
	if sp != nil {
		r.logf("page data from store %s", sp.store)
	} else if why != "" {
		r.logf("page data from the tree's files (%s)", why)
	}
	r.scans = startPageScans(dir, c, sp)
	if !opts.NoVerifyPages {
		// Pages read from the store are checked by it: only the rest
		// (shared memory), and without waiting for the page scans, which
		// go on ahead of the tracer.
		var skip func(*image.VMA) bool
		if opts.Lazy {
			skip = lazyServed // checked by the page server as it serves them
		}
		stop := r.watchVerify(c) // progress.go
		err := verifyPages(dir, c, r.scans, sp != nil, skip)
		stop()
		if err != nil {
			return 0, fmt.Errorf("restore %s: %w", dir, err)
		}
		r.logf("pages verified")
	}
	if r.lazy, err = lazyStarted(); err != nil {
		return 0, fmt.Errorf("restore %s: %w", dir, err)
	}
	if r.lazy != nil {
		r.logf("lazy page server pid %d started", r.lazy.pid)
	}
	r.tracers = []*inject.Tracer{inject.NewTracer()}
	r.cpus = newCPUPlan() // affinity.go
	r.cpus.pinTracer(r.tracers[0], 0)
	err = r.run()
	if err != nil {
		// On the first tracer: wait4 reaps the tracees of every thread.
		r.tracers[0].Do(func() error { r.killAll(); return nil })
	}
	for _, tr := range r.tracers {
		r.cpus.unpinTracer(tr)
		tr.Close()
	}
	if err != nil {
		return 0, fmt.Errorf("restore %s: %w", dir, err)
	}
	if r.lazy != nil {
		if err := r.lazy.done(opts.LazyWait); err != nil {
			return 0, fmt.Errorf("restore %s: %w", dir, err)
		}
		r.logf("lazy page server pid %d fills the rest, log %s", r.lazy.pid, r.lazy.log)
		if opts.LazyWait {
			if err := r.lazy.waitFill(opts.OnProgress); err != nil { // lazyfill.go
				return r.rootPID, fmt.Errorf("restore %s: restored as pid %d, but: %w", dir, r.rootPID, err)
			}
			r.logf("lazy fill complete")
		}
	}
	r.logf("done")
	return r.rootPID, nil
}

type restorer struct {
	c    *image.Checkpoint
	dir  string
	opts Options
	log  *phaselog.Log

	own   map[int]string // the restorer's fds (ownFDs)
	files *files
	shm   map[string]int // shmem key -> restorer fd (shmem.go)
	scans pageScans      // every task's data ranges, scanned ahead (mem.go)
	pages *storePages    // nil: page data from the tree's files (pagesource.go)
	lazy  *lazyClient    // the page server of a lazy restore (lazy.go)
	stub  *exec.Cmd
	procs map[int]*target // by recorded pid
	order []*target

	ns      *pidNamespace // the new pid namespace (pidns.go); nil: none
	rootPID int           // the root's pid, in the restorer's namespace
	// stubBits are the stub's securebits, which every process and
	// thread restored starts with (security.go)
	stubBits uint64

	progressMu sync.Mutex               // guards counters
	counters   map[string]*phaseCounter // per phase, for OnProgress (progress.go)
	// Tracer threads (parallel.go): the first creates every process;
	// tracerFor says which traces each process from then on.
	tracers     []*inject.Tracer
	tracerFor   map[*target]*inject.Tracer
	tableShared map[int]bool // pids whose fd table another task shares
	cpus        *cpuPlan     // nil: no affinity set (affinity.go)
	filesMu     sync.Mutex   // files' caches, read by every tracer
	logMu       sync.Mutex
}

// storeFill says which vmas of task pid fillMemory reads from the store;
// done frees what was read ahead once it is written.
func (r *restorer) storeFill(pid int) (sf *storeFill, done func()) {
	checks := r.scans.deferredChecks(pid) // verify.go
	if r.pages == nil {
		if checks == nil {
			return nil, func() {}
		}
		return &storeFill{checks: checks}, func() {}
	}
	data, release := r.scans.takeData(pid)
	return &storeFill{src: r.pages, refs: r.scans.storeRefs(pid), data: data, checks: checks}, release
}

func (r *restorer) logf(format string, args ...any) {
	r.logMu.Lock()
	defer r.logMu.Unlock()
	r.log.Printf(format, args...)
}

// run does the whole restore: processes created on the first tracer,
// then restored on several (parallel.go).
func (r *restorer) run() error {
	if err := r.tracers[0].Do(r.create); err != nil {
		return err
	}
	if err := r.dealTracers(); err != nil {
		return err
	}
	if len(r.tracers) > 1 {
		r.logf("processes dealt to %d tracers", len(r.tracers))
	}
	if err := r.failpoint("dealt"); err != nil {
		return err
	}
	if err := r.restoreTasks(); err != nil {
		return err
	}
	for _, p := range r.order {
		if err := r.on(p, p.finish); err != nil {
			return fmt.Errorf("task %d: %w", p.pid, err)
		}
	}
	if read, used := r.pages.earlyCounts(); read > 0 {
		r.logf("pages of %d of %d tasks read while the model loaded", used, read)
	}
	r.logf("registers set")
	if err := r.failpoint("finished"); err != nil {
		return err
	}
	if err := r.tracers[0].Do(r.setForeground); err != nil { // session.go
		return err
	}
	r.unpinTasks() // affinity.go
	var errs []error
	for _, p := range r.order {
		if p.t.State == "T" || r.opts.LeaveStopped {
			// Stopped when dumped: SIGSTOP waits, pending, until the
			// detach and stops the process before it runs anything.
			if err := unix.Kill(p.pid, unix.SIGSTOP); err != nil {
				errs = append(errs, fmt.Errorf("stop %d: %w", p.pid, err))
			}
		}
	}
	for _, p := range r.order {
		r.on(p, func() error {
			for _, tid := range p.tids {
				if err := ptrace.Detach(tid, 0); err != nil {
					errs = append(errs, err)
				}
			}
			return nil
		})
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if err := r.tracers[0].Do(r.releaseInit); err != nil { // pidns.go
		return err
	}
	r.order = nil // released: nothing left to kill
	return nil
}

// create starts the stub and creates every process from it, on the first
// tracer.
func (r *restorer) create() error {
	if err := r.startStub(); err != nil {
		return err
	}
	r.logf("stub started")
	for _, t := range r.c.Tasks {
		parent := r.procs[t.PPID]
		if t.PID == r.c.RootPID {
			parent = nil
		} else if parent == nil {
			return fmt.Errorf("task %d: parent %d is not in the checkpoint", t.PID, t.PPID)
		}
		if err := r.spawn(parent, t); err != nil {
			return err
		}
	}
	// The stub has done its job: every process now has its pid.
	r.stub.Process.Kill()
	r.stub.Wait()
	r.stub = nil
	r.logf("processes created")
	return r.failpoint("created")
}

// failAt makes a restore fail at a named point (tests of the cleanup).
var failAt string

func (r *restorer) failpoint(name string) error {
	if failAt == name {
		return fmt.Errorf("failpoint %s", name)
	}
	return nil
}

// startStub starts the stub on the tracer thread and stops it under ptrace.
func (r *restorer) startStub() error {
	cmd, cleanup, err := stub.Command(r.stubFiles()) // pidns.go
	if err != nil {
		return err
	}
	// Killed if the restorer dies before the seize, from which on
	// PTRACE_O_EXITKILL does it. The stub is never a restored process
	// (they are its clones, and a clone starts with no pdeathsig), and it
	// is killed when the restore ends.
	cmd.SysProcAttr = &unix.SysProcAttr{Pdeathsig: unix.SIGKILL}
	err = cmd.Start()
	cleanup()
	if err != nil {
		return fmt.Errorf("start stub: %w", err)
	}
	r.stub = cmd
	pid := cmd.Process.Pid
	testhold.At("stub")
	if err := ptrace.Seize(pid, traceOptions); err != nil {
		return err
	}
	if err := ptrace.Interrupt(pid); err != nil {
		return err
	}
	if _, err := ptrace.Wait(pid); err != nil {
		return err
	}
	// Children and threads inherit the mask: nothing is delivered to them
	// until their own masks are set at the end.
	if err := ptrace.SetSigMask(pid, inject.AllSignals); err != nil {
		return err
	}
	bits, err := inject.SyscallTrap(pid, stub.Trampoline, unix.SYS_PRCTL, unix.PR_GET_SECUREBITS)
	if err != nil {
		return fmt.Errorf("stub securebits: %w", err)
	}
	r.stubBits = bits
	return nil
}

// spawn creates the process of task t with clone3(set_tid = t.PID), from
// parent's process or, for the root, from the stub with CLONE_PARENT so
// that the root is the restorer's child until the restorer exits.
func (r *restorer) spawn(parent *target, t *image.Task) error {
	var from *target
	flags, exitSignal := uint64(0), uint64(unix.SIGCHLD)
	if parent == nil {
		regs, err := ptrace.GetRegs(r.stub.Process.Pid)
		if err != nil {
			return err
		}
		from = &target{pid: r.stub.Process.Pid, tramp: stub.Trampoline, scratch: (regs.Rsp - 4096) &^ 0xfff}
		flags, exitSignal = unix.CLONE_PARENT, 0
	} else {
		from = parent
	}
	if t.FilesOf != 0 {
		// Shares its parent's fd table (clone(CLONE_FILES)): the table's
		// owner restores it, once, for both.
		if parent == nil || (parent.t.PID != t.FilesOf && parent.t.FilesOf != t.FilesOf) {
			return fmt.Errorf("task %d shares the fd table of %d, not its parent's", t.PID, t.FilesOf)
		}
		flags |= unix.CLONE_FILES
	}
	var pid int
	var err error
	if parent == nil && r.ns != nil {
		pid, from, err = r.spawnRootInNS(t) // pidns.go
	} else {
		pid, err = from.clone3(from.pid, flags, exitSignal, t.InnerPID())
	}
	if err != nil {
		return fmt.Errorf("create task %d: %w", t.PID, err)
	}
	p := &target{r: r, t: t, pid: pid, tramp: from.tramp, scratch: from.scratch, tids: []int{pid}, inNS: r.ns != nil}
	if parent == nil {
		r.rootPID = pid
	}
	r.procs[t.PID] = p
	if t.State == "Z" {
		// Never run again: it ends now as it ended then and waits, a
		// zombie, for its parent to reap it. Its session and group come
		// first: a parent may wait for it by group (waitpid(-pgid)).
		if err := p.zombieSession(); err != nil {
			return fmt.Errorf("zombie %d: %w", pid, err)
		}
		if err := p.becomeZombie(); err != nil {
			return fmt.Errorf("zombie %d: %w", pid, err)
		}
		return nil
	}
	r.order = append(r.order, p)
	return p.enterSession() // session.go: before its children are created
}

// clone3 runs clone3 with set_tid = id (in p's pid namespace) in thread
// tid of p, waits for the new task's first stop and returns its id in the
// restorer's namespace.
func (p *target) clone3(tid int, flags, exitSignal uint64, id int) (int, error) {
	args := make([]byte, 96)
	le.PutUint64(args[0:], flags)
	le.PutUint64(args[32:], exitSignal)
	le.PutUint64(args[64:], p.scratch+88) // set_tid
	le.PutUint64(args[72:], 1)            // set_tid_size
	le.PutUint32(args[88:], uint32(id))
	if err := inject.WriteMem(p.pid, p.scratch, args); err != nil {
		return 0, err
	}
	got, err := p.sysTrap(tid, unix.SYS_CLONE3, p.scratch, 88) // not in a queue's runner
	if errors.Is(err, unix.EEXIST) {
		if e := idFree(id); e != nil {
			return 0, e
		}
		return 0, fmt.Errorf("pid %d is still in use", id)
	}
	if err != nil {
		return 0, err
	}
	if int(got) != id {
		return 0, fmt.Errorf("clone3 gave pid %d, want %d", got, id)
	}
	outer, err := p.outerID(tid, flags&unix.CLONE_THREAD != 0, id) // pidns.go
	if err != nil {
		return 0, err
	}
	ws, err := ptrace.Wait(outer)
	if err != nil {
		return 0, err
	}
	if !ws.Stopped() {
		return 0, fmt.Errorf("new task %d: unexpected status %#x", outer, uint32(ws))
	}
	return outer, nil
}

// killAll kills every process the restorer created and reaps what it can.
func (r *restorer) killAll() {
	if r.stub != nil {
		r.stub.Process.Kill()
		r.stub.Wait()
	}
	for _, p := range r.order {
		unix.Kill(p.pid, unix.SIGKILL)
	}
	var ws unix.WaitStatus
	for _, p := range r.order {
		for _, tid := range p.tids[1:] {
			unix.Wait4(tid, &ws, unix.WALL, nil)
		}
	}
	for _, p := range r.order {
		unix.Wait4(p.pid, &ws, unix.WALL, nil)
		// The root is our child: once the tracer side is reaped, reap the
		// parent side too (ECHILD otherwise).
		unix.Wait4(p.pid, &ws, unix.WALL|unix.WNOHANG, nil)
	}
	r.killNamespace() // pidns.go
	r.order = nil
}
