package tests

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// firstTickAfter blanks the program's output (zeros, same size: a restore
// refuses a file that shrank), restores dir and returns the first tick
// number the restored program prints. Its stdout offset is restored too, so
// its first line lands where the checkpoint left off.
func firstTickAfter(t *testing.T, p *program, dir string) int {
	t.Helper()
	st, err := os.Stat(p.Out)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p.Out, 0); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p.Out, st.Size()); err != nil {
		t.Fatal(err)
	}
	if got := lastLine(ckptfs(t, "restore", dir)); got != itoa(p.Pid) {
		t.Fatalf("restore printed %q, want %d", got, p.Pid)
	}
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		b, _ := os.ReadFile(p.Out)
		for _, line := range strings.Split(strings.Trim(string(b), "\x00\n"), "\n") {
			line = strings.Trim(line, "\x00")
			if f := strings.Fields(line); len(f) == 5 && f[2] == "tick" && f[4] == "ok" {
				n, _ := strconv.Atoi(f[3])
				return n
			} else if line != "" {
				t.Fatalf("restored program printed %q", line)
			}
		}
	}
	t.Fatal("restored program printed nothing")
	return 0
}

// dumpAt dumps the program (with --kill if kill) and returns the checkpoint
// id and the range of tick numbers it may print first when restored.
func dumpAt(t *testing.T, p *program, store string, kill bool) (id string, lo, hi int) {
	t.Helper()
	args := []string{"dump", "-s", store, itoa(p.Pid)}
	if kill {
		args = append(args[:3], "--kill", itoa(p.Pid))
	}
	lo = lastTick(p) + 1
	id = lastLine(ckptfs(t, args...))
	hi = lastTick(p) + 1
	return id, lo, hi
}

// lastTick returns the highest tick number printed so far.
func lastTick(p *program) int {
	last := -1
	for _, l := range p.ticks() {
		if f := strings.Fields(strings.Trim(l, "\x00")); len(f) == 5 {
			if n, err := strconv.Atoi(f[3]); err == nil && n > last {
				last = n
			}
		}
	}
	return last
}

// TestRestoreMomentsAndRedump takes two checkpoints of a program at
// different times: each restores to its own moment. A restored program is
// then dumped and restored again.
func TestRestoreMomentsAndRedump(t *testing.T) {
	for _, kind := range []string{"static", "go"} {
		t.Run(kind, func(t *testing.T) {
			p := startProgram(t, kind, 16)
			m := mountStore(t, filepath.Join(t.TempDir(), "store"))
			unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
			defer unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
			t.Cleanup(func() { unix.Kill(p.Pid, unix.SIGKILL); waitGone(t, p.Pid) })

			p.waitTicks(t, 2)
			id1, lo1, hi1 := dumpAt(t, p, m.store, false)
			p.waitTicks(t, 5)
			id2, lo2, hi2 := dumpAt(t, p, m.store, true)
			waitGone(t, p.Pid)

			for _, c := range []struct {
				id     string
				lo, hi int
			}{{id1, lo1, hi1}, {id2, lo2, hi2}} {
				first := firstTickAfter(t, p, filepath.Join(m.mnt, c.id))
				if first < c.lo || first > c.hi {
					t.Errorf("checkpoint %s resumed at tick %d, want %d..%d", c.id, first, c.lo, c.hi)
				}
				p.waitTicks(t, 2)
				p.checkHealthy(t)
				unix.Kill(p.Pid, unix.SIGKILL)
				waitGone(t, p.Pid)
			}

			// restore -> dump -> restore
			firstTickAfter(t, p, filepath.Join(m.mnt, id2))
			p.waitTicks(t, 3)
			id3, lo3, hi3 := dumpAt(t, p, m.store, true)
			waitGone(t, p.Pid)
			first := firstTickAfter(t, p, filepath.Join(m.mnt, id3))
			if first < lo3 || first > hi3 {
				t.Errorf("re-dumped checkpoint resumed at tick %d, want %d..%d", first, lo3, hi3)
			}
			p.waitTicks(t, 3)
			p.checkHealthy(t)
		})
	}
}
