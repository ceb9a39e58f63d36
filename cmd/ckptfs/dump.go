package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/dedup"
	"github.com/ckptfs/ckptfs/dumper"
	"github.com/ckptfs/ckptfs/internal/human"
)

// `ckptfs dump` is two processes. The one the user starts (the front)
// re-executes ckptfs as `dump-tracer` in a session of its own and waits for
// it; the tracer seizes the tree, collects, copies, releases, stores and
// commits. The tracer owns every ptrace relationship, so nothing that
// happens to the front harms the program: Ctrl-C to the terminal's process
// group does not reach the tracer, SIGINT and SIGTERM to the front are
// passed on as a request to stop, and if the front dies (even by SIGKILL)
// the tracer sees its control pipe close. Either way the tracer finishes
// the injection in flight, puts every tracee back as it was, releases the
// tree and commits nothing.

// dumpFlags are the flags of dump, given again to dump-tracer.
type dumpFlags struct {
	store, name    string
	kill, verbose  bool
	tcpEstablished bool
	memBudget      int64    // MiB
	inheritFiles   []string // --inherit-file

	track, preCopy bool          // track.go
	noPreCopy      bool          // --no-pre-copy
	every          time.Duration // --every (front only)
	keepLast       int
}

func (f *dumpFlags) add(cmd *cobra.Command) {
	addStoreFlag(cmd, &f.store)
	cmd.Flags().StringVar(&f.name, "name", "", "name the checkpoint (shown under by-name/ in the mount)")
	cmd.Flags().BoolVar(&f.kill, "kill", false, "kill the tree after a successful dump (migration)")
	cmd.Flags().BoolVar(&f.tcpEstablished, "tcp-established", false, "dump established TCP connections (TCP repair mode; needs CAP_NET_ADMIN); with --kill also those not yet accepted")
	cmd.Flags().BoolVarP(&f.verbose, "verbose", "v", false, "print the duration of every phase on stderr")
	cmd.Flags().StringArrayVar(&f.inheritFiles, "inherit-file", nil, "do not refuse a regular file restore could not open: restore is handed it (restore --inherit-fd fd[N]:`PATH`)")
	cmd.Flags().Int64Var(&f.memBudget, "mem-budget", 0, "MiB of pages held in memory while the tree is frozen; the rest go to a spill file in $TMPDIR (default 256)")
	addTrackFlags(cmd, f)
}

func (f *dumpFlags) args() []string {
	a := []string{"--store", f.store, "--name", f.name, "--mem-budget", strconv.FormatInt(f.memBudget, 10)}
	if f.kill {
		a = append(a, "--kill")
	}
	if f.tcpEstablished {
		a = append(a, "--tcp-established")
	}
	if f.verbose {
		a = append(a, "--verbose")
	}
	for _, p := range f.inheritFiles {
		a = append(a, "--inherit-file", p)
	}
	return append(a, f.trackArgs()...)
}

// check refuses flags the dump cannot use, before anything is started.
func (f *dumpFlags) check() error {
	if f.name != "" {
		if err := dedup.CheckEntryName(f.name); err != nil {
			return fmt.Errorf("--name: %w", err)
		}
	}
	if f.memBudget < 0 {
		return fmt.Errorf("--mem-budget %d: must be at least 0", f.memBudget)
	}
	if err := checkRemoteDump(f); err != nil {
		return err
	}
	return f.checkTrack()
}

func parsePid(s string) (int, error) {
	pid, err := strconv.Atoi(s)
	if err != nil || pid <= 0 {
		return 0, usageErr(fmt.Errorf("bad pid %q", s))
	}
	return pid, nil
}

// Control bytes the front writes to the tracer. EOF: the front is gone.
const (
	ctlInterrupt = 'I' // SIGINT
	ctlTerminate = 'T' // SIGTERM
)

// Exit statuses of a dump stopped by a signal, as a shell reports them.
const (
	exitInterrupted = 128 + int(unix.SIGINT)
	exitTerminated  = 128 + int(unix.SIGTERM)
)

func init() {
	var f dumpFlags
	cmd := &cobra.Command{
		Use:   "dump [-s STORE] [--name NAME] [--kill] [--tcp-established] [--inherit-file PATH]... [-v] [--mem-budget MIB] [--track | --every D [--keep-last N] | --pre-copy | --no-pre-copy] PID",
		Short: "Checkpoint the process tree rooted at PID into the store",
		Long: `dump seizes every thread of the process tree rooted at PID with ptrace (the
program sees no signal), records registers, memory, files and the rest, stores
every new 4 KiB page once by content hash and releases the tree running.
A tree with 64 MiB of private memory or more is pre-copied: its memory is
write-tracked and copied while it runs, then it is frozen only to copy the
pages written meanwhile (--no-pre-copy: copy everything frozen).
If the dump fails at any point the tree is released unchanged; so it is if
dump is interrupted (SIGINT, SIGTERM: exit status 130, 143, no checkpoint) or
killed, as a tracer process of its own, outside the caller's process group,
owns the tree and puts it back when dump goes away. A dump into a store that
another dump (or gc, verify) holds waits its turn. The last line printed is
the checkpoint id.`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completePids,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := requireStore(f.store); err != nil {
				return err
			}
			if _, err := parsePid(args[0]); err != nil {
				return err
			}
			if err := f.check(); err != nil {
				return err
			}
			if f.every > 0 {
				os.Exit(runEvery(f, args[0]))
			}
			argv := append([]string{"dump-tracer", "--control-fd", "3"}, globalArgs()...)
			code := runDumpTracer(append(append(argv, f.args()...), "--", args[0]))
			if diag != nil {
				diag.Info("done", "exit", code)
			}
			os.Exit(code)
			return nil
		},
	}
	f.add(cmd)
	rootCmd.AddCommand(cmd)

	var tf dumpFlags
	var controlFD int
	tracer := &cobra.Command{
		Use:    "dump-tracer [flags] PID",
		Short:  "The process of dump that owns the tree (started by dump)",
		Hidden: true,
		Args:   cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			pid, err := parsePid(args[0])
			if err != nil {
				return err
			}
			ab := watchAbort(controlFD)
			err = dumpAndStore(tf, pid, ab.ch)
			switch {
			case errors.Is(err, dumper.ErrAborted):
				exitReporting(fmt.Errorf("dump %d %s: the tree was released as it was, no checkpoint was made: %w", pid, ab.why(), err), ab.status())
			case errors.Is(err, context.Canceled):
				exitReporting(fmt.Errorf("dump %d %s while waiting for the store: nothing was done", pid, ab.why()), ab.status())
			}
			return err
		},
	}
	tf.add(tracer)
	tracer.Flags().IntVar(&controlFD, "control-fd", -1, "read stop requests from this fd; its EOF means the front process is gone")
	rootCmd.AddCommand(tracer)
}

// runDumpTracer starts the tracer in a session of its own with the given
// arguments, passes SIGINT and SIGTERM on to it, and returns the exit
// status the front should have: the tracer's.
func runDumpTracer(argv []string) int { return runDumpTracerTo(argv, os.Stdout) }

// runDumpTracerTo is runDumpTracer with the tracer's stdout going to stdout.
func runDumpTracerTo(argv []string, stdout io.Writer) int {
	ctlR, ctlW, err := os.Pipe()
	if err != nil {
		fmt.Fprintln(os.Stderr, "ckptfs: dump:", err)
		return 1
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, unix.SIGINT, unix.SIGTERM)
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		fmt.Fprintln(os.Stderr, "ckptfs: dump:", err)
		return 1
	}
	t := exec.Command("/proc/self/exe", argv...)
	t.Args[0] = "ckptfs"
	t.Stdin, t.Stdout, t.Stderr = devnull, stdout, os.Stderr
	t.ExtraFiles = []*os.File{ctlR} // fd 3
	t.SysProcAttr = &unix.SysProcAttr{Setsid: true}
	err = t.Start()
	ctlR.Close()
	devnull.Close()
	if err != nil {
		fmt.Fprintln(os.Stderr, "ckptfs: dump: start tracer:", err)
		return 1
	}
	done := make(chan struct{})
	go func() {
		for {
			select {
			case s := <-sigs:
				b := byte(ctlTerminate)
				if s == unix.SIGINT {
					b = ctlInterrupt
				}
				ctlW.Write([]byte{b})
			case <-done:
				return
			}
		}
	}()
	err = t.Wait()
	close(done)
	ctlW.Close()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			fmt.Fprintf(os.Stderr, "ckptfs: dump: tracer killed by %v\n", ws.Signal())
			return 128 + int(ws.Signal())
		}
		return ee.ExitCode()
	default:
		fmt.Fprintln(os.Stderr, "ckptfs: dump:", err)
		return 1
	}
}

// abort is the tracer's stop request: closed ch, and why.
type abort struct {
	ch     chan struct{}
	once   sync.Once
	mu     sync.Mutex
	reason string
	code   int
}

func (a *abort) stop(reason string, code int) {
	a.once.Do(func() {
		a.mu.Lock()
		a.reason, a.code = reason, code
		a.mu.Unlock()
		close(a.ch)
	})
}

func (a *abort) why() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.reason
}

func (a *abort) status() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.code
}

// watchAbort turns the tracer's stop requests into an abort: a byte on the
// control fd (the front got SIGINT or SIGTERM), its EOF (the front died),
// or SIGINT, SIGTERM, SIGHUP sent to the tracer itself. SIGPIPE is
// ignored: output to a reader that went away must not kill the tracer
// while it holds the tree.
func watchAbort(controlFD int) *abort {
	a := &abort{ch: make(chan struct{})}
	signal.Ignore(unix.SIGPIPE)
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, unix.SIGINT, unix.SIGTERM, unix.SIGHUP)
	go func() {
		s := <-sigs
		code := 128 + int(s.(unix.Signal))
		a.stop("stopped by "+unix.SignalName(s.(unix.Signal)), code)
	}()
	if controlFD >= 0 {
		ctl := os.NewFile(uintptr(controlFD), "control")
		unix.CloseOnExec(controlFD)
		go func() {
			b := make([]byte, 1)
			n, _ := ctl.Read(b)
			switch {
			case n == 1 && b[0] == ctlInterrupt:
				a.stop("interrupted (SIGINT)", exitInterrupted)
			case n == 1 && b[0] == ctlTerminate:
				a.stop("terminated (SIGTERM)", exitTerminated)
			default:
				a.stop("abandoned (the dump command went away)", 1)
			}
		}()
	}
	return a
}

// dumpAndStore opens the store (waiting its turn), dumps pid into it and
// prints the result. A failed first dump leaves no store behind.
func dumpAndStore(f dumpFlags, pid int, stop <-chan struct{}) (retErr error) {
	if err := requireStore(f.store); err != nil {
		return err
	}
	if err := f.check(); err != nil {
		return err
	}
	if err := unix.Kill(pid, 0); err == unix.ESRCH {
		return fmt.Errorf("dump %d: %w", pid, dumper.ErrNoProcess)
	}
	_, statErr := os.Stat(f.store)
	created := os.IsNotExist(statErr) && !dedup.IsRemote(f.store)
	if !dedup.IsRemote(f.store) {
		if err := announceNewStore(f.store, "dump"); err != nil {
			return err
		}
	}
	privateUmask()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	repo, err := openDumpRepo(ctx, f.store, func(owner string) {
		infof("dump %d: store %s is busy (%s); waiting for its turn", pid, f.store, owner)
	})
	if err != nil {
		return err
	}
	defer func() {
		if created && retErr != nil {
			dedup.CloseAndRemove(repo, f.store)
			return
		}
		repo.Close()
	}()
	opts := dumper.Options{Name: f.name, Kill: f.kill, TCPEstablished: f.tcpEstablished, Abort: stop, MemoryBudget: f.memBudget << 20,
		InheritFiles: f.inheritFiles}
	// The dumper's memory (pages in flight, the store's tables, the files
	// it maps) is kept near the page budget plus 256 MiB: the GC works
	// harder rather than let garbage double the heap.
	defer dumper.LimitMemory(cmp.Or(opts.MemoryBudget, dumper.DefaultMemoryBudget)+256<<20, repo)()
	if w := phaseLog(f.verbose); w != nil {
		opts.Log = w
	}
	ui := newProgress()
	opts.OnProgress = ui.update
	res, err := dumpTracked(f, repo, pid, opts) // track.go
	ui.finish()
	if err != nil {
		return err
	}
	printDumpSummary(res)
	return nil
}

// dumpSummary is dump's --json result line.
type dumpSummary struct {
	MessageType   string  `json:"message_type"` // "summary"
	ID            string  `json:"id"`
	Name          string  `json:"name,omitempty"`
	Time          string  `json:"time"` // RFC 3339 with its zone
	RootPID       int     `json:"root_pid"`
	Tasks         int     `json:"tasks"`
	MemoryBytes   int64   `json:"memory_bytes"`
	PagesTotal    int64   `json:"pages_total"`
	PagesZero     int64   `json:"pages_zero"`
	PagesNew      int64   `json:"pages_new"`
	BytesAdded    int64   `json:"bytes_added"`
	FrozenSeconds float64 `json:"frozen_seconds"` // the final freeze
	TotalSeconds  float64 `json:"total_seconds"`
	// A pre-copy pass before (the default dump of a large tree): its
	// freeze, to collect the tree and arm tracking, and the pages it
	// copied while the tree ran.
	PreCopyFrozenSeconds float64 `json:"pre_copy_frozen_seconds,omitempty"`
	PagesPreCopied       int64   `json:"pages_pre_copied,omitempty"`
}

// printDumpSummary prints the result of a dump: a line on stderr and the
// id on stdout, or the --json summary line.
func printDumpSummary(res *dumper.Result) {
	c := res.Checkpoint
	if globals.json {
		s := dumpSummary{MessageType: "summary", ID: c.ID, Name: c.Name,
			Time: c.Time.Format(time.RFC3339Nano), RootPID: c.RootPID, Tasks: len(c.Tasks),
			MemoryBytes: c.MemoryBytes(), PagesTotal: c.Stats.PagesTotal, PagesZero: c.Stats.PagesZero,
			PagesNew: c.Stats.PagesNew, BytesAdded: c.Stats.BytesAdded,
			FrozenSeconds: res.Freeze.Seconds(), TotalSeconds: res.Elapsed.Seconds()}
		if p := res.PreCopy; p != nil {
			s.PreCopyFrozenSeconds, s.PagesPreCopied = p.Freeze.Seconds(), p.PagesCopied
			s.TotalSeconds += p.Elapsed.Seconds()
		}
		writeJSONLine(os.Stdout, s)
		return
	}
	if !globals.quiet {
		// "; frozen X," is the final freeze (scripts read it there); a
		// pre-copy pass's own freeze comes after, in parentheses.
		total, pre := res.Elapsed, ""
		if p := res.PreCopy; p != nil {
			total += p.Elapsed
			pre = fmt.Sprintf(" (%d pages pre-copied while it ran, after a %s freeze to arm tracking)", p.PagesCopied, human.Duration(p.Freeze))
		}
		fmt.Fprintf(os.Stderr, "dumped %d task(s), %s in %d pages (%d zero), %d new pages added %s; frozen %s, total %s%s\n",
			len(c.Tasks), human.Bytes(c.MemoryBytes()), c.Stats.PagesTotal, c.Stats.PagesZero, c.Stats.PagesNew,
			human.Bytes(c.Stats.BytesAdded), human.Duration(res.Freeze), human.Duration(total), pre)
	}
	fmt.Println(c.ID)
}

// exitReporting ends the tracer with status code after reporting err.
func exitReporting(err error, code int) {
	closeLog(err, code)
	reportError(err, code)
	os.Exit(code)
}
