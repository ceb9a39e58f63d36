package restorer

import (
	"sync"
	"sync/atomic"

	"github.com/ckptfs/ckptfs/image"
)

// Phases Options.OnProgress reports, in bytes of the data in the
// checkpoint's pages files (dataBytes; a count past it raises the total).
const (
	PhaseVerify = "verify" // pages checked against their hashes (verify.go)
	PhasePages  = "pages"  // memory written into the restored processes
)

// progressHooks maps what the free functions of a restore work on (the
// checkpoint for verifyPages, a task for fillMemory) to the counter of
// their restore, so that they report progress with one call and no new
// parameter.
var progressHooks sync.Map // *image.Checkpoint or *image.Task → func(int64)

// addProgress counts n bytes done for key's restore, if it reports.
func addProgress(key any, n int64) {
	if f, ok := progressHooks.Load(key); ok {
		f.(func(int64))(n)
	}
}

// phaseCounter reports one phase's bytes to Options.OnProgress.
type phaseCounter struct {
	done  atomic.Int64
	total atomic.Int64 // 0 until the page scans are in (dataBytes)
	phase string
	out   func(phase string, done, total int64)
}

func (p *phaseCounter) add(n int64) {
	d := p.done.Add(n)
	p.out(p.phase, d, max(p.total.Load(), d))
}

// watch makes key's progress count for phase, and returns the func that
// ends it; with no OnProgress it does nothing.
func (r *restorer) watch(key any, phase string) (stop func()) {
	if r.opts.OnProgress == nil {
		return func() {}
	}
	r.progressMu.Lock()
	if r.counters == nil {
		r.counters = map[string]*phaseCounter{}
	}
	pc := r.counters[phase]
	if pc == nil {
		pc = &phaseCounter{phase: phase, out: r.opts.OnProgress}
		r.counters[phase] = pc
		pc.add(0) // the phase starts now
		// The total waits for every page scan: not the restore (a lazy
		// restore or one from the store need not wait for them at all).
		go func() { pc.total.Store(r.dataBytes()) }()
	}
	r.progressMu.Unlock()
	progressHooks.Store(key, pc.add)
	return func() { progressHooks.Delete(key) }
}

// watchVerify and watchFill are watch for the two phases.
func (r *restorer) watchVerify(c *image.Checkpoint) func() { return r.watch(c, PhaseVerify) }
func (r *restorer) watchFill(t *image.Task) func()         { return r.watch(t, PhasePages) }

// dataBytes is the size of the data ranges of every task's pages files
// (the page scans, mem.go): what verifyPages checks and fillMemory writes,
// but for shared memory. It waits for the scans.
func (r *restorer) dataBytes() int64 {
	var n int64
	for _, t := range r.c.Tasks {
		if t.State == "Z" {
			continue
		}
		ranges, err := r.scans.get(t.PID)
		if err != nil {
			continue
		}
		for _, rs := range ranges {
			for _, rg := range rs {
				n += rg[1] - rg[0]
			}
		}
	}
	return n
}
