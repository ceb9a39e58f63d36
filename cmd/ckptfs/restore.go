package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/ckptfs/ckptfs/restorer"
)

func init() {
	var verbose bool
	cmd := &cobra.Command{
		Use:   "restore [-v] DIR",
		Short: "Restore the processes of a checkpoint tree with their pids",
		Long: `restore rebuilds the processes of a checkpoint directory (MNT/<id> of a mount,
or a copy of it made with cp -a) so that they continue where they were, with
the same pids and thread ids, memory, open files, signal handlers and
registers. Standard fds that were pipes, sockets or terminals are taken from
restore's own stdin, stdout and stderr. Nothing is left behind on failure.
The restored processes run on their own once restore returns; the last line
printed is the root pid.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var opts restorer.Options
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
	rootCmd.AddCommand(cmd)
}
