package main

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/ckptfs/ckptfs/internal/human"
	"github.com/ckptfs/ckptfs/restorer"
)

func init() {
	var verbose, shellJob, leaveStopped, noVerifyPages, pidNS, lazy, lazyWait, tcpClose bool
	var pidFile, lazyLog string
	var inheritFDs []string
	cmd := &cobra.Command{
		Use:   "restore [-v] [--shell-job] [--leave-stopped] [--no-verify-pages] [--pidns] [--pidfile FILE] [--lazy [--lazy-log FILE] [--lazy-wait]] [--inherit-fd fd[N]:KEY]... [--tcp-close] DIR",
		Short: "Restore the processes of a checkpoint tree with their pids",
		Long: `restore rebuilds the processes of a checkpoint directory (MNT/<id> of a mount,
or a copy of it made with cp -a) so that they continue where they were, with
the same pids and thread ids, memory, open files, signal handlers and
registers. Standard fds that were pipes or sockets to the outside are taken
from restore's own stdin, stdout and stderr. Any other pipe or socket whose
other end was outside the checkpoint (a pipe the shell leaked, a jobserver
pipe) is made again with no peer: a reader gets the bytes that were queued,
then EOF; a writer gets EPIPE, as if the peer had exited. --inherit-fd
fd[N]:KEY (repeatable, like CRIU's) instead connects it to restore's own fd N:
KEY is the object as the tree shows it, an fd's path in tasks/PID/fdinfo/N
(pipe:[1234], socket:[5678]) or its object (pipe-1234). Nothing is left
behind on failure.

A program that holds a terminal or has a controlling terminal (one started
from a shell on a terminal) is refused unless --shell-job is given: then its
terminal fds become restore's own terminal, its session restore's session
(so the terminal is its controlling terminal) and, if its process group was
in the foreground, it is in the foreground again, like CRIU's --shell-job.
The restored processes run on their own once restore returns; the last line
printed is the root pid.

Before any process is created every page to be written is checked against
its hash in its vma's pagemap: a damaged copy is refused, naming the task,
the vma and the page. --no-verify-pages restores a copy edited on purpose.

--pidns restores into a new pid namespace (with a mount namespace whose /proc
is its own), where every task gets its recorded pid even if that pid is taken
outside: the original can keep running, and any number of copies can run side
by side. Pid 1 of the namespace is a minimal init (unless the root's pid is 1)
that reaps orphans, passes SIGHUP, SIGINT and SIGTERM on to the root and exits
with the root's exit code (128+n if signal n killed it). A tree dumped inside
a pid namespace (unshare -pf --mount-proc) always gets one, with the pids it
had there. The pid printed is the root's as seen from outside; --pidfile
writes it to FILE too.

With --lazy the processes run before their anonymous memory is in: a page
server (a process of ckptfs in a session of its own, logging to --lazy-log)
answers their page faults from the checkpoint and fills the rest in the
background, checking every page against its hash first, then exits. A page
that cannot be read or does not match its hash is never given: the program
gets SIGBUS, and the log says why. --lazy-wait makes restore return only
once every page is in, showing the fill (bytes, rate, ETA) on a terminal;
if some pages could not be served it prints the root pid and exits 1.`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeCheckpointDirs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if lazyWait && !lazy {
				return usageErr(errors.New("--lazy-wait needs --lazy"))
			}
			opts := restorer.Options{ShellJob: shellJob, LeaveStopped: leaveStopped, NoVerifyPages: noVerifyPages, PidNS: pidNS, TCPClose: tcpClose,
				Lazy: lazy, LazyLog: lazyLog, LazyWait: lazyWait}
			for _, s := range inheritFDs {
				in, err := restorer.ParseInheritFD(s)
				if err != nil {
					return usageErr(err)
				}
				opts.InheritFDs = append(opts.InheritFDs, in)
			}
			if w := phaseLog(verbose); w != nil {
				opts.Log = w
			}
			ui := newProgress()
			opts.OnProgress = ui.update
			start := time.Now()
			pid, err := restorer.Restore(args[0], opts)
			ui.finish()
			if errors.Is(err, restorer.ErrLazyFill) {
				fmt.Println(pid) // the processes run, some of their pages poisoned
			}
			if err != nil {
				return err
			}
			if pidFile != "" {
				if err := os.WriteFile(pidFile, []byte(fmt.Sprintf("%d\n", pid)), 0o644); err != nil {
					return fmt.Errorf("restored as pid %d, but: %w", pid, err)
				}
			}
			printRestoreSummary(args[0], pid, time.Since(start))
			return nil
		},
	}
	cmd.Flags().BoolVarP(&verbose, "verbose", "v", false, "print the duration of every phase on stderr")
	cmd.Flags().BoolVar(&shellJob, "shell-job", false, "put terminals and the root's session on restore's own terminal and session")
	cmd.Flags().BoolVar(&leaveStopped, "leave-stopped", false, "leave every restored process stopped (SIGSTOP); resume them with SIGCONT")
	cmd.Flags().BoolVar(&noVerifyPages, "no-verify-pages", false, "do not check every page against its hash in pagemap (for a copy edited on purpose)")
	cmd.Flags().BoolVar(&tcpClose, "tcp-close", false, "restore established TCP connections closed (the program reads a reset)")
	cmd.Flags().BoolVar(&pidNS, "pidns", false, "restore into a new pid namespace, where every recorded pid is free")
	cmd.Flags().StringVar(&pidFile, "pidfile", "", "write the root's pid (as seen from outside) to `FILE`")
	cmd.Flags().BoolVar(&lazy, "lazy", false, "run the processes at once and fill their memory while they run")
	cmd.Flags().BoolVar(&lazyWait, "lazy-wait", false, "with --lazy: return once every page is in, showing the fill's progress")
	cmd.Flags().StringVar(&lazyLog, "lazy-log", "", "the lazy page server's log file (default $TMPDIR/ckptfs-lazy-<restore's pid>.log)")
	cmd.Flags().StringArrayVar(&inheritFDs, "inherit-fd", nil, "give the tree's pipe or socket KEY (pipe:[INO] as in fdinfo) restore's own fd N: `fd[N]:KEY`")
	rootCmd.AddCommand(cmd)
}

// restoreSummary is restore's --json result line.
type restoreSummary struct {
	MessageType  string  `json:"message_type"` // "summary"
	Dir          string  `json:"dir"`
	RootPID      int     `json:"root_pid"`
	TotalSeconds float64 `json:"total_seconds"`
}

// printRestoreSummary prints the root pid (the last line), or the --json
// summary line.
func printRestoreSummary(dir string, pid int, took time.Duration) {
	if globals.json {
		writeJSONLine(os.Stdout, restoreSummary{MessageType: "summary", Dir: dir, RootPID: pid, TotalSeconds: took.Seconds()})
		return
	}
	if !globals.quiet {
		fmt.Fprintf(os.Stderr, "restored %s in %s\n", dir, human.Duration(took))
	}
	fmt.Println(pid)
}
