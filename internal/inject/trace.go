package inject

import "sync/atomic"

// Traced is one injected system call as a trace hook sees it: at its start
// (Done false, with its arguments) and at its end (Done true, with its
// result).
type Traced struct {
	TID  int
	Nr   uintptr
	Args []uint64 // at the start
	Done bool
	Ret  uint64 // at the end: rax (an errno in Err for -4095..-1)
	Err  error
}

var traceHook atomic.Pointer[func(Traced)]

// SetTrace makes f see every system call injected from here on (nil: none),
// for a diagnostics log at debug level. f runs on the tracing thread,
// between the ptrace calls: it must be quick and must not call into
// this package.
func SetTrace(f func(Traced)) {
	if f == nil {
		traceHook.Store(nil)
		return
	}
	traceHook.Store(&f)
}

// trace passes c to the hook, if one is set.
func trace(c Traced) {
	if f := traceHook.Load(); f != nil {
		(*f)(c)
	}
}

// Trace passes c to the trace hook, if one is set: for calls injected by
// other means than this package's (internal/sysseq), so that the hook
// sees every call.
func Trace(c Traced) { trace(c) }

// Tracing says whether a trace hook is set.
func Tracing() bool { return traceHook.Load() != nil }
