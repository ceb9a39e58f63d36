// Package dumper checkpoints a running process tree: it seizes every thread
// with ptrace (no signal the program can see), records everything a restore
// needs into the image model, streams memory pages into a dedup store and
// releases the tree running and unchanged, whether the dump succeeded or not.
package dumper

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/dedup"
	"github.com/ckptfs/ckptfs/image"
	"github.com/ckptfs/ckptfs/internal/phaselog"
	"github.com/ckptfs/ckptfs/internal/testhold"
)

// Options tune a dump.
type Options struct {
	Name string // checkpoint name (optional)
	Kill bool   // kill the tree after a successful dump
	// InheritFiles are paths of regular files the user will hand to the
	// restore (restore --inherit-fd fd[N]:PATH): the dump does not refuse
	// an fd on one that restore could not open itself (refuse_files.go).
	InheritFiles []string

	// TCPEstablished dumps established TCP connections (in repair mode,
	// kind_tcp.go); without it a tree holding one is refused.
	TCPEstablished bool
	Progress       io.Writer // progress lines (nil: none)
	Log            io.Writer // one line per phase with its duration (nil: none)

	// OnProgress, if set, is told how far the dump is (progress.go):
	// phases "copy" and "store" in page bytes, "commit" as 0/1 then 1/1.
	// It may be called from several goroutines at once.
	OnProgress func(phase string, done, total int64)

	// MemoryBudget bounds the page bytes held in memory while the tree is
	// frozen; the rest go to a spill file (default DefaultMemoryBudget).
	MemoryBudget int64

	// Abort stops the dump when closed (SIGINT, SIGTERM, the command that
	// asked for the dump went away): the injection in flight is finished,
	// every tracee is put back as it was and released, nothing is
	// committed, and Dump returns an error wrapping ErrAborted. It is looked
	// at between steps, never in the middle of one. Nil: never.
	Abort <-chan struct{}

	// Track, if set, makes the dump copy only the pages written since the
	// checkpoint the tracking follows and arms write-protection for the
	// next one (track.go). A failed dump drops it.
	Track *Tracking

	// PreCopy (with Track): a pass of a pre-copy migration. The tree is
	// frozen only to collect it and arm tracking; memory is copied while
	// it runs, its pages stored and nothing committed: the next dump with
	// the same Track reads only what was written since.
	PreCopy bool

	// FailAfterPages makes the dump fail after storing that many pages: a
	// fault injected by tests to show a failed dump harms nothing.
	FailAfterPages int64
}

// Result is what a dump measured besides the checkpoint.
type Result struct {
	Checkpoint *image.Checkpoint
	Freeze     time.Duration // first stop to last thread released
	Elapsed    time.Duration
	Track      *TrackReport // what tracking did (nil: not tracked)
	// PreCopy is the pre-copy pass the dump's memory was first copied in
	// (set by the caller that ran it; nil: none). Freeze is then the
	// final freeze alone.
	PreCopy *PreCopyPass
}

// PreCopyPass is what a pre-copy pass before a dump measured.
type PreCopyPass struct {
	Freeze      time.Duration // frozen to collect the tree and arm tracking
	Elapsed     time.Duration
	PagesCopied int64 // pages copied while the tree ran
}

// ErrNoProcess says the pid does not exist.
var ErrNoProcess = errors.New("no such process")

// ErrAborted says the dump was stopped through Options.Abort.
var ErrAborted = errors.New("dump aborted")

// Dump checkpoints the tree rooted at pid into repo.
func Dump(repo dedup.Repo, pid int, opts Options) (*Result, error) {
	if opts.PreCopy && (opts.Track == nil || opts.Kill) {
		return nil, fmt.Errorf("dump %d: a pre-copy pass needs tracking and no --kill", pid)
	}
	if opts.MemoryBudget == 0 {
		opts.MemoryBudget = DefaultMemoryBudget
	}
	if err := unix.Kill(pid, 0); err != nil {
		if err == unix.ESRCH {
			return nil, fmt.Errorf("dump %d: %w", pid, ErrNoProcess)
		}
		if err == unix.EPERM {
			return nil, fmt.Errorf("dump %d: no permission to trace it (run as root or as its owner): %w", pid, err)
		}
		return nil, fmt.Errorf("dump %d: %w", pid, err)
	}
	if pid == os.Getpid() {
		return nil, fmt.Errorf("dump %d: cannot dump ckptfs itself", pid)
	}
	if pid == os.Getppid() {
		return nil, fmt.Errorf("dump %d: cannot dump the process that runs the dump", pid)
	}
	start := time.Now()
	testhold.SetAbort(opts.Abort)
	// A pre-copy pass logs as "pre-copy: ...": the "dump: ..." phases
	// (tree frozen, memory copied...) are those of the final dump's freeze.
	prefix := "dump"
	if opts.PreCopy {
		prefix = "pre-copy"
	}
	d := &dump{repo: repo, opts: opts, pid: pid, start: start, log: phaselog.New(opts.Log, prefix, start)}
	// Every ptrace request for a tracee must come from the thread that
	// seized it: run the frozen phase on one locked OS thread.
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// The thread is left locked: it exits with the goroutine, so no
		// other goroutine inherits a thread that once traced.
		defer func() {
			// run's deferred release has freed the tree by now.
			if r := recover(); r != nil {
				done <- fmt.Errorf("dump %d: internal error: %v", pid, r)
			}
		}()
		done <- d.run()
	}()
	err := <-done
	if err != nil {
		if opts.Track != nil {
			// Its re-arm may have cleared what this dump did not keep.
			opts.Track.drop(fmt.Sprintf("the previous tracked dump failed (%v)", err))
		}
		return nil, err
	}
	res := &Result{Checkpoint: d.ckpt, Freeze: d.freeze, Elapsed: time.Since(start)}
	if opts.Track != nil {
		res.Track = opts.Track.report
	}
	return res, nil
}

type dump struct {
	repo  dedup.Repo
	opts  Options
	pid   int
	start time.Time

	tree   *frozenTree
	ckpt   *image.Checkpoint
	freeze time.Duration
	tcp    *tcpHold // kind_tcp.go
	log    *phaselog.Log
}

// aborted returns ErrAborted once Options.Abort is closed.
func (d *dump) aborted() error {
	select {
	case <-d.opts.Abort:
		return fmt.Errorf("dump %d: %w", d.pid, ErrAborted)
	default:
		return nil
	}
}

// logf ends a phase of the -v log.
func (d *dump) logf(format string, args ...any) { d.log.Printf(format, args...) }

// run freezes the tree, collects it, copies memory, releases the tree, then
// finishes storing pages and commits the checkpoint.
func (d *dump) run() (err error) {
	// The store's page index loads during the precheck and prefault; the
	// freeze waits for it, so that it does not take CPU from the copy.
	var indexLoaded <-chan struct{}
	if p, ok := d.repo.(dedup.IndexPreloader); ok {
		indexLoaded = p.PreloadIndex()
	} else {
		c := make(chan struct{})
		close(c)
		indexLoaded = c
	}
	tr := d.opts.Track
	prevLoaded := make(chan struct{})
	go func() { // the checkpoint tracking was armed after, read during the precheck
		defer close(prevLoaded)
		if tr != nil {
			tr.loadPrevious(d.repo)
		}
	}()
	pids, err := precheck(d.pid, d.opts.TCPEstablished, d.opts.InheritFiles)
	<-prevLoaded
	if err != nil {
		return err
	}
	if err := checkPidNamespaces(pids); err != nil { // pidns.go
		return err
	}
	d.logf("precheck of %d processes", len(pids))
	mem := newMemCopier(d.repo, d.opts, d.progress)
	defer mem.stop()
	// An abort stops the page copy and the workers at their next chunk.
	copying := make(chan struct{})
	defer close(copying)
	go func() {
		select {
		case <-d.opts.Abort:
			mem.fail(d.aborted())
		case <-copying:
		}
	}()
	if d.opts.PreCopy {
		// The copy runs after the release, streamed (mem.startStream):
		// nothing to ready before the freeze.
		<-indexLoaded
		d.logf("store index loaded")
	} else {
		want := int64(0)
		if tr != nil {
			want = tr.estimate(pids)
		} else {
			want = anonBytes(pids)
		}
		if err := mem.prefault(want); err != nil {
			return err
		}
		<-indexLoaded
		d.logf("buffers prefaulted")
	}
	if err := d.aborted(); err != nil {
		return err
	}
	tree, err := seizeTree(d.pid, d.aborted)
	if err != nil {
		return err
	}
	d.logf("tree frozen")
	testhold.At("seized")
	d.tree = tree
	released := false
	d.tcp = &tcpHold{established: d.opts.TCPEstablished, kill: d.opts.Kill}
	release := func() {
		if !released {
			released = true
			// Connections leave repair mode before the tree runs
			// (a no-op once --kill closed them): kind_tcp.go.
			d.tcp.resume()
			tree.release()
			d.freeze = time.Since(tree.frozenAt)
		}
	}
	defer release()

	host, _ := os.Hostname()
	var uts unix.Utsname
	_ = unix.Uname(&uts)
	c := &image.Checkpoint{
		Name:    d.opts.Name,
		Time:    time.Now(),
		Host:    host,
		Kernel:  unix.ByteSliceToString(uts.Release[:]),
		RootPID: d.pid,
	}
	err = collectTasks(tree.tasks, d.aborted, func(t *image.Task) error { // collect.go
		c.Tasks = append(c.Tasks, t)
		testhold.At("collect")
		return nil
	})
	if err != nil {
		return err
	}
	d.logf("%d tasks collected", len(c.Tasks))
	if err := checkCollectedLevels(c); err != nil { // pidns.go
		return err
	}
	if err := markSharedTables(c); err != nil {
		return err
	}
	if err := image.SessionRefusalAnyFlags(c); err != nil { // as before seizing (refuse_tree.go), frozen
		return &ErrNotRestorable{Err: err}
	}
	for _, t := range c.Tasks {
		if err := image.VMARefusal(t); err != nil { // as before seizing (refuse_paths.go), frozen
			return &ErrNotRestorable{Err: err}
		}
	}
	if err := collectObjects(c, d.tcp); err != nil {
		return err
	}
	if d.opts.Kill {
		if err := d.tcp.lockOutside(c); err != nil { // kind_tcp.go
			return err
		}
	}
	d.logf("shared tables and objects")
	d.ckpt = c
	if err := d.aborted(); err != nil {
		return err
	}

	if tr != nil {
		if err := tr.prepare(tree, c, mem, d.opts.PreCopy); err != nil { // track.go
			return err
		}
		if tr.once && !d.opts.PreCopy {
			d.logf("written pages found")
		} else {
			d.logf("written pages found, tracking armed")
		}
	}
	if d.opts.PreCopy {
		release()
		d.logf("tree released (memory is copied while it runs)")
		mem.startStream()
	}
	for i, ft := range tree.tasks {
		if ft.zombie {
			continue // no memory left
		}
		if err := mem.copyTask(ft.pid, c.Tasks[i]); err != nil {
			return err
		}
	}
	if err := mem.closeReads(); err != nil {
		return err
	}
	d.logf("memory copied")
	testhold.At("release")
	if err := d.aborted(); err != nil {
		return err
	}
	if !d.opts.Kill && !d.opts.PreCopy {
		// The pages are copied out: the tree runs on while they are hashed
		// and stored. With --kill it stays frozen until the commit.
		release()
		d.logf("tree released")
	}
	if err := mem.wait(); err != nil {
		return err
	}
	if tr != nil {
		tr.addReused(&mem.stats)
	}
	c.Stats = mem.stats
	if tr != nil && tr.prev != nil && tr.prev.ID == "" {
		// The pre-copy passes before stored pages for this checkpoint.
		c.Stats.PagesNew += tr.prev.Stats.PagesNew
		c.Stats.BytesAdded += tr.prev.Stats.BytesAdded
	}
	if d.opts.PreCopy {
		tr.prev = c // the next pass reads only what was written since
		d.logf("pages stored (pre-copy pass, not committed)")
		return nil
	}
	testhold.At("commit")
	if err := d.aborted(); err != nil {
		return err // the pages stored are orphans that gc removes
	}
	if d.opts.Kill {
		// The point of no return: connections not yet accepted are taken
		// from their listeners' queues now (put back if the commit fails).
		if err := d.tcp.takeQueued(c); err != nil { // kind_tcpqueue.go
			return err
		}
		testhold.At("queued")
		if err := d.aborted(); err != nil {
			return err // the release puts them back
		}
	}
	d.report(PhaseCommit, 0, 1)
	if err := d.repo.Commit(c); err != nil {
		return fmt.Errorf("commit checkpoint: %w", err)
	}
	d.report(PhaseCommit, 1, 1)
	d.logf("pages stored, committed")
	checkCommitted(d.repo, c.ID) // restorable.go: the tests' check, if asked
	if tr != nil {
		tr.committed(c)
	}
	if d.opts.Kill {
		tree.kill()
		d.tcp.closeSilently() // repair mode: the close sends nothing
	}
	release()
	return nil
}

func (d *dump) progress(done, total int64) {
	d.report(PhaseCopy, done, total)
	if d.opts.Progress == nil || time.Since(d.start) < time.Second {
		return
	}
	fmt.Fprintf(d.opts.Progress, "\rdump %d: %d/%d MiB", d.pid, done>>20, total>>20)
}
