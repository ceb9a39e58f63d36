package dumper

import (
	"runtime"
	"sync"
	"sync/atomic"
)

// procPrefetch reads the /proc part of collection (collectProc) of every
// frozen process on a few goroutines, in tree order, ahead of the ptrace
// thread, which only takes the results: reading maps, smaps, fds, status
// and limits needs no ptrace request, so it is no reason for the one
// ptrace thread to wait, and the processes are frozen before it starts.
type procPrefetch struct {
	tasks []*frozenTask
	parts []*procPart
	errs  []error
	ready []chan struct{}
	next  atomic.Int64
	quit  chan struct{}
	once  sync.Once
	wg    sync.WaitGroup
}

// prefetchProc starts reading the /proc part of tasks.
func prefetchProc(tasks []*frozenTask) *procPrefetch {
	p := &procPrefetch{tasks: tasks, parts: make([]*procPart, len(tasks)), errs: make([]error, len(tasks)),
		ready: make([]chan struct{}, len(tasks)), quit: make(chan struct{})}
	for i := range p.ready {
		p.ready[i] = make(chan struct{})
	}
	workers := min(max(runtime.NumCPU(), 2), 8, len(tasks))
	for range workers {
		p.wg.Add(1)
		go p.work()
	}
	return p
}

func (p *procPrefetch) work() {
	defer p.wg.Done()
	for {
		i := int(p.next.Add(1) - 1)
		if i >= len(p.tasks) {
			return
		}
		select {
		case <-p.quit:
			return
		default:
		}
		p.parts[i], p.errs[i] = collectProc(p.tasks[i])
		close(p.ready[i])
	}
}

// get waits for the /proc part of task i.
func (p *procPrefetch) get(i int) (*procPart, error) {
	<-p.ready[i]
	return p.parts[i], p.errs[i]
}

// stop ends the reading (a task being read is finished) and waits for
// it; it may be called more than once.
func (p *procPrefetch) stop() {
	p.once.Do(func() { close(p.quit) })
	p.wg.Wait()
}
