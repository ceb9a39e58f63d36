// Command ckptfs checkpoints running Linux process trees into a
// page-deduplicated store, shows checkpoints as a FUSE tree and restores them.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
)

var rootCmd = &cobra.Command{
	Use:   "ckptfs",
	Short: "Transparent checkpoint/restore of Linux process trees into a deduplicated store",
	Long: `ckptfs dumps a running process tree (ptrace, no help from the program) into a
content-addressed store where every 4 KiB page is kept once across all
checkpoints, shows every checkpoint as a read-only /proc-like FUSE tree, and
restores processes from that tree with their pids, memory and files.`,
	SilenceUsage:  true,
	SilenceErrors: true,
}

// addStoreFlag adds -s/--store to cmd; the default comes from $CKPTFS_STORE.
func addStoreFlag(cmd *cobra.Command, dst *string) {
	cmd.Flags().StringVarP(dst, "store", "s", os.Getenv("CKPTFS_STORE"), "store directory (default $CKPTFS_STORE)")
}

// requireStore returns an error when no store was given.
func requireStore(dir string) error {
	if dir == "" {
		return fmt.Errorf("no store: pass -s STORE or set CKPTFS_STORE")
	}
	return nil
}

// privateUmask makes every file this process creates from here on private
// to its user: the store commands call it, so that the files Badger adds
// to a store (value logs, tables) are 0600 like the rest
// (docs/security.md). restore does not: it recreates files with the modes
// a checkpoint recorded.
func privateUmask() { unix.Umask(0o077) }

func main() {
	if err := rootCmd.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "ckptfs:", err)
		os.Exit(1)
	}
}
