package main

import (
	"encoding/json"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/ckptfs/ckptfs/dedup"
	"github.com/ckptfs/ckptfs/image"
)

// storeWith commits checkpoints with the given names and ages (no tasks:
// forget looks only at names and times).
func storeWith(t *testing.T, ckpts ...struct {
	name string
	age  time.Duration
}) (string, []string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "store")
	s, err := dedup.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	now := time.Now()
	var ids []string
	for _, c := range ckpts {
		ck := &image.Checkpoint{Name: c.name, Time: now.Add(-c.age), RootPID: 1}
		if err := s.Commit(ck); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, ck.ID)
	}
	return dir, ids
}

type ck = struct {
	name string
	age  time.Duration
}

func TestForget(t *testing.T) {
	day := 24 * time.Hour
	store, ids := storeWith(t, ck{"web", 10 * day}, ck{"web", 3 * day}, ck{"web", time.Hour}, ck{"db", 5 * day}, ck{"db", 2 * time.Hour})

	// A dry run decides per name and removes nothing.
	r := mustCkptfs(t, "forget", "--json", "-s", store, "--keep-last", "1", "--dry-run")
	validate(t, "forget", r.stdout)
	var doc forgetDoc
	if err := json.Unmarshal([]byte(r.stdout), &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Keep) != 2 || len(doc.Remove) != 3 || !doc.DryRun {
		t.Fatalf("dry run: %+v", doc)
	}
	if n := len(listIDs(t, store)); n != 5 {
		t.Fatalf("dry run removed: %d left", n)
	}

	// --name takes one group; --keep-within counts from its newest.
	r = mustCkptfs(t, "forget", "--json", "-s", store, "--name", "web", "--keep-within", "4d", "--prune")
	doc = forgetDoc{}
	json.Unmarshal([]byte(r.stdout), &doc)
	if len(doc.Remove) != 1 || doc.Remove[0].ID != ids[0] || doc.Prune == nil {
		t.Fatalf("forget --name web --keep-within 4d: %+v", doc)
	}
	if got := listIDs(t, store); len(got) != 4 || slices.Contains(got, ids[0]) {
		t.Errorf("left: %v", got)
	}

	// No policy: refused, nothing removed.
	if r := ckptfs(t, "forget", "-s", store); r.code != exitUsage {
		t.Errorf("forget without a policy: exit %d", r.code)
	}
	if r := ckptfs(t, "forget", "-s", store, "--keep-within", "soon"); r.code != exitUsage {
		t.Errorf("bad --keep-within: exit %d", r.code)
	}
}

func listIDs(t *testing.T, store string) []string {
	t.Helper()
	var list []checkpointJSON
	if err := json.Unmarshal([]byte(mustCkptfs(t, "ls", "--json", "-s", store).stdout), &list); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, c := range list {
		ids = append(ids, c.ID)
	}
	return ids
}

func TestParseLongDuration(t *testing.T) {
	for s, want := range map[string]time.Duration{
		"90m": 90 * time.Minute, "36h": 36 * time.Hour, "7d": 7 * 24 * time.Hour,
		"2w": 14 * 24 * time.Hour, "1w2d3h": (9*24 + 3) * time.Hour,
	} {
		if got, err := parseLongDuration(s); err != nil || got != want {
			t.Errorf("%q: %v %v, want %v", s, got, err, want)
		}
	}
	for _, s := range []string{"", "0", "-1h", "xd", "d", "3", "12h1d"} {
		if _, err := parseLongDuration(s); err == nil {
			t.Errorf("%q accepted", s)
		}
	}
}
