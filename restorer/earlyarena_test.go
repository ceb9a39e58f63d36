package restorer

import (
	"testing"

	"github.com/ckptfs/ckptfs/image"
)

func TestEarlyArenaSize(t *testing.T) {
	for _, c := range []struct {
		tasks, pages int64
		want         int64 // 0: no arena
	}{
		{0, 100, 0},
		{101, 0, 0},
		{101, 28482, 28482 * image.PageSize}, // the 101 x 1 MiB tree
		{1, 262144, 0},                       // one 1 GiB task: not read early
		{2, 100, 0},                          // under arenaMin
		{1000, 1000 * 1024, prefetchBudget},  // capped at the budget
		{4, 4 * (prefetchMax/image.PageSize + 1), 0}, // tasks over prefetchMax on average
	} {
		a := startEarlyArena(c.tasks, c.pages)
		var got int64
		if a != nil {
			<-a.done
			got = int64(len(a.buf))
		}
		if got != c.want {
			t.Errorf("startEarlyArena(%d, %d): %d bytes, want %d", c.tasks, c.pages, got, c.want)
		}
	}
}

func TestEarlyArenaCut(t *testing.T) {
	var none *earlyArena
	if b := none.cut(8192); len(b) != 8192 {
		t.Fatalf("nil arena cut %d bytes", len(b))
	}
	a := startEarlyArena(10, 10*1024) // 40 MiB
	x := a.cut(30 << 20)
	y := a.cut(8 << 20)
	z := a.cut(8 << 20) // past the end: a buffer of its own
	if len(x) != 30<<20 || len(y) != 8<<20 || len(z) != 8<<20 {
		t.Fatalf("cut lengths %d %d %d", len(x), len(y), len(z))
	}
	if &x[0] != &a.buf[0] || &y[0] != &a.buf[30<<20] {
		t.Errorf("cuts not in order from the arena")
	}
	if cap(x) != len(x) || cap(y) != len(y) {
		t.Errorf("a cut can grow into the next: caps %d %d", cap(x), cap(y))
	}
	x[len(x)-1], y[0] = 1, 2
	if x[len(x)-1] != 1 || y[0] != 2 {
		t.Errorf("cuts overlap")
	}
}
