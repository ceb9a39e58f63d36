package tests

import (
	"context"
	"crypto/rand"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ckptfs/ckptfs/dedup"
	"github.com/ckptfs/ckptfs/image"
)

// dedupCkptfs is the ckptfs binary the harness built.
func dedupCkptfs(t *testing.T) string { return filepath.Join(built(t), "ckptfs") }

func dedupRun(t *testing.T, args ...string) (string, error) {
	t.Helper()
	out, err := exec.Command(dedupCkptfs(t), args...).CombinedOutput()
	return string(out), err
}

// dedupCommit stores n random pages (plus, if bad, one page under a wrong
// hash) and commits a one-task checkpoint of them.
func dedupCommit(t *testing.T, r dedup.Repo, name string, n int, bad bool) *image.Checkpoint {
	t.Helper()
	v := &image.VMA{Start: 0x10000, End: 0x10000 + uint64(n+1)*image.PageSize, Perms: "rw-p", Kind: image.VMAAnon}
	var hs []image.Hash
	var ps [][]byte
	for i := 0; i < n; i++ {
		p := make([]byte, image.PageSize)
		rand.Read(p)
		h := dedup.Sum(p)
		if bad && i == n-1 {
			q := make([]byte, image.PageSize)
			rand.Read(q)
			h = dedup.Sum(q) // p stored under q's hash: corrupt
		}
		hs, ps = append(hs, h), append(ps, p)
		v.Pages = append(v.Pages, image.PageRef{Index: uint32(i), Hash: h})
	}
	added, err := r.PutPages(hs, ps)
	if err != nil {
		t.Fatal(err)
	}
	c := &image.Checkpoint{Name: name, RootPID: 4242, Stats: image.Stats{BytesAdded: added},
		Tasks: []*image.Task{{PID: 4242, Comm: "x", VMAs: []*image.VMA{v}}}}
	if err := r.Commit(c); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestDedupCLI(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	s, err := dedup.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	a := dedupCommit(t, s, "alpha", 100, false)
	s.Close()

	// Not mounted: the CLI opens the store itself.
	out, err := dedupRun(t, "ls", "-s", dir)
	if err != nil || !strings.Contains(out, a.ID) || !strings.Contains(out, "alpha") || !strings.Contains(out, "400.0 KiB") {
		t.Fatalf("ls: %v\n%s", err, out)
	}
	if out, err := dedupRun(t, "verify", "-s", dir); err != nil || !strings.Contains(out, "ok") {
		t.Fatalf("verify of a sound store: %v\n%s", err, out)
	}
	if out, err := dedupRun(t, "ls"); err == nil || !strings.Contains(out, "no store") {
		t.Fatalf("ls without a store: %v\n%s", err, out)
	}

	// Served (as by a mount): the CLI talks to the owner over the socket.
	s, err = dedup.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithCancel(context.Background())
	notified := make(chan struct{}, 10)
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, func() { notified <- struct{}{} }) }()
	defer func() { cancel(); <-done }()

	b := dedupCommit(t, s, "beta", 10, true)
	out, err = dedupRun(t, "ls", "-s", dir)
	if err != nil || !strings.Contains(out, a.ID) || !strings.Contains(out, b.ID) {
		t.Fatalf("ls of a served store: %v\n%s", err, out)
	}
	out, err = dedupRun(t, "verify", "-s", dir)
	badHash := b.Tasks[0].VMAs[0].Pages[9].Hash.String()
	if err == nil || !strings.Contains(out, badHash) || !strings.Contains(out, b.ID) || !strings.Contains(out, "task 4242") {
		t.Fatalf("verify of a corrupt page: %v\n%s", err, out)
	}
	t.Logf("verify said:\n%s", out)
	out, err = dedupRun(t, "stats", "-s", dir)
	if err != nil || !strings.Contains(out, "checkpoints:   2") || !strings.Contains(out, "dedup ratio") {
		t.Fatalf("stats: %v\n%s", err, out)
	}
	t.Logf("ls:\n%s", func() string { o, _ := dedupRun(t, "ls", "-s", dir); return o }())
	t.Logf("stats:\n%s", out)
	if out, err := dedupRun(t, "rm", "-s", dir, "beta"); err != nil {
		t.Fatalf("rm: %v\n%s", err, out)
	}
	out, err = dedupRun(t, "gc", "-s", dir)
	if err != nil || !strings.Contains(out, "freed 10 pages (40.0 KiB)") {
		t.Fatalf("gc: %v\n%s", err, out)
	}
	if len(notified) != 2 {
		t.Fatalf("mount notified %d times, want 2 (rm, gc)", len(notified))
	}
	if out, err := dedupRun(t, "verify", "-s", dir); err != nil {
		t.Fatalf("verify after rm+gc: %v\n%s", err, out)
	}
	if out, err := dedupRun(t, "rm", "-s", dir, "nope"); err == nil || !strings.Contains(out, `no checkpoint "nope"`) {
		t.Fatalf("rm of an unknown id: %v\n%s", err, out)
	}
	for _, c := range []string{"ls", "stats", "rm", "gc", "verify"} {
		if out, err := dedupRun(t, c, "--help"); err != nil || !strings.Contains(out, "--store") {
			t.Fatalf("%s --help: %v\n%s", c, err, out)
		}
	}
}

func TestDedupCLILockedUnserved(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	s, err := dedup.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	out, err := dedupRun(t, "ls", "-s", dir)
	if err == nil || !strings.Contains(out, "nobody serves it") || !strings.Contains(out, "pid") {
		t.Fatalf("ls of a store held by a process that does not serve it: %v\n%s", err, out)
	}
}
