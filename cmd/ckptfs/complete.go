package main

import (
	"os"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/ckptfs/ckptfs/dedup"
)

// Dynamic completion (cobra's `ckptfs completion bash|zsh|fish`): store
// directories for -s, checkpoint ids and names for rm and diff, pids with
// their comm for dump.

// completeDirs completes a directory (-s STORE).
func completeDirs(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
	return nil, cobra.ShellCompDirectiveFilterDirs
}

// completeCheckpoints completes checkpoint ids and names of the store
// given by -s (or $CKPTFS_STORE), if it exists; it never creates one.
func completeCheckpoints(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
	dir, _ := cmd.Flags().GetString("store")
	if dir == "" {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	if ok, err := dedup.IsStore(dir); err != nil || !ok {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	r, err := dedup.OpenExistingRepo(dir)
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	defer r.Close()
	list, err := r.List()
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	return checkpointCompletions(list, toComplete), cobra.ShellCompDirectiveNoFileComp
}

// checkpointCompletions gives "id\tname time" for every checkpoint and
// every name once, those that start with prefix.
func checkpointCompletions(list []dedup.Summary, prefix string) []string {
	var out []string
	names := map[string]bool{}
	for _, s := range list {
		if strings.HasPrefix(s.ID, prefix) {
			desc := s.Time.Local().Format("2006-01-02 15:04:05 MST")
			if s.Name != "" {
				desc = s.Name + " " + desc
			}
			out = append(out, s.ID+"\t"+desc)
		}
		if s.Name != "" && !names[s.Name] && strings.HasPrefix(s.Name, prefix) {
			names[s.Name] = true
			out = append(out, s.Name+"\tnewest checkpoint named "+s.Name)
		}
	}
	return out
}

// completePids completes the pids of running processes with their comm.
func completePids(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	self := os.Getpid()
	var out []string
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self || !strings.HasPrefix(e.Name(), toComplete) {
			continue
		}
		comm, err := os.ReadFile("/proc/" + e.Name() + "/comm")
		if err != nil {
			continue
		}
		out = append(out, e.Name()+"\t"+strings.TrimSpace(string(comm)))
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}

// completeCheckpointDirs completes restore's DIR: directories (MNT/<id>,
// MNT/latest, MNT/by-name/<name>, a copy).
func completeCheckpointDirs(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	return nil, cobra.ShellCompDirectiveFilterDirs
}

// completeNames completes the checkpoint names of the store given by -s.
func completeNames(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
	all, d := completeCheckpoints(cmd, args, toComplete)
	var names []string
	for _, c := range all {
		if strings.Contains(c, "\tnewest checkpoint named ") {
			names = append(names, c)
		}
	}
	return names, d
}
