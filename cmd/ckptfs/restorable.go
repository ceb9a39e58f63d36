package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/ckptfs/ckptfs/dedup"
	"github.com/ckptfs/ckptfs/dumper"
	"github.com/ckptfs/ckptfs/restorer"
)

// restorable applies to a checkpoint of a store the rules of restore's
// preflight that depend on the tree alone (restorer.Refusals): the
// end-to-end tests run it on every checkpoint they dump, so a dump that
// succeeds is one a restore does not refuse. With CKPTFS_TEST_RESTORABLE
// set, every dump checks what it committed the same way.
func init() {
	dumper.RestoreRules = restorer.Refusals // CKPTFS_TEST_RESTORABLE (dumper/restorable.go)
	var dir string
	cmd := &cobra.Command{
		Use:    "restorable [-s STORE] ID",
		Short:  "Check a checkpoint against the rules restore refuses by",
		Hidden: true,
		Args:   cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withRepo(dir, func(r dedup.Repo) error {
				c, err := r.Load(args[0])
				if err != nil {
					return err
				}
				if err := restorer.Refusals(c); err != nil {
					return fmt.Errorf("checkpoint %s would be refused by restore: %w", c.ID, err)
				}
				return nil
			})
		},
	}
	addStoreFlag(cmd, &dir)
	rootCmd.AddCommand(cmd)
}
