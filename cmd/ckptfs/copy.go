package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/ckptfs/ckptfs/dedup"
	"github.com/ckptfs/ckptfs/internal/human"
)

func init() {
	var src, dst string
	cmd := &cobra.Command{
		Use:               "copy -s SRC -d DST ID...",
		ValidArgsFunction: completeCheckpoints,
		Short:             "Copy checkpoints between stores, sending only what the destination lacks",
		Long: `Copy checkpoints from the store SRC to the store DST. Either may be a local
store directory or a remote one, s3://BUCKET/PREFIX (see --s3-endpoint; the
credentials come from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY). Only the
pages DST does not hold yet are read and sent; the checkpoint keeps its id,
name and time in DST. A checkpoint DST already has is skipped. Every page
read from SRC is checked against its hash, and DST checks the manifest
again when it loads it. DST is created if missing (as dump creates one).

ID is a checkpoint id, a unique prefix of one, or a name.`,
		Example: `  ckptfs copy -s /var/lib/ckptfs -d s3://ckpt/fleet latest-name
  AWS_ENDPOINT_URL=http://127.0.0.1:9000 ckptfs copy -s s3://ckpt/fleet -d /var/lib/ckptfs 20261201-101010-3f2a`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if src == "" || dst == "" {
				return usageErr(fmt.Errorf("copy: give both -s SRC and -d DST"))
			}
			if src == dst {
				return usageErr(fmt.Errorf("copy: source and destination are the same store"))
			}
			privateUmask()
			from, err := openAnyRepo(src, false)
			if err != nil {
				return err
			}
			defer from.Close()
			to, err := openAnyRepo(dst, true)
			if err != nil {
				return err
			}
			// One phase, "send", over every checkpoint: the bytes of
			// the pages to send, its total growing checkpoint by checkpoint.
			u := newProgress()
			var base, last int64
			lastID := ""
			res, err := dedup.Copy(from, to, args, func(id string, done, total int64) {
				if id != lastID {
					base, lastID = base+last, id
				}
				last = total
				u.update(phaseSend, base+done, base+total)
			})
			u.finish()
			if cerr := to.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
			if globals.json {
				return printJSON(copyJSON(res))
			}
			for _, r := range res {
				if r.Skipped {
					fmt.Printf("%s: already in %s\n", r.ID, dst)
					continue
				}
				fmt.Printf("%s: copied, sent %d of %d pages (%s of %s)\n", r.ID, r.Sent, r.Pages,
					human.Bytes(r.BytesSent), human.Bytes(r.BytesTotal))
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&src, "source", "s", "", "store to copy from (directory or s3://BUCKET/PREFIX)")
	cmd.Flags().StringVarP(&dst, "dest", "d", "", "store to copy to (directory or s3://BUCKET/PREFIX)")
	rootCmd.AddCommand(cmd)
}

// phaseSend is copy's progress phase.
const phaseSend = "send"

// copyResult is one checkpoint of copy's --json output.
type copyResult struct {
	ID         string `json:"id"`
	Name       string `json:"name,omitempty"`
	Skipped    bool   `json:"skipped"`
	Pages      int64  `json:"pages"`
	PagesSent  int64  `json:"pages_sent"`
	BytesSent  int64  `json:"bytes_sent"`
	BytesTotal int64  `json:"bytes_total"`
}

func copyJSON(res []dedup.CopyResult) any {
	out := struct {
		Copied []copyResult `json:"copied"`
	}{Copied: []copyResult{}}
	for _, r := range res {
		out.Copied = append(out.Copied, copyResult{ID: r.ID, Name: r.Name, Skipped: r.Skipped, Pages: r.Pages,
			PagesSent: r.Sent, BytesSent: r.BytesSent, BytesTotal: r.BytesTotal})
	}
	return out
}
