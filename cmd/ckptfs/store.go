package main

import (
	"errors"
	"fmt"
	"os"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/ckptfs/ckptfs/dedup"
	"github.com/ckptfs/ckptfs/internal/human"
)

func init() {
	rootCmd.AddCommand(lsCmd(), statsCmd(), rmCmd(), gcCmd(), verifyCmd())
}

// withRepo opens the store (locally, or through the mount that owns it)
// and runs f. A directory that is not a store is refused: these commands
// never create one.
func withRepo(dir string, f func(dedup.Repo) error) error {
	if err := requireStore(dir); err != nil {
		return err
	}
	privateUmask()
	r, err := openAnyRepo(dir, false)
	if err != nil {
		return err
	}
	err = f(r)
	if cerr := r.Close(); err == nil {
		err = cerr
	}
	return err
}

func lsCmd() *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:   "ls [-s STORE] [--json]",
		Short: "List the checkpoints of a store, oldest first",
		Long: `List the checkpoints of a store, oldest first: id, name, time, root pid,
number of tasks, memory saved (logical size) and the bytes the checkpoint
added to the store (what deduplication did not find there already).
Works whether or not the store is mounted.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return withRepo(dir, func(r dedup.Repo) error {
				list, err := r.List()
				if err != nil {
					return err
				}
				if globals.json {
					return printJSON(lsJSON(list))
				}
				w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
				fmt.Fprintln(w, "ID\tNAME\tTIME\tROOT PID\tTASKS\tMEMORY\tADDED")
				for _, s := range list {
					name := s.Name
					if name == "" {
						name = "-"
					}
					fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%d\t%s\t%s\n", s.ID, name,
						s.Time.Local().Format("2006-01-02 15:04:05 MST"), s.RootPID, s.Tasks,
						human.Bytes(s.MemoryBytes), human.Bytes(s.BytesAdded))
				}
				return w.Flush()
			})
		},
	}
	addStoreFlag(cmd, &dir)
	return cmd
}

func statsCmd() *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:   "stats [-s STORE] [--json]",
		Short: "Show logical vs stored bytes and the deduplication ratio",
		Long: `Show the figures of a store: the number of checkpoints, their logical size
(the sum of the memory every checkpoint saved), the unique pages actually
stored, the size of the store directory on disk, and the deduplication
ratio (logical / stored page bytes). Zero pages are never stored and count
in neither.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return withRepo(dir, func(r dedup.Repo) error {
				st, err := r.Stats()
				if err != nil {
					return err
				}
				if globals.json {
					return printJSON(statsJSON(st))
				}
				fmt.Printf("checkpoints:   %d\n", st.Checkpoints)
				fmt.Printf("logical:       %s (%d bytes)\n", human.Bytes(st.LogicalBytes), st.LogicalBytes)
				fmt.Printf("stored pages:  %d (%s)\n", st.Pages, human.Bytes(st.PageBytes))
				fmt.Printf("on disk:       %s\n", human.Bytes(st.DiskBytes))
				fmt.Printf("dedup ratio:   %.2fx\n", st.Ratio)
				return nil
			})
		},
	}
	addStoreFlag(cmd, &dir)
	return cmd
}

func rmCmd() *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:               "rm [-s STORE] ID...",
		ValidArgsFunction: completeCheckpoints,
		Short:             "Remove checkpoints (their pages are freed by gc)",
		Long: `Remove checkpoints from a store. ID is a checkpoint id, a unique prefix of
one, or a name given with dump --name (the newest checkpoint of that name).
Pages that no other checkpoint uses stay in the store until 'ckptfs gc'.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withRepo(dir, func(r dedup.Repo) error {
				if err := r.Remove(args...); err != nil {
					return err
				}
				if globals.json {
					return printJSON(struct {
						Removed []string `json:"removed"`
					}{args})
				}
				fmt.Printf("removed %d checkpoint(s); run 'ckptfs gc' to free their pages\n", len(args))
				return nil
			})
		},
	}
	addStoreFlag(cmd, &dir)
	return cmd
}

func gcCmd() *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:   "gc [-s STORE] [--json]",
		Short: "Delete pages no checkpoint uses and give the space back",
		Long: `Mark and sweep: every page referenced by a live checkpoint is kept, every
other page is deleted, as are the page tables of dumps that were
interrupted before their commit. Then the database gives the space back to
the file system. gc refuses to run while a dump is writing to the store.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return withRepo(dir, func(r dedup.Repo) error {
				stop := storeProgress(r, "gc", true)
				res, err := r.GC()
				stop()
				if err != nil {
					return err
				}
				if globals.json {
					return printJSON(gcJSON(res))
				}
				fmt.Printf("freed %d pages (%s)", res.Pages, human.Bytes(res.Bytes))
				if res.Tables > 0 {
					fmt.Printf(" and %d unused page-table chunks", res.Tables)
				}
				if res.PacksDropped > 0 || res.PacksRewritten > 0 {
					fmt.Printf("; packs dropped %d, rewritten %d", res.PacksDropped, res.PacksRewritten)
				}
				fmt.Printf("; store on disk %s -> %s\n", human.Bytes(res.DiskBefore), human.Bytes(res.DiskAfter))
				return nil
			})
		},
	}
	addStoreFlag(cmd, &dir)
	return cmd
}

func verifyCmd() *cobra.Command {
	var dir string
	var repair bool
	cmd := &cobra.Command{
		Use:   "verify [-s STORE] [--repair] [--json]",
		Short: "Re-hash every page and check every checkpoint's references",
		Long: `Read every stored page and check it against its hash, then check every
checkpoint's manifest and page tables against their hashes and that every
page it references is present and sound. Each problem is
printed on a line of its own, naming the page hash and the checkpoint, task
and vma that use it; the exit status is non-zero if there is any.

A store whose files are damaged so that opening it would lose data (a
value log with good entries after a damaged one, a missing Badger MANIFEST)
is not opened: verify says so. --repair salvages such a store (it must not
be mounted): every checkpoint whose manifest, page tables and pages are all
sound is kept, the others are listed as lost; the old files are kept in
STORE/damaged-<time>/. The repaired store is then verified.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if repair {
				if err := repairStore(dir); err != nil {
					return err
				}
			}
			return withRepo(dir, func(r dedup.Repo) error {
				stop := storeProgress(r, "verify", true)
				problems, err := r.Verify()
				stop()
				if err != nil {
					return err
				}
				if globals.json {
					if err := printJSON(verifyResult{OK: len(problems) == 0, Problems: append([]string{}, problems...)}); err != nil {
						return err
					}
				} else {
					for _, p := range problems {
						fmt.Println(p)
					}
				}
				if len(problems) > 0 {
					return fmt.Errorf("verify: %d problem(s) in store %s: %w", len(problems), dir, errDamage)
				}
				if !globals.json {
					fmt.Println("ok: every page, manifest, page table and reference checked")
				}
				return nil
			})
		},
	}
	addStoreFlag(cmd, &dir)
	cmd.Flags().BoolVar(&repair, "repair", false, "salvage every checkpoint that is still whole into a new store, then verify it")
	return cmd
}

// announceNewStore says on stderr that dump is about to create a store in
// dir (missing, or an empty directory), so that a mistyped -s shows.
func announceNewStore(dir, cmd string) error {
	ok, err := dedup.IsStore(dir)
	if err != nil {
		return err
	}
	if !ok {
		infof("%s: creating new store at %s", cmd, dir)
	}
	return nil
}

// repairStore runs dedup.Repair on an unmounted store and prints its report.
func repairStore(dir string) error {
	if err := requireStore(dir); err != nil {
		return err
	}
	if dedup.IsRemote(dir) {
		return usageErr(fmt.Errorf("verify --repair works on a local store only (copy the sound checkpoints out of %s with 'ckptfs copy')", dir))
	}
	rep, err := dedup.Repair(dir)
	if errors.Is(err, dedup.ErrLocked) {
		return fmt.Errorf("verify --repair needs the store to itself (unmount it first): %w", err)
	}
	if err != nil {
		return err
	}
	out := os.Stdout
	if globals.json { // stdout is for verify's JSON document
		out = os.Stderr
	}
	for _, p := range rep.Problems {
		fmt.Fprintln(out, "damage:", p)
	}
	for _, k := range rep.Kept {
		fmt.Fprintln(out, "kept:", k)
	}
	for _, l := range rep.Lost {
		fmt.Fprintln(out, "lost:", l)
	}
	fmt.Fprintf(out, "repair: %d checkpoint(s) kept, %d lost; %d pages salvaged, %d damaged pages dropped; old files in %s\n",
		len(rep.Kept), len(rep.Lost), rep.Pages, rep.PagesDamaged, rep.OldFiles)
	return nil
}
