package image

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// TestRoundTripNSpid: pids at every pid namespace level come back, the
// tree shows them, and a status NSpid that does not start with Pid is
// refused.
func TestRoundTripNSpid(t *testing.T) {
	src := memSource{}
	c := sampleCheckpoint(src)
	root, child := c.Tasks[0], c.Tasks[1]
	root.NSpid = []int{100, 1}
	root.Threads[0].NSpid = []int{100, 1}
	root.Threads[1].NSpid = []int{101, 2}
	child.NSpid = []int{105, 6}
	dir := t.TempDir()
	if err := WriteTree(dir, Render(c, src)); err != nil {
		t.Fatal(err)
	}
	got, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range [][]int{root.NSpid, child.NSpid} {
		if !reflect.DeepEqual(got.Tasks[i].NSpid, want) {
			t.Errorf("task %d NSpid %v, want %v", got.Tasks[i].PID, got.Tasks[i].NSpid, want)
		}
	}
	if g := got.Tasks[0].Threads[1]; g.InnerTID() != 2 || got.Tasks[0].InnerPID() != 1 || got.PidLevels() != 2 {
		t.Errorf("inner ids %d %d, levels %d", got.Tasks[0].InnerPID(), g.InnerTID(), got.PidLevels())
	}
	tree, _ := os.ReadFile(filepath.Join(dir, "tree"))
	if !strings.Contains(string(tree), `"prog"(100) nspid=100,1 state=S`) {
		t.Errorf("tree:\n%s", tree)
	}
	status := filepath.Join(dir, "tasks", "105", "status")
	b, _ := os.ReadFile(status)
	os.Chmod(status, 0o644)
	if err := os.WriteFile(status, []byte(strings.Replace(string(b), "NSpid: 105 6", "NSpid: 104 6", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(dir); err == nil || !strings.Contains(err.Error(), "first id is not 105") {
		t.Fatalf("edited NSpid: %v", err)
	}
}

// TestLoadWithoutNSpid: a tree without NSpid has one level.
func TestLoadWithoutNSpid(t *testing.T) {
	src := memSource{}
	dir := t.TempDir()
	if err := WriteTree(dir, Render(sampleCheckpoint(src), src)); err != nil {
		t.Fatal(err)
	}
	got, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got.PidLevels() != 1 || got.Tasks[0].InnerPID() != 100 || got.Tasks[0].NSpid != nil {
		t.Fatalf("levels %d, inner %d, NSpid %v", got.PidLevels(), got.Tasks[0].InnerPID(), got.Tasks[0].NSpid)
	}
}
