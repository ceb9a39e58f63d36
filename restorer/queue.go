package restorer

import (
	"fmt"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/image"
	"github.com/ckptfs/ckptfs/internal/inject"
	"github.com/ckptfs/ckptfs/internal/proc"
	"github.com/ckptfs/ckptfs/internal/sysseq"
)

// Queued calls. Once its trampoline region is mapped, a task's main
// thread makes most of its calls in sequences (internal/sysseq): queued
// here, run in one stop when a result is needed (value), before any call
// made the old way (sys), and at the end of each part of the restore
// (flush). A restored process costs a handful of stops instead of one a
// call. The runner sits in the region's code page after the trampoline;
// the sequence's table and data have the region's last seqSize bytes,
// which nothing else uses.
//
// What queued calls need of the restorer's own state (its files) is
// ready when they are queued; what the restorer does to the task by other
// means (ptrace, /proc, process_vm_writev, pidfd_getfd from outside,
// prlimit) waits for a flush where it depends on them.

const (
	seqCode = 16                  // the runner's offset in the region's code page
	seqSize = 16 * image.PageSize // the sequence's table and data
)

// startSeq writes the trampoline and the runner into the region's code
// page and starts p's sequence.
func (p *target) startSeq(region uint64) error {
	code := make([]byte, seqCode+len(sysseq.Code))
	copy(code, []byte{0x0f, 0x05, 0xcc}) // syscall; int3
	copy(code[seqCode:], sysseq.Code)
	if err := inject.WriteMem(p.pid, region, code); err != nil {
		return err
	}
	p.seq = sysseq.New(p.pid, region+seqCode, region+regionSize-seqSize, seqSize)
	return nil
}

// queue adds a call of p's main thread to its sequence. Its error, if it
// fails, is what its Check says, else the call's name and errno wrapped
// by what (nil: nothing more); a GoOn call without a Check may fail.
func (p *target) queue(c sysseq.Call, what func(err error) error) sysseq.Ret {
	if c.Check == nil {
		nr, goOn := c.Nr, c.GoOn
		c.Check = func(_ uint64, err error) error {
			if err == nil || goOn {
				return nil
			}
			err = fmt.Errorf("%s: %w", sysName(nr), err)
			if what != nil {
				err = what(err)
			}
			return err
		}
	}
	return p.seq.Add(c)
}

// q queues a plain call; its error is wrapped by what (nil: none).
func (p *target) q(what func(err error) error, nr uintptr, args ...uint64) sysseq.Ret {
	c := sysseq.Call{Nr: nr}
	copy(c.Args[:], args)
	return p.queue(c, what)
}

// qFrom queues a call whose argument arg is the result of call from.
func (p *target) qFrom(what func(err error) error, from sysseq.Ret, arg int, nr uintptr, args ...uint64) sysseq.Ret {
	c := sysseq.Call{Nr: nr, From: from, Arg: arg}
	copy(c.Args[:], args)
	return p.queue(c, what)
}

// wrapf returns a what for queue: the call's error after format's
// context.
func wrapf(format string, args ...any) func(error) error {
	return func(err error) error { return fmt.Errorf(format+": %w", append(args, err)...) }
}

// putSeq places data for the next queued call.
func (p *target) putSeq(bufs ...[]byte) ([]uint64, error) { return p.seq.Put(bufs...) }

// value returns the result of queued call r, running the sequence if r
// has not run yet.
func (p *target) value(r sysseq.Ret) (uint64, error) { return p.seq.Value(r) }

// flush runs the calls queued for p.
func (p *target) flush() error {
	if p.seq == nil {
		return nil
	}
	return p.seq.Flush()
}

// sysQueued runs call nr in p's main thread after the calls queued for
// it, in the same stop, and returns its result (sys).
func (p *target) sysQueued(nr uintptr, args ...uint64) (uint64, error) {
	var ret uint64
	var cerr error
	c := sysseq.Call{Nr: nr, GoOn: true, Check: func(v uint64, err error) error { ret, cerr = v, err; return nil }}
	copy(c.Args[:], args)
	p.seq.Add(c)
	if err := p.seq.Flush(); err != nil {
		return 0, err // a queued call's
	}
	if cerr != nil {
		return ret, fmt.Errorf("%s: %w", sysName(nr), cerr)
	}
	return ret, nil
}

// queues says whether calls into thread tid are queued: the main
// thread's, once the region is mapped.
func (p *target) queues(tid int) bool { return p.seq != nil && tid == p.pid }

// ssOnStack is SS_ONSTACK of a stack_t's flags: a thread was on its
// alternate stack; sigaltstack takes the flags without it.
const ssOnStack = 1

// queueThreadSetup queues setupThread's calls for the main thread: comm,
// sigaltstack, clear_child_tid, robust list, rseq.
func (p *target) queueThreadSetup(th *image.Thread, name string) error {
	addrs, err := p.putSeq(append([]byte(name), 0))
	if err != nil {
		return err
	}
	p.q(nil, unix.SYS_PRCTL, unix.PR_SET_NAME, addrs[0])
	if x := th.Extras; x != nil {
		a := inject.AltStack{SP: x.AltStackSP, Flags: int32(x.AltStackFlags), Size: x.AltStackSize}
		if !a.Disabled() && (a.SP != 0 || a.Size != 0) {
			b := make([]byte, 24)
			le.PutUint64(b, a.SP)
			le.PutUint32(b[8:], uint32(a.Flags&^ssOnStack))
			le.PutUint64(b[16:], a.Size)
			addrs, err := p.putSeq(b)
			if err != nil {
				return err
			}
			p.q(wrapf("sigaltstack of %d", p.pid), unix.SYS_SIGALTSTACK, addrs[0], 0)
		}
		if x.ClearTID != 0 {
			p.q(wrapf("set_tid_address of %d", p.pid), unix.SYS_SET_TID_ADDRESS, x.ClearTID)
		}
		if x.RobustHead != 0 {
			p.q(wrapf("set_robust_list of %d", p.pid), unix.SYS_SET_ROBUST_LIST, x.RobustHead, x.RobustLen)
		}
	}
	if rs := th.Rseq; rs != nil {
		p.q(wrapf("rseq at %#x", rs.Addr), unix.SYS_RSEQ, rs.Addr, uint64(rs.Len), 0, uint64(rs.Sig))
	}
	return nil
}

// queueCreds queues setCreds' calls for the main thread; g is the
// groups as setgroups reads them.
func (p *target) queueCreds(g []byte) error {
	c := p.t.Creds
	addr := p.scratch // not read: no groups
	if len(g) > 0 {
		addrs, err := p.putSeq(g)
		if err != nil {
			return err
		}
		addr = addrs[0]
	}
	p.q(nil, unix.SYS_SETGROUPS, uint64(len(c.Groups)), addr)
	p.q(nil, unix.SYS_SETRESGID, uint64(c.GID[0]), uint64(c.GID[1]), uint64(c.GID[2]))
	p.q(nil, unix.SYS_SETRESUID, uint64(c.UID[0]), uint64(c.UID[1]), uint64(c.UID[2]))
	return nil
}

// nonePending says whether no signal is pending in the process or its
// main thread (/proc/PID/status ShdPnd and SigPnd): then flushPending has
// nothing to take. Signals come from outside the queued calls (a
// recreated zombie's SIGCHLD): no flush is needed first.
func (p *target) nonePending() (bool, error) {
	status, err := proc.Read(p.pid, "status")
	if err != nil {
		return false, err
	}
	kv := proc.KeyValues(status)
	for _, k := range []string{"ShdPnd", "SigPnd"} {
		v, err := strconv.ParseUint(kv[k], 16, 64)
		if err != nil {
			return false, fmt.Errorf("status %s %q: %w", k, kv[k], err)
		}
		if v != 0 {
			return false, nil
		}
	}
	return true, nil
}

// do makes call nr in thread tid: queued for the main thread (its error,
// wrapped by what, comes with a later flush), else at once.
func (p *target) do(tid int, what func(error) error, nr uintptr, args ...uint64) error {
	if p.queues(tid) {
		p.q(what, nr, args...)
		return nil
	}
	_, err := p.sys(tid, nr, args...)
	if err != nil && what != nil {
		err = what(err)
	}
	return err
}
