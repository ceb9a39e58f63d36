package main

import (
	"fmt"
	"os"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/ckptfs/ckptfs/internal/kcheck"
)

// checkDoc is check's --json document.
type checkDoc struct {
	Kernel string          `json:"kernel"`
	EUID   int             `json:"euid"`
	OK     bool            `json:"ok"` // every feature present
	Checks []kcheck.Result `json:"checks"`
}

func checkCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "check [--json]",
		Short: "Tell which kernel features and privileges ckptfs can use here",
		Long: `check probes, like 'criu check', the kernel features and privileges ckptfs
uses: clone3 with set_tid, pidfd_getfd, userfaultfd and its WP_ASYNC feature,
the PAGEMAP_SCAN ioctl, TCP repair, FUSE, the Yama ptrace scope,
CAP_CHECKPOINT_RESTORE and CAP_SYS_RESOURCE. For each missing one it says what
ckptfs cannot do without it. The exit status is 0 even when some are
missing: the report is the answer.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			rs := kcheck.Run()
			doc := checkDoc{Kernel: kcheck.KernelRelease(), EUID: os.Geteuid(), OK: true, Checks: rs}
			for _, r := range rs {
				doc.OK = doc.OK && r.OK
			}
			if globals.json {
				return printJSON(doc)
			}
			fmt.Printf("kernel %s, euid %d\n", doc.Kernel, doc.EUID)
			w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
			for _, r := range rs {
				mark := "ok"
				if !r.OK {
					mark = "MISSING"
				}
				fmt.Fprintf(w, "%s\t%s\t%s\n", r.Name, mark, r.Detail)
				if !r.OK {
					fmt.Fprintf(w, "\t\tdisables: %s\n", r.Disables)
				}
			}
			return w.Flush()
		},
	}
}

func init() { rootCmd.AddCommand(checkCmd()) }
