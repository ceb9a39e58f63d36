package main

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestCopyCLI copies two checkpoints between local stores with --json:
// status lines and the result match the schema, a second copy skips
// them, and the destination lists them under the same ids.
func TestCopyCLI(t *testing.T) {
	src, ids := storeWith(t, ck{"a", 2 * time.Hour}, ck{"b", time.Hour})
	dst := filepath.Join(t.TempDir(), "dst")
	for _, want := range []string{`"skipped": false`, `"skipped": true`} {
		r := mustCkptfsEnv(t, nil, "--json", "copy", "-s", src, "-d", dst, ids[0], "b")
		var doc []string
		for _, l := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
			if strings.HasPrefix(l, `{"message_type"`) {
				validate(t, "status", l)
				continue
			}
			doc = append(doc, l)
		}
		validate(t, "copy", strings.Join(doc, "\n"))
		if strings.Count(r.stdout, want) != 2 {
			t.Fatalf("copy: want two %s:\n%s", want, r.stdout)
		}
	}
	ls := mustCkptfsEnv(t, nil, "ls", "-s", dst).stdout
	for _, id := range ids {
		if !strings.Contains(ls, id) {
			t.Fatalf("ls of the copy lacks %s:\n%s", id, ls)
		}
	}
	if r := ckptfs(t, "copy", "-s", src, ids[0]); r.code != exitUsage {
		t.Fatalf("copy without -d: exit %d, want %d", r.code, exitUsage)
	}
}
