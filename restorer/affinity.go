package restorer

import (
	"os"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/internal/inject"
)

// CPU affinity of the restore. An injected call is two context switches,
// tracer to tracee and back; across CPUs each is a wake-up of another CPU
// (measured on 2 CPUs, 101 processes: the per-task phase took 520-580 ms
// with the restorer and its tracees free to move, 330-370 ms with all on
// one CPU). Each tracer thread and the processes it traces are therefore
// kept on one CPU, tracer i on the i-th CPU the restorer may use; every
// thread of every restored process gets the restorer's own affinity back
// before it is released (the stub, and so every process, started with
// it: the affinity of the dumped processes is not recorded). Only an
// optimisation: a failed sched_setaffinity is ignored. CKPTFS_NO_PIN=1
// sets no affinity.

// cpuPlan is the restorer's affinity when the restore started and the
// CPUs in it.
type cpuPlan struct {
	orig unix.CPUSet
	cpus []int
}

func newCPUPlan() *cpuPlan {
	if os.Getenv("CKPTFS_NO_PIN") != "" {
		return nil
	}
	p := &cpuPlan{}
	if err := unix.SchedGetaffinity(0, &p.orig); err != nil {
		return nil
	}
	for i := 0; i < len(p.orig)*64; i++ {
		if p.orig.IsSet(i) {
			p.cpus = append(p.cpus, i)
		}
	}
	if len(p.cpus) < 2 {
		return nil // nothing to choose
	}
	return p
}

// cpu returns the CPU of tracer i.
func (c *cpuPlan) cpu(i int) int { return c.cpus[i%len(c.cpus)] }

// pin sets the affinity of thread tid (0: the calling thread) to cpu.
func (c *cpuPlan) pin(tid, cpu int) {
	if c == nil {
		return
	}
	var set unix.CPUSet
	set.Set(cpu)
	unix.SchedSetaffinity(tid, &set)
}

// unpin gives thread tid (0: the calling thread) the restorer's affinity
// back.
func (c *cpuPlan) unpin(tid int) {
	if c != nil {
		unix.SchedSetaffinity(tid, &c.orig)
	}
}

// pinTracer keeps tracer i's thread on its CPU.
func (c *cpuPlan) pinTracer(tr *inject.Tracer, i int) {
	if c != nil {
		tr.Do(func() error { c.pin(0, c.cpu(i)); return nil })
	}
}

// unpinTracer gives the tracer's thread the restorer's affinity back (it
// returns to the Go runtime when the tracer closes).
func (c *cpuPlan) unpinTracer(tr *inject.Tracer) {
	if c != nil {
		tr.Do(func() error { c.unpin(0); return nil })
	}
}

// unpinTasks gives every thread of every restored process, and the pid
// namespace's init, the restorer's affinity back.
func (r *restorer) unpinTasks() {
	if r.cpus == nil {
		return
	}
	for _, p := range r.order {
		for _, tid := range p.tids {
			r.cpus.unpin(tid)
		}
	}
	if r.ns != nil && r.ns.first != nil {
		r.cpus.unpin(r.ns.first.pid)
	}
}
