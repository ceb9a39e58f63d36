package restorer

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestRestoreTreeKilledOnFailure fails the restore of a parent and its
// child, which are restored on two tracers, at every failpoint: neither
// process may be left.
func TestRestoreTreeKilledOnFailure(t *testing.T) {
	p, child, dir := dumpForker(t)
	for _, point := range []string{"created", "dealt", "threads", "finished"} {
		t.Run(point, func(t *testing.T) {
			failAt = point
			defer func() { failAt = "" }()
			_, err := Restore(dir, Options{})
			if err == nil || !strings.Contains(err.Error(), "failpoint "+point) {
				t.Fatalf("restore: %v, want failpoint %s", err, point)
			}
			for _, pid := range []int{p.pid, child} {
				waitGone(t, pid) // the child is reaped by its reaper
				if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
					t.Fatalf("pid %d exists after a failed restore", pid)
				}
			}
		})
	}
	var log strings.Builder
	root, err := Restore(dir, Options{Log: &log})
	if err != nil {
		t.Fatal(err)
	}
	restoreWithChildCleanup(t, root, child)
	if !strings.Contains(log.String(), "processes dealt to 2 tracers") {
		t.Errorf("restore log does not show two tracers:\n%s", log.String())
	}
	// Pinned to their tracers' CPUs while restored, released with the
	// restorer's affinity (affinity.go).
	var want unix.CPUSet
	if err := unix.SchedGetaffinity(0, &want); err != nil {
		t.Fatal(err)
	}
	for _, pid := range []int{root, child} {
		var got unix.CPUSet
		if err := unix.SchedGetaffinity(pid, &got); err != nil || got != want {
			t.Errorf("pid %d: affinity %v (%v), want the restorer's %v", pid, got, err, want)
		}
	}
	p.waitTicks(t, 6)
	for _, l := range p.ticks() {
		if !strings.HasSuffix(l, " ok") {
			t.Fatalf("bad line %q", l)
		}
	}
}
