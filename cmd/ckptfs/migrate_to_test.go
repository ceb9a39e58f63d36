package main

import (
	"strings"
	"testing"
)

// TestMigrateToRefused: migrate of a process refuses, with the usage
// status and nothing done, a missing --to or pid, a host name for --to,
// and a bad pid; the restore hint quotes what a shell would split.
func TestMigrateToRefused(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"migrate", "123"}, "needs --to"},
		{[]string{"migrate", "--to", "s3://b/p"}, "needs the PID"},
		{[]string{"migrate", "123", "--to", "otherhost:/var/lib/ckptfs"}, "a store both hosts reach"},
		{[]string{"migrate", "x1", "--to", "s3://b/p"}, "bad pid"},
	} {
		r := ckptfs(t, c.args...)
		if r.code != exitUsage || !strings.Contains(r.stderr, c.want) {
			t.Errorf("ckptfs %s: exit %d, stderr %q; want %d and %q", strings.Join(c.args, " "), r.code, r.stderr, exitUsage, c.want)
		}
	}
	hint := restoreHint("/srv/a store", "20261201-101010-3f2a")
	if !strings.Contains(hint, "-s '/srv/a store' ") || !strings.Contains(hint, "ckptfs restore /run/ckptfs-mnt/20261201-101010-3f2a") {
		t.Errorf("restore hint:\n%s", hint)
	}
}
