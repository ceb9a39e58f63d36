package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/ckptfs/ckptfs/restorer"
)

func init() {
	var verbose, shellJob, leaveStopped, noVerifyPages, lazy bool
	var lazyLog string
	cmd := &cobra.Command{
		Use:   "restore [-v] [--shell-job] DIR",
		Short: "Restore the processes of a checkpoint tree with their pids",
		Long: `restore rebuilds the processes of a checkpoint directory (MNT/<id> of a mount,
or a copy of it made with cp -a) so that they continue where they were, with
the same pids and thread ids, memory, open files, signal handlers and
registers. Standard fds that were pipes or sockets to the outside are taken
from restore's own stdin, stdout and stderr. Nothing is left behind on failure.

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

With --lazy the processes run before their anonymous memory is in: a page
server (a process of ckptfs in a session of its own, logging to --lazy-log)
answers their page faults from the checkpoint and fills the rest in the
background, checking every page against its hash first, then exits. A page
that cannot be read or does not match its hash is never given: the program
gets SIGBUS, and the log says why.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts := restorer.Options{ShellJob: shellJob, LeaveStopped: leaveStopped, NoVerifyPages: noVerifyPages, Lazy: lazy, LazyLog: lazyLog}
			if verbose {
				opts.Log = os.Stderr
			}
			pid, err := restorer.Restore(args[0], opts)
			if err != nil {
				return err
			}
			fmt.Println(pid)
			return nil
		},
	}
	cmd.Flags().BoolVarP(&verbose, "verbose", "v", false, "print the duration of every phase on stderr")
	cmd.Flags().BoolVar(&shellJob, "shell-job", false, "put terminals and the root's session on restore's own terminal and session")
	cmd.Flags().BoolVar(&leaveStopped, "leave-stopped", false, "leave every restored process stopped (SIGSTOP); resume them with SIGCONT")
	cmd.Flags().BoolVar(&noVerifyPages, "no-verify-pages", false, "do not check every page against its hash in pagemap (for a copy edited on purpose)")
	cmd.Flags().BoolVar(&lazy, "lazy", false, "run the processes at once and fill their memory while they run")
	cmd.Flags().StringVar(&lazyLog, "lazy-log", "", "the lazy page server's log file (default $TMPDIR/ckptfs-lazy-<restore's pid>.log)")
	rootCmd.AddCommand(cmd)
}
