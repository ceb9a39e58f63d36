//go:build linux && amd64

package inject

import (
	"errors"
	"fmt"

	"github.com/ckptfs/ckptfs/internal/testhold"
)

// A dump injects a few calls into every thread of the tree. One at a time,
// each call costs two round trips through the scheduler (the syscall
// entry and exit stops), and the tracer waits for each: 500 processes took
// a second that way, more under load. Batch starts the same step in every
// thread of a batch before waiting for any, so a step costs about one round
// trip for all of them, and puts every thread back with one Restop each.

// Call is one system call a Job injects.
type Call struct {
	Name string   // for errors: "sigaltstack", "rt_sigaction(17)"
	Nr   uintptr  // system call number
	Args []uint64 // up to 6
	// Done, if not nil, takes the result (reading what the call wrote to
	// the scratch memory with ReadMem).
	Done func(ret uint64) error
	// Hold: a testhold "inject" point once the call is done, the thread
	// still in the middle of its injected calls.
	Hold bool
}

// Job is the series of calls injected into one stopped thread (seized, in
// an interrupt stop), at Tramp, a syscall instruction of its process.
// Calls builds them once the scratch address is known: ScratchSize bytes
// below the thread's stack red zone, put back afterwards.
type Job struct {
	TID   int
	Tramp uint64
	Calls func(scratch uint64) []Call
}

// ScratchSize is the scratch memory a Job's calls may write.
const ScratchSize = 32

type jobRun struct {
	job     *Job
	st      *State
	scratch uint64
	keep    []byte
	calls   []Call
	next    int
	err     error
	exited  bool // the thread is gone: nothing to put back
	entered bool // the call in flight passed its entry stop
}

// Batch runs jobs, each in its own thread, the threads' n-th calls at the
// same time, then puts every thread back as it was (registers, signal
// mask, scratch memory; State.Restop). It returns the first error; after
// an error no new call is started, the calls in flight are finished and
// every thread is put back all the same.
func Batch(jobs []*Job) error {
	runs := make([]*jobRun, 0, len(jobs))
	var first error
	fail := func(r *jobRun, err error) {
		r.err = err
		if errors.Is(err, ErrExited) {
			r.exited = true
		}
		if first == nil {
			first = err
		}
	}
	for _, j := range jobs {
		st, err := Save(j.TID)
		if err != nil {
			if first == nil {
				first = err
			}
			// A failed Save changed nothing (it blocks signals last):
			// the threads saved so far are put back below.
			break
		}
		r := &jobRun{job: j, st: st, scratch: (st.Regs.Rsp - 128 - 64) &^ 15, keep: make([]byte, ScratchSize)}
		runs = append(runs, r)
		if err := ReadMem(j.TID, r.scratch, r.keep); err != nil {
			r.keep = nil // nothing written: nothing to put back
			fail(r, fmt.Errorf("stack of %d: %w", j.TID, err))
			break
		}
		r.calls = j.Calls(r.scratch)
	}
	for first == nil {
		var started []*jobRun
		for _, r := range runs {
			if r.next >= len(r.calls) {
				continue
			}
			c := r.calls[r.next]
			if err := startSyscall(r.job.TID, r.job.Tramp, c.Nr, c.Args); err != nil {
				fail(r, fmt.Errorf("%s of %d: %w", c.Name, r.job.TID, err))
				break
			}
			started = append(started, r)
		}
		if len(started) == 0 && first == nil {
			break // every job is done
		}
		// Every thread's call goes on one stop at a time (entry, exit),
		// all of them before any is waited for again.
		for _, r := range started {
			r.entered = false
		}
		for len(started) > 0 {
			var going []*jobRun
			for _, r := range started {
				c := r.calls[r.next]
				done, ret, err := stepSyscall(r.job.TID, r.job.Tramp, c.Nr, &r.entered)
				if !done {
					going = append(going, r)
					continue
				}
				r.next++
				if err == nil && c.Done != nil {
					err = c.Done(ret)
				}
				if err != nil {
					fail(r, fmt.Errorf("%s of %d: %w", c.Name, r.job.TID, err))
					continue
				}
				if c.Hold {
					testhold.At("inject")
				}
			}
			started = going
		}
	}
	// Put every thread back: scratch bytes, then registers and mask with
	// an interrupt stop, all threads resumed before any is waited for.
	var back []*jobRun
	for _, r := range runs {
		if r.exited {
			continue
		}
		if r.keep != nil {
			if err := WriteMem(r.job.TID, r.scratch, r.keep); err != nil && first == nil {
				first = err
			}
		}
		if err := r.st.startRestop(r.job.TID); err != nil {
			if first == nil {
				first = err
			}
			continue
		}
		back = append(back, r)
	}
	for _, r := range back {
		if err := finishRestop(r.job.TID); err != nil && first == nil {
			first = err
		}
	}
	return first
}
