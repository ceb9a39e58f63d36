package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// TestUsageLinesNameEveryFlag: the usage line of every command names each
// of its own flags (global ones are in docs/cli.md and --help).
func TestUsageLinesNameEveryFlag(t *testing.T) {
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		for _, sub := range c.Commands() {
			if sub.Hidden || sub.Name() == "help" || sub.Name() == "completion" {
				continue
			}
			sub.LocalNonPersistentFlags().VisitAll(func(f *pflag.Flag) {
				if f.Hidden || f.Name == "help" {
					return
				}
				if !strings.Contains(sub.Use, "--"+f.Name) && (f.Shorthand == "" || !strings.Contains(sub.Use, "-"+f.Shorthand+" ") && !strings.Contains(sub.Use, "-"+f.Shorthand+"]")) {
					t.Errorf("%s: usage line %q does not name --%s", sub.Name(), sub.Use, f.Name)
				}
			})
			walk(sub)
		}
	}
	walk(rootCmd)
}

// TestCompletion: cobra's hidden __complete gives checkpoint ids and names
// for rm and diff, pids with their comm for dump, directories for -s.
func TestCompletion(t *testing.T) {
	store, ids := storeWith(t, ck{"web", 2 * 3600e9}, ck{"", 3600e9})
	r := mustCkptfs(t, "__complete", "rm", "-s", store, "")
	for _, want := range []string{ids[0] + "\tweb ", ids[1] + "\t", "web\tnewest checkpoint named web"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("rm completion has no %q:\n%s", want, r.stdout)
		}
	}
	r = mustCkptfs(t, "__complete", "diff", "-s", store, ids[0], ids[1][:8])
	if !strings.Contains(r.stdout, ids[1]) {
		t.Errorf("diff completion of a prefix:\n%s", r.stdout)
	}
	r = mustCkptfs(t, "__complete", "forget", "-s", store, "--name", "")
	if !strings.Contains(r.stdout, "web\t") || strings.Contains(r.stdout, ids[0]) {
		t.Errorf("forget --name completion:\n%s", r.stdout)
	}
	self := strconv.Itoa(os.Getpid())
	r = mustCkptfs(t, "__complete", "dump", self)
	if !strings.Contains(r.stdout, self+"\t"+filepath.Base(os.Args[0])[:min(15, len(filepath.Base(os.Args[0])))]) {
		t.Errorf("dump completion has no %s with its comm:\n%s", self, r.stdout)
	}
	r = mustCkptfs(t, "__complete", "ls", "-s", "")
	if !strings.Contains(r.stdout, ":16") { // ShellCompDirectiveFilterDirs
		t.Errorf("-s does not complete directories:\n%s", r.stdout)
	}
	// A missing store completes nothing and creates nothing.
	missing := filepath.Join(t.TempDir(), "none")
	mustCkptfs(t, "__complete", "rm", "-s", missing, "")
	if _, err := os.Stat(missing); !os.IsNotExist(err) {
		t.Errorf("completion created %s", missing)
	}
}

// TestLsTimeHasZone: ls says the zone of its times.
func TestLsTimeHasZone(t *testing.T) {
	store, _ := storeWith(t, ck{"x", 0})
	cmd := mustCkptfsEnv(t, []string{"TZ=Europe/Paris"}, "ls", "-s", store)
	if !strings.Contains(cmd.stdout, " CET") && !strings.Contains(cmd.stdout, " CEST") {
		t.Errorf("ls in TZ=Europe/Paris:\n%s", cmd.stdout)
	}
}
