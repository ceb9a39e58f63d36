package main

import (
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/ckptfs/ckptfs/internal/human"
	"github.com/ckptfs/ckptfs/restorer"
)

func init() {
	var verbose, shellJob, leaveStopped, noVerifyPages bool
	cmd := &cobra.Command{
		Use:   "restore [-v] [--shell-job] [--leave-stopped] [--no-verify-pages] DIR",
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
the vma and the page. --no-verify-pages restores a copy edited on purpose.`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeCheckpointDirs,
		RunE: func(cmd *cobra.Command, args []string) error {
			opts := restorer.Options{ShellJob: shellJob, LeaveStopped: leaveStopped, NoVerifyPages: noVerifyPages}
			if w := phaseLog(verbose); w != nil {
				opts.Log = w
			}
			ui := newProgress()
			opts.OnProgress = ui.update
			start := time.Now()
			pid, err := restorer.Restore(args[0], opts)
			ui.finish()
			if err != nil {
				return err
			}
			printRestoreSummary(args[0], pid, time.Since(start))
			return nil
		},
	}
	cmd.Flags().BoolVarP(&verbose, "verbose", "v", false, "print the duration of every phase on stderr")
	cmd.Flags().BoolVar(&shellJob, "shell-job", false, "put terminals and the root's session on restore's own terminal and session")
	cmd.Flags().BoolVar(&leaveStopped, "leave-stopped", false, "leave every restored process stopped (SIGSTOP); resume them with SIGCONT")
	cmd.Flags().BoolVar(&noVerifyPages, "no-verify-pages", false, "do not check every page against its hash in pagemap (for a copy edited on purpose)")
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
