package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/dedup"
	"github.com/ckptfs/ckptfs/dumper"
	"github.com/ckptfs/ckptfs/internal/human"
)

// Tracked dumps (dump --track, --every, --pre-copy) and the hidden
// track-holder, the process that keeps a tracked tree write-protected
// between dumps (dumper/tracker.go).

// trackDir is where the trackers of a store listen.
func trackDir(store string) string {
	if dedup.IsRemote(store) {
		return remoteTrackDir(store) // remote.go
	}
	return filepath.Join(store, "track")
}

// maxPreCopyPasses bounds the passes of --pre-copy before the final one.
const maxPreCopyPasses = 8

// dumpTracked is dumper.Dump with the tracking flags: the tracking taken
// over from the tree's tracker, the pre-copy passes, the report, and the
// tracking handed to a new tracker after the commit.
func dumpTracked(f dumpFlags, repo dedup.Repo, pid int, opts dumper.Options) (*dumper.Result, error) {
	if !f.track && !f.preCopy {
		if f.noPreCopy {
			return dumper.Dump(repo, pid, opts)
		}
		return dumpPreCopied(repo, pid, opts)
	}
	tr := dumper.OpenTracking(trackDir(f.store), pid)
	defer tr.Close()
	opts.Track = tr
	exe, _ := os.Executable()
	if !opts.Kill {
		tr.Prestart(exe, []string{"track-holder"}) // handed the fds by Hold
	}
	if f.preCopy {
		last := int64(-1)
		for pass := 1; pass <= maxPreCopyPasses; pass++ {
			o := opts
			o.PreCopy, o.Kill = true, false
			res, err := dumper.Dump(repo, pid, o)
			if err != nil {
				if errors.Is(err, dumper.ErrAborted) {
					return nil, err
				}
				fmt.Fprintf(os.Stderr, "ckptfs: dump %d: pre-copy pass %d failed (%v); the final pass reads everything\n", pid, pass, err)
				break
			}
			// A remote store uploads the pass's last pages now, while
			// the tree runs, not in the final freeze.
			if fl, ok := repo.(interface{ Flush() error }); ok {
				if err := fl.Flush(); err != nil {
					return nil, fmt.Errorf("pre-copy pass %d: %w", pass, err)
				}
			}
			copied := res.Track.PagesCopied
			fmt.Fprintf(os.Stderr, "pre-copy pass %d: copied %d pages while the tree ran (frozen %v)\n", pass, copied, res.Freeze.Round(100_000))
			if last >= 0 && copied*10 > last*9 {
				break // the written set no longer shrinks
			}
			last = copied
		}
	}
	res, err := dumper.Dump(repo, pid, opts)
	if err != nil {
		return nil, err
	}
	printTrackReport(res.Track, opts.Kill)
	if !opts.Kill {
		if err := tr.Hold(exe, []string{"track-holder"}); err != nil {
			fmt.Fprintf(os.Stderr, "tracking: not kept after this dump (%v): the next dump reads everything\n", err)
		}
	}
	return res, nil
}

// dumpPreCopied is the default dump (no --track, --pre-copy or
// --no-pre-copy). A tree with PreCopyMinBytes of private memory or more,
// PreCopyMinPerProcess a process on average (dumper.PreCopyWorth), gets
// one pre-copy pass: frozen just long enough to be collected and
// write-protected (async userfaultfd, nothing the program sees), its
// memory copied and stored while it runs; then the final dump freezes it
// again and copies only the pages written since, taking the others from
// the pass; then the tracking is closed, so nothing of it stays in the
// tree. The freeze that matters, the final one, is what the summary and
// the "dump: " lines of -v report. If the pass cannot track (no async
// write-protect, a vma tracked by someone else, nothing armed) or fails,
// the dump copies everything frozen, as --no-pre-copy, and -v says why.
func dumpPreCopied(repo dedup.Repo, pid int, opts dumper.Options) (*dumper.Result, error) {
	say := func(format string, args ...any) {
		if opts.Log != nil {
			fmt.Fprintf(opts.Log, "pre-copy: "+format+"\n", args...)
		}
	}
	n, procs, err := dumper.PrivateMemory(pid)
	if err != nil {
		return dumper.Dump(repo, pid, opts)
	}
	if why := dumper.PreCopyWorth(n, procs); why != "" {
		say("none: %s: all copied frozen", why)
		return dumper.Dump(repo, pid, opts)
	}
	tr := dumper.NewTracking(pid)
	defer tr.Close()
	o := opts
	o.Track, o.PreCopy, o.Kill = tr, true, false
	pass, err := dumper.Dump(repo, pid, o)
	if err == nil {
		// A remote store uploads the pass's last pages now, while the
		// tree runs, not in the final freeze.
		if fl, ok := repo.(interface{ Flush() error }); ok {
			err = fl.Flush()
		}
	}
	if err != nil {
		if errors.Is(err, dumper.ErrAborted) || errors.Is(err, dumper.ErrNoProcess) {
			return nil, err
		}
		tr.Close()
		say("not used (%v): all copied frozen", err)
		return dumper.Dump(repo, pid, opts)
	}
	say("%d pages copied while the tree ran (%s of private memory); frozen %s to collect it and arm write tracking",
		pass.Track.PagesCopied, human.Bytes(n), human.Duration(pass.Freeze))
	o = opts
	o.Track = tr
	res, err := dumper.Dump(repo, pid, o)
	tr.Close() // the write tracking ends here
	if err != nil {
		return nil, err
	}
	if r := res.Track; r != nil && opts.Log != nil {
		for _, note := range r.Notes {
			say("%s", note)
		}
		say("final freeze: %d pages written since the pass copied, %d taken from it; read in full: %d process(es), %d vma(s)",
			r.PagesCopied, r.PagesReferenced, r.FullProcesses, r.FullVMAs)
	}
	res.PreCopy = &dumper.PreCopyPass{Freeze: pass.Freeze, Elapsed: pass.Elapsed, PagesCopied: pass.Track.PagesCopied}
	res.Track = nil // nothing stays tracked: no track report
	return res, nil
}

// printTrackReport says what tracking did; killed: the tree is gone, so
// nothing stays write-protected.
func printTrackReport(r *dumper.TrackReport, killed bool) {
	if r == nil {
		return
	}
	for _, n := range r.Notes {
		fmt.Fprintln(os.Stderr, "tracking:", n)
	}
	if r.Previous != "" {
		fmt.Fprintf(os.Stderr, "tracking: copied %d written pages, %d unwritten pages taken from %s", r.PagesCopied, r.PagesReferenced, r.Previous)
	} else {
		fmt.Fprintf(os.Stderr, "tracking: read everything (%d pages)", r.PagesCopied)
	}
	if r.FullProcesses > 0 || r.FullVMAs > 0 {
		fmt.Fprintf(os.Stderr, "; read in full: %d process(es), %d vma(s)", r.FullProcesses, r.FullVMAs)
	}
	if killed {
		fmt.Fprintln(os.Stderr, "; the tree was killed")
		return
	}
	fmt.Fprintf(os.Stderr, "; %d process(es) write-protected for the next dump\n", r.Armed)
}

// runEvery is dump --every: a tracked dump of pid every f.every, the
// checkpoints beyond the last f.keepLast made by this run removed and
// their pages gc'd, until the tree exits or SIGINT/SIGTERM. A signal that
// comes during a dump aborts that dump (no checkpoint), as for dump.
func runEvery(f dumpFlags, pidArg string) int {
	pid, _ := parsePid(pidArg)
	stop := make(chan os.Signal, 2)
	signal.Notify(stop, unix.SIGINT, unix.SIGTERM)
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		fmt.Fprintf(os.Stderr, "ckptfs: dump %d: %v\n", pid, err)
		return 1
	}
	defer unix.Close(pidfd)
	exited := func() bool {
		fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
		n, _ := unix.Poll(fds, 0)
		return n > 0
	}
	var ids []string
	tf := f
	tf.every, tf.keepLast, tf.track = 0, 0, true
	for n := 1; ; n++ {
		started := time.Now()
		var out bytes.Buffer
		status := runDumpTracerTo(append(append(append([]string{"dump-tracer", "--control-fd", "3"}, globalArgs()...), tf.args()...), "--", pidArg), io.MultiWriter(os.Stdout, &out))
		select {
		case s := <-stop:
			fmt.Fprintf(os.Stderr, "ckptfs: dump --every %d: stopped by %v after %d checkpoint(s)\n", pid, s, len(ids))
			if status != 0 {
				return status
			}
			return 0
		default:
		}
		if status != 0 {
			if exited() {
				fmt.Fprintf(os.Stderr, "ckptfs: dump --every %d: the tree exited after %d checkpoint(s)\n", pid, len(ids))
				return 0
			}
			return status
		}
		if lines := strings.Fields(out.String()); len(lines) > 0 {
			ids = append(ids, lines[len(lines)-1])
		}
		if f.keepLast > 0 && len(ids) > f.keepLast {
			old := ids[:len(ids)-f.keepLast]
			if err := forgetAndGC(f.store, old); err != nil {
				fmt.Fprintf(os.Stderr, "ckptfs: dump --every %d: forget old checkpoints: %v\n", pid, err)
				return 1
			}
			ids = append([]string(nil), ids[len(ids)-f.keepLast:]...)
		}
		switch waitNext(pidfd, started.Add(f.every), stop) {
		case "signal":
			fmt.Fprintf(os.Stderr, "ckptfs: dump --every %d: stopped after %d checkpoint(s)\n", pid, len(ids))
			return 0
		case "exited":
			fmt.Fprintf(os.Stderr, "ckptfs: dump --every %d: the tree exited after %d checkpoint(s)\n", pid, len(ids))
			return 0
		}
	}
}

// waitNext waits until next, a signal on stop ("signal"), or the exit of
// the process pidfd refers to ("exited"); "" at next.
func waitNext(pidfd int, next time.Time, stop <-chan os.Signal) string {
	wait := time.NewTimer(time.Until(next))
	defer wait.Stop()
	quit := make(chan struct{})
	defer close(quit)
	gone := make(chan struct{})
	go func() {
		p := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
		for {
			select {
			case <-quit:
				return
			default:
			}
			if k, _ := unix.Poll(p, 100); k > 0 {
				close(gone)
				return
			}
		}
	}()
	select {
	case <-stop:
		return "signal"
	case <-gone:
		return "exited"
	case <-wait.C:
		return ""
	}
}

// forgetAndGC removes checkpoints and collects the pages only they used.
func forgetAndGC(store string, ids []string) error {
	privateUmask()
	repo, err := dedup.WaitRepo(context.Background(), store, func(string) {})
	if err != nil {
		return err
	}
	defer repo.Close()
	if err := repo.Remove(ids...); err != nil {
		return err
	}
	_, err = repo.GC()
	return err
}

func init() {
	var sock string
	var nfds int
	var handoff bool
	cmd := &cobra.Command{
		Use:    "track-holder --socket PATH (--fds N | --handoff)",
		Short:  "Hold the write-protection of a tracked tree between dumps (started by dump --track)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			signal.Ignore(unix.SIGPIPE, unix.SIGHUP, unix.SIGINT)
			if handoff {
				// Started ahead: state and fds come on fd 3, and "ready"
				// goes back on it; its EOF first: nothing to hold.
				closeInherited(4)
				conn := os.NewFile(3, "handoff")
				unix.CloseOnExec(3)
				st, fds, err := dumper.ReceiveHandoff(conn)
				if err != nil {
					return err
				}
				return dumper.RunTracker(sock, st, fds, conn)
			}
			closeInherited(3 + nfds)
			var st dumper.TrackerState
			if err := json.NewDecoder(os.Stdin).Decode(&st); err != nil {
				return fmt.Errorf("tracker state: %w", err)
			}
			os.Stdin.Close()
			fds := make([]int, nfds)
			for i := range fds {
				fds[i] = 3 + i
				unix.CloseOnExec(fds[i])
			}
			return dumper.RunTracker(sock, st, fds, os.Stdout)
		},
	}
	cmd.Flags().StringVar(&sock, "socket", "", "listen here")
	cmd.Flags().IntVar(&nfds, "fds", 0, "the userfaultfds, from fd 3 on, one per tracked process")
	cmd.Flags().BoolVar(&handoff, "handoff", false, "started ahead: the state and userfaultfds come on fd 3 (a socket pair)")
	rootCmd.AddCommand(cmd)
}

// everyFlagsCheck refuses bad --every, --keep-last, --pre-copy combinations.
func (f *dumpFlags) checkTrack() error {
	switch {
	case f.every < 0:
		return fmt.Errorf("--every %v: must be positive", f.every)
	case f.every > 0 && f.every < 100*time.Millisecond:
		return fmt.Errorf("--every %v: at least 100ms", f.every)
	case f.keepLast < 0:
		return fmt.Errorf("--keep-last %d: must be at least 0", f.keepLast)
	case f.keepLast > 0 && f.every == 0:
		return errors.New("--keep-last needs --every")
	case f.every > 0 && (f.kill || f.preCopy):
		return errors.New("--every cannot be used with --kill or --pre-copy")
	case f.every > 0 && f.name != "":
		return errors.New("--every cannot be used with --name (every checkpoint would have it)")
	case f.noPreCopy && (f.preCopy || f.track || f.every > 0):
		return errors.New("--no-pre-copy cannot be used with --pre-copy, --track or --every")
	}
	return nil
}

func (f *dumpFlags) trackArgs() []string {
	var a []string
	if f.track {
		a = append(a, "--track")
	}
	if f.preCopy {
		a = append(a, "--pre-copy")
	}
	if f.noPreCopy {
		a = append(a, "--no-pre-copy")
	}
	return a
}

func addTrackFlags(cmd *cobra.Command, f *dumpFlags) {
	cmd.Flags().BoolVar(&f.track, "track", false, "write-protect the tree's memory after the dump (a tracker process holds it), so the next --track dump copies only the pages written since")
	cmd.Flags().DurationVar(&f.every, "every", 0, "dump every DURATION (tracked) until the tree exits or SIGINT")
	cmd.Flags().IntVar(&f.keepLast, "keep-last", 0, "with --every: keep only the last N checkpoints of this run (older ones removed, their pages gc'd)")
	cmd.Flags().BoolVar(&f.preCopy, "pre-copy", false, "migration: copy memory while the tree runs, again what it wrote meanwhile while that shrinks, then freeze and copy the rest")
	cmd.Flags().BoolVar(&f.noPreCopy, "no-pre-copy", false, "copy all memory while the tree is frozen, also for a large tree (by default one of 64 MiB or more is copied while it runs, then frozen for what it wrote meanwhile)")
}

// closeInherited closes the fds from first on that were inherited
// (not close-on-exec, unlike every fd Go opens), such as a pipe the
// caller's shell left open: a tracker outlives its caller and must not
// hold such a pipe open.
func closeInherited(first int) {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return
	}
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil || fd < first {
			continue
		}
		if fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err == nil && fl&unix.FD_CLOEXEC == 0 {
			unix.Close(fd)
		}
	}
}
