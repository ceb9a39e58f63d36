package main

import (
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/ckptfs/ckptfs/dedup"
	"github.com/ckptfs/ckptfs/internal/human"
	"github.com/ckptfs/ckptfs/internal/retention"
)

// forgetDoc is forget's --json document.
type forgetDoc struct {
	DryRun bool          `json:"dry_run"`
	Keep   []forgetEntry `json:"keep"`
	Remove []forgetEntry `json:"remove"`
	Prune  *gcDoc        `json:"prune,omitempty"`
}

type forgetEntry struct {
	ID      string   `json:"id"`
	Name    string   `json:"name,omitempty"`
	Time    string   `json:"time"`
	Reasons []string `json:"reasons,omitempty"`
}

func forgetCmd() *cobra.Command {
	var (
		dir, name     string
		p             retention.Policy
		dryRun, prune bool
	)
	cmd := &cobra.Command{
		Use:   "forget [-s STORE] [--keep-last N] [--keep-within D] [--keep-hourly N] [--keep-daily N] [--keep-weekly N] [--keep-monthly N] [--keep-yearly N] [--name NAME] [--dry-run] [--prune]",
		Short: "Remove the checkpoints a retention policy does not keep",
		Long: `forget applies a retention policy, with restic's semantics, to each group of
checkpoints of the same name (unnamed checkpoints are a group of their own;
--name NAME takes only that group) and removes what it does not keep:

  --keep-last N      the N newest
  --keep-hourly N    the newest of each of the last N hours that have one
  --keep-daily N     ... days, --keep-weekly N ISO weeks, --keep-monthly N
                     months, --keep-yearly N years
  --keep-within D    every checkpoint made within D (1h30m, 36h, 7d, 2w)
                     of the newest of its group

A checkpoint is kept if any rule keeps it; N = -1 means no limit. Calendar
rules use the local time zone. --dry-run only shows the decision; --prune
runs gc afterwards to free the pages of what was removed.`,
		Example: `  ckptfs forget -s STORE --keep-last 3 --keep-daily 7 --dry-run
  ckptfs forget -s STORE --name web --keep-within 48h --keep-weekly 4 --prune`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			within, err := cmd.Flags().GetString("keep-within")
			if err != nil {
				return err
			}
			if within != "" {
				if p.Within, err = parseLongDuration(within); err != nil {
					return usageErr(fmt.Errorf("--keep-within: %w", err))
				}
			}
			if p.Empty() {
				return usageErr(fmt.Errorf("forget: no policy given (--keep-last, --keep-within, --keep-daily, ...): nothing would be kept"))
			}
			return withRepo(dir, func(r dedup.Repo) error {
				list, err := r.List()
				if err != nil {
					return err
				}
				doc := forgetDoc{DryRun: dryRun, Keep: []forgetEntry{}, Remove: []forgetEntry{}}
				var remove []string
				for _, g := range groupByName(list, name, cmd.Flags().Changed("name")) {
					byID := map[string]dedup.Summary{}
					var items []retention.Item
					for _, s := range g {
						byID[s.ID] = s
						items = append(items, retention.Item{ID: s.ID, Time: s.Time})
					}
					for _, d := range retention.Apply(items, p, time.Local) {
						s := byID[d.ID]
						e := forgetEntry{ID: s.ID, Name: s.Name, Time: s.Time.Format(time.RFC3339), Reasons: d.Reasons}
						if d.Keep {
							doc.Keep = append(doc.Keep, e)
						} else {
							doc.Remove = append(doc.Remove, e)
							remove = append(remove, s.ID)
						}
					}
				}
				if !dryRun && len(remove) > 0 {
					if err := r.Remove(remove...); err != nil {
						return err
					}
				}
				if prune && !dryRun {
					stop := storeProgress(r, "gc", false) // the gc document is in forget's
					res, err := r.GC()
					stop()
					if err != nil {
						return fmt.Errorf("forget: removed %d checkpoint(s), then gc: %w", len(remove), err)
					}
					g := gcJSON(res)
					doc.Prune = &g
				}
				if globals.json {
					return printJSON(doc)
				}
				printForget(doc)
				return nil
			})
		},
	}
	addStoreFlag(cmd, &dir)
	f := cmd.Flags()
	f.IntVar(&p.Last, "keep-last", 0, "keep the N newest checkpoints")
	f.IntVar(&p.Hourly, "keep-hourly", 0, "keep the newest of each of the last N hours")
	f.IntVar(&p.Daily, "keep-daily", 0, "keep the newest of each of the last N days")
	f.IntVar(&p.Weekly, "keep-weekly", 0, "keep the newest of each of the last N ISO weeks")
	f.IntVar(&p.Monthly, "keep-monthly", 0, "keep the newest of each of the last N months")
	f.IntVar(&p.Yearly, "keep-yearly", 0, "keep the newest of each of the last N years")
	f.String("keep-within", "", "keep every checkpoint within DURATION of the newest (1h30m, 36h, 7d, 2w)")
	f.StringVar(&name, "name", "", "only the checkpoints of this name (\"\" for the unnamed ones)")
	f.BoolVarP(&dryRun, "dry-run", "n", false, "only show what would be kept and removed")
	f.BoolVar(&prune, "prune", false, "run gc after removing, to free the pages")
	cmd.RegisterFlagCompletionFunc("name", completeNames)
	return cmd
}

// groupByName splits the checkpoints by name, oldest first in each; with
// only set, just the group named name.
func groupByName(list []dedup.Summary, name string, only bool) [][]dedup.Summary {
	var order []string
	groups := map[string][]dedup.Summary{}
	for _, s := range list {
		if only && s.Name != name {
			continue
		}
		if _, ok := groups[s.Name]; !ok {
			order = append(order, s.Name)
		}
		groups[s.Name] = append(groups[s.Name], s)
	}
	var out [][]dedup.Summary
	for _, n := range order {
		out = append(out, groups[n])
	}
	return out
}

// parseLongDuration is time.ParseDuration with days (d) and weeks (w)
// in front: "7d", "2w3d12h".
func parseLongDuration(s string) (time.Duration, error) {
	var total time.Duration
	rest := s
	for _, u := range []struct {
		suffix string
		d      time.Duration
	}{{"w", 7 * 24 * time.Hour}, {"d", 24 * time.Hour}} {
		if i := strings.Index(rest, u.suffix); i > 0 {
			var n int
			if _, err := fmt.Sscanf(rest[:i], "%d", &n); err != nil || fmt.Sprint(n) != rest[:i] || n < 0 {
				return 0, fmt.Errorf("bad duration %q", s)
			}
			total += time.Duration(n) * u.d
			rest = rest[i+1:]
		}
	}
	if rest != "" {
		d, err := time.ParseDuration(rest)
		if err != nil || d < 0 {
			return 0, fmt.Errorf("bad duration %q (want e.g. 1h30m, 36h, 7d, 2w)", s)
		}
		total += d
	}
	if total <= 0 {
		return 0, fmt.Errorf("bad duration %q: must be positive", s)
	}
	return total, nil
}

func printForget(doc forgetDoc) {
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "ID\tNAME\tTIME\tDECISION")
	for _, set := range []struct {
		verb    string
		entries []forgetEntry
	}{{"keep", doc.Keep}, {"remove", doc.Remove}} {
		for _, e := range set.entries {
			name := e.Name
			if name == "" {
				name = "-"
			}
			tm, _ := time.Parse(time.RFC3339, e.Time)
			decision := set.verb
			if len(e.Reasons) > 0 {
				decision += " (" + strings.Join(e.Reasons, ", ") + ")"
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", e.ID, name, tm.Local().Format("2006-01-02 15:04:05 MST"), decision)
		}
	}
	w.Flush()
	switch {
	case doc.DryRun:
		fmt.Printf("dry run: would keep %d, remove %d checkpoint(s)\n", len(doc.Keep), len(doc.Remove))
	case doc.Prune != nil:
		fmt.Printf("kept %d, removed %d checkpoint(s); gc freed %d pages (%s)\n", len(doc.Keep), len(doc.Remove),
			doc.Prune.PagesFreed, human.Bytes(doc.Prune.BytesFreed))
	default:
		fmt.Printf("kept %d, removed %d checkpoint(s); run 'ckptfs gc' (or forget --prune) to free their pages\n", len(doc.Keep), len(doc.Remove))
	}
}

func init() { rootCmd.AddCommand(forgetCmd()) }
