package main

import (
	"cmp"
	"fmt"
	"os"
	"runtime/debug"
	"strconv"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/ckptfs/ckptfs/dedup"
	"github.com/ckptfs/ckptfs/dumper"
)

func init() {
	var store, name string
	var kill, verbose bool
	var memBudget int64
	cmd := &cobra.Command{
		Use:   "dump [-s STORE] [--name NAME] [--kill] PID",
		Short: "Checkpoint the process tree rooted at PID into the store",
		Long: `dump seizes every thread of the process tree rooted at PID with ptrace (the
program sees no signal), records registers, memory, files and the rest, stores
every new 4 KiB page once by content hash and releases the tree running.
If the dump fails at any point the tree is released unchanged.
The last line printed is the checkpoint id.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) (retErr error) {
			if err := requireStore(store); err != nil {
				return err
			}
			pid, err := strconv.Atoi(args[0])
			if err != nil || pid <= 0 {
				return fmt.Errorf("bad pid %q", args[0])
			}
			if name != "" {
				if err := dedup.CheckEntryName(name); err != nil {
					return fmt.Errorf("--name: %w", err)
				}
			}
			_, statErr := os.Stat(store)
			created := os.IsNotExist(statErr)
			if err := announceNewStore(store); err != nil {
				return err
			}
			privateUmask()
			repo, err := dedup.OpenRepo(store)
			if err != nil {
				return err
			}
			defer func() {
				repo.Close()
				if created && retErr != nil {
					// A failed first dump leaves no empty store behind.
					os.RemoveAll(store)
				}
			}()
			if memBudget < 0 {
				return fmt.Errorf("--mem-budget %d: must be at least 0", memBudget)
			}
			opts := dumper.Options{Name: name, Kill: kill, MemoryBudget: memBudget << 20}
			// The Go heap (pages in flight, the store's tables) is kept
			// near the page budget plus 256 MiB: the GC works harder
			// rather than let garbage double the heap.
			debug.SetMemoryLimit(cmp.Or(opts.MemoryBudget, dumper.DefaultMemoryBudget) + 256<<20)
			if verbose {
				opts.Log = os.Stderr
			}
			if term.IsTerminal(int(os.Stderr.Fd())) {
				opts.Progress = os.Stderr
			}
			res, err := dumper.Dump(repo, pid, opts)
			if err != nil {
				return err
			}
			c := res.Checkpoint
			if opts.Progress != nil {
				fmt.Fprint(os.Stderr, "\r\033[K")
			}
			fmt.Fprintf(os.Stderr, "dumped %d task(s), %d MiB in %d pages (%d zero), %d new pages added %d KiB; frozen %v, total %v\n",
				len(c.Tasks), c.MemoryBytes()>>20, c.Stats.PagesTotal, c.Stats.PagesZero, c.Stats.PagesNew,
				c.Stats.BytesAdded>>10, res.Freeze.Round(100_000), res.Elapsed.Round(100_000))
			fmt.Println(c.ID)
			return nil
		},
	}
	addStoreFlag(cmd, &store)
	cmd.Flags().StringVar(&name, "name", "", "name the checkpoint (shown under by-name/ in the mount)")
	cmd.Flags().BoolVar(&kill, "kill", false, "kill the tree after a successful dump (migration)")
	cmd.Flags().BoolVarP(&verbose, "verbose", "v", false, "print the duration of every phase on stderr")
	cmd.Flags().Int64Var(&memBudget, "mem-budget", 0, "MiB of pages held in memory while the tree is frozen; the rest go to a spill file in $TMPDIR (default 256)")
	rootCmd.AddCommand(cmd)
}
