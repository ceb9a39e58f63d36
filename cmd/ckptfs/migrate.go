package main

import (
	"fmt"
	"os"

	"github.com/ckptfs/ckptfs/dedup"
	"github.com/spf13/cobra"
)

func init() { rootCmd.AddCommand(migrateCmd()) }

func migrateCmd() *cobra.Command {
	var dir string
	var to migrateToFlags // migrate_to.go
	cmd := &cobra.Command{
		Use:   "migrate -s STORE | migrate PID --to STORE [--name NAME] [-v] [--tcp-established] [--mem-budget MIB]",
		Short: "Convert a store of an older format in place; or move a running tree to another host",
		Long: `Converts a store written by an older ckptfs (store format 1 or 2: pages in
Badger's value log) to the current format (3: pages in pack files, page
tables as content-addressed chunks). Every checkpoint keeps its id, name,
time and contents; pages no checkpoint references are dropped. The store
must not be mounted. An interrupted migrate leaves the old format in place
and finishes when run again; afterwards an older ckptfs cannot read the
store. docs/store-format.md describes the formats.

migrate PID --to STORE moves the tree at PID to another host through
STORE (s3://BUCKET/PREFIX, or a directory the destination reaches): its
memory is copied into STORE while it runs (dump --pre-copy), the tree is
frozen once for what it wrote meanwhile, killed when the checkpoint is
committed, and the commands that restore it on the destination are printed.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 || to.to != "" {
				if len(args) != 1 {
					return usageErr(fmt.Errorf("migrate --to needs the PID of the tree to move"))
				}
				if err := checkMigrateTo(to, args[0]); err != nil {
					return err
				}
				os.Exit(runMigrateTo(to, args[0]))
			}
			if err := requireStore(dir); err != nil {
				return err
			}
			ok, err := dedup.IsStore(dir)
			if err != nil {
				return err
			}
			if !ok {
				return fmt.Errorf("%s is %w", dir, dedup.ErrNotStore)
			}
			privateUmask()
			rep, err := dedup.Migrate(dir)
			if err != nil {
				return err
			}
			if rep.From == rep.To {
				fmt.Printf("store %s has format %d already: nothing to do\n", dir, rep.To)
				return nil
			}
			fmt.Printf("store %s: format %d -> %d: %d checkpoint(s), %d page(s) moved into packs, %d unreferenced page(s) dropped\n",
				dir, rep.From, rep.To, rep.Checkpoints, rep.Pages, rep.Dropped)
			return nil
		},
	}
	addStoreFlag(cmd, &dir)
	to.add(cmd)
	return cmd
}
