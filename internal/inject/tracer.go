//go:build linux && amd64

// Package inject runs system calls inside stopped ptrace tracees and writes
// their memory. Every ptrace request for a tracee must come from the OS
// thread that attached it: Tracer is a goroutine locked to one OS thread that
// runs the functions given to Do.
package inject

import "runtime"

// Tracer runs functions on one locked OS thread.
type Tracer struct {
	work chan func()
	quit chan struct{}
	done chan struct{}
}

// NewTracer starts a tracer thread.
func NewTracer() *Tracer {
	t := &Tracer{work: make(chan func()), quit: make(chan struct{}), done: make(chan struct{})}
	go t.loop()
	return t
}

func (t *Tracer) loop() {
	runtime.LockOSThread()
	defer close(t.done)
	for {
		select {
		case f := <-t.work:
			f()
		case <-t.quit:
			// Unlock only on a clean close: the thread survives and
			// tracees still attached are not released by its exit.
			runtime.UnlockOSThread()
			return
		}
	}
}

// Do runs f on the tracer thread and returns its error.
func (t *Tracer) Do(f func() error) error {
	var err error
	ch := make(chan struct{})
	t.work <- func() {
		defer close(ch)
		err = f()
	}
	<-ch
	return err
}

// Close stops the tracer. Tracees must have been detached or killed.
func (t *Tracer) Close() {
	close(t.quit)
	<-t.done
}
