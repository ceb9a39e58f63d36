package main

import (
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/ckptfs/ckptfs/restorer"
)

// lazy-serve is the page server of `restore --lazy`, started by restore
// itself with its control socket at fd 3; not for use by hand.
func init() {
	var since int64
	cmd := &cobra.Command{
		Use:    "lazy-serve",
		Short:  "Serve the pages of a lazy restore (started by restore --lazy)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cmd.SilenceUsage = true
			return restorer.ServeLazy(os.NewFile(3, "lazy-ctl"), time.Unix(0, since), os.Stderr, nil)
		},
	}
	cmd.Flags().Int64Var(&since, "since", time.Now().UnixNano(), "when the restore began (unix ns)")
	rootCmd.AddCommand(cmd)
}
