package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/ckptfs/ckptfs/dedup"
	"github.com/ckptfs/ckptfs/internal/ckptdiff"
	"github.com/ckptfs/ckptfs/internal/human"
)

// The --json document of diff (docs/cli.md).
type (
	diffPages struct {
		PagesAdded   int   `json:"pages_added"`
		PagesChanged int   `json:"pages_changed"`
		PagesRemoved int   `json:"pages_removed"`
		BytesAdded   int64 `json:"bytes_added"`
		BytesChanged int64 `json:"bytes_changed"`
		BytesRemoved int64 `json:"bytes_removed"`
	}
	diffVMA struct {
		Start  string `json:"start"`
		End    string `json:"end"`
		Name   string `json:"name,omitempty"`
		Status string `json:"status"`
		diffPages
	}
	diffFD struct {
		FD     int    `json:"fd"`
		Status string `json:"status"` // added (opened), removed (closed), changed
		Path   string `json:"path"`
		Was    string `json:"was,omitempty"`
	}
	diffTask struct {
		PID    int       `json:"pid"`
		Comm   string    `json:"comm"`
		Status string    `json:"status"`
		VMAs   []diffVMA `json:"vmas"`
		FDs    []diffFD  `json:"fds"`
		diffPages
	}
	diffDoc struct {
		From  string     `json:"from"`
		To    string     `json:"to"`
		Tasks []diffTask `json:"tasks"`
		Files struct {
			Added   []string `json:"added"`
			Removed []string `json:"removed"`
			Changed []string `json:"changed"`
		} `json:"files"`
		diffPages
	}
)

func toDiffPages(p ckptdiff.Pages) diffPages {
	a, c, r := p.Bytes()
	return diffPages{p.Added, p.Changed, p.Removed, a, c, r}
}

func diffJSON(from, to string, d *ckptdiff.Diff) diffDoc {
	doc := diffDoc{From: from, To: to, Tasks: []diffTask{}, diffPages: toDiffPages(d.Pages)}
	doc.Files.Added, doc.Files.Removed, doc.Files.Changed = nonNil(d.Files.Added), nonNil(d.Files.Removed), nonNil(d.Files.Changed)
	for _, t := range d.Tasks {
		dt := diffTask{PID: t.PID, Comm: t.Comm, Status: t.Status, VMAs: []diffVMA{}, FDs: []diffFD{}, diffPages: toDiffPages(t.Pages)}
		for _, v := range t.VMAs {
			dt.VMAs = append(dt.VMAs, diffVMA{Start: fmt.Sprintf("%#x", v.Start), End: fmt.Sprintf("%#x", v.End),
				Name: v.Name, Status: v.Status, diffPages: toDiffPages(v.Pages)})
		}
		for _, f := range t.FDs {
			dt.FDs = append(dt.FDs, diffFD{FD: f.Num, Status: f.Status, Path: f.Path, Was: f.Was})
		}
		doc.Tasks = append(doc.Tasks, dt)
	}
	return doc
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// pagesLine is "+3 ~1 -2 pages (+12.0 KiB ~4.0 KiB -8.0 KiB)".
func pagesLine(p ckptdiff.Pages) string {
	a, c, r := p.Bytes()
	return fmt.Sprintf("+%d ~%d -%d pages (+%s ~%s -%s)", p.Added, p.Changed, p.Removed, human.Bytes(a), human.Bytes(c), human.Bytes(r))
}

// maxDiffPaths is how many tree paths of each kind the text diff lists.
const maxDiffPaths = 20

func printDiff(from, to string, d *ckptdiff.Diff) {
	fmt.Printf("%s -> %s: %s\n", from, to, pagesLine(d.Pages))
	for _, t := range d.Tasks {
		if t.Status == ckptdiff.Same {
			fmt.Printf("task %d (%s): same\n", t.PID, t.Comm)
			continue
		}
		fmt.Printf("task %d (%s) %s: %s\n", t.PID, t.Comm, t.Status, pagesLine(t.Pages))
		for _, v := range t.VMAs {
			fmt.Printf("  vma %s %s: %s\n", ckptdiff.VMAName(v), v.Status, pagesLine(v.Pages))
		}
		for _, f := range t.FDs {
			switch f.Status {
			case ckptdiff.Added:
				fmt.Printf("  fd %d new: %s\n", f.Num, f.Path)
			case ckptdiff.Removed:
				fmt.Printf("  fd %d closed: %s\n", f.Num, f.Path)
			default:
				fmt.Printf("  fd %d changed: %s (was %s)\n", f.Num, f.Path, f.Was)
			}
		}
	}
	for _, s := range []struct {
		mark  string
		paths []string
	}{{"+", d.Files.Added}, {"-", d.Files.Removed}, {"~", d.Files.Changed}} {
		if n := len(s.paths); n > maxDiffPaths {
			fmt.Printf("files %s %s ... and %d more (--json lists all)\n", s.mark, strings.Join(s.paths[:maxDiffPaths], " "), n-maxDiffPaths)
		} else if n > 0 {
			fmt.Printf("files %s %s\n", s.mark, strings.Join(s.paths, " "))
		}
	}
}

func diffCmd() *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:   "diff [-s STORE] [--json] ID1 ID2",
		Short: "Show what changed between two checkpoints: pages, fds, tree files",
		Long: `diff compares two checkpoints from their page tables and records (no page is
read, so it is cheap): per task (matched by pid) and vma (matched by start
address) the pages added (+), changed (~) and removed (-) with their bytes,
the fds opened and closed, and the files of the checkpoint tree that were
added, removed or changed. ID is an id, a unique prefix of one, or a name
(the newest checkpoint of that name).`,
		Args:              cobra.ExactArgs(2),
		ValidArgsFunction: completeCheckpoints,
		RunE: func(cmd *cobra.Command, args []string) error {
			return withRepo(dir, func(r dedup.Repo) error {
				a, err := r.Load(args[0])
				if err != nil {
					return err
				}
				b, err := r.Load(args[1])
				if err != nil {
					return err
				}
				d := ckptdiff.Compare(a, b)
				if globals.json {
					return printJSON(diffJSON(a.ID, b.ID, d))
				}
				printDiff(a.ID, b.ID, d)
				return nil
			})
		},
	}
	addStoreFlag(cmd, &dir)
	return cmd
}

func init() { rootCmd.AddCommand(diffCmd()) }
