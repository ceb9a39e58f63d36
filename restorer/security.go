package restorer

import (
	"errors"
	"fmt"
	"math/bits"
	"os"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/image"
	"github.com/ckptfs/ckptfs/internal/proc"
	"github.com/ckptfs/ckptfs/internal/ptrace"
	"github.com/ckptfs/ckptfs/internal/seccomp"
)

// What bounds each thread's privileges (image.Security) comes back after
// its uids and gids, in the order the kernel allows:
//
//  1. securebits |= SECBIT_NO_SETUID_FIXUP, so that setresuid leaves the
//     capability sets alone (the restorer runs as root: the stub has them all);
//  2. setgroups, setresgid, setresuid (setCreds);
//  3. PR_CAPBSET_DROP for every capability not in the bounding set (needs
//     CAP_SETPCAP, still effective);
//  4. capset(permitted, effective, inheritable), keeping CAP_SETPCAP a moment
//     longer if securebits must still change; PR_CAP_AMBIENT_RAISE per ambient
//     capability (before a recorded SECBIT_NO_CAP_AMBIENT_RAISE); the recorded
//     securebits; capset again without the CAP_SETPCAP kept;
//  5. PR_SET_PDEATHSIG (a credential change clears it), PR_SET_NO_NEW_PRIVS,
//     personality (late: READ_IMPLIES_EXEC would have made the restore's own
//     mmaps executable);
//  6. once every thread is done, PR_SET_DUMPABLE (any thread's credential
//     change resets it);
//  7. the seccomp filters last of all, oldest first so the stack is the same:
//     the prefix every thread shares once from the main thread with
//     SECCOMP_FILTER_FLAG_TSYNC, the rest per thread. After them only the
//     trampoline's munmap is injected (finish); registers, XSAVE and signal
//     masks are set by ptrace, which no filter sees. As root the restorer sets
//     PTRACE_O_SUSPEND_SECCOMP on the task's threads first, so no filter can
//     deny that munmap either; the detach clears it.
//
// A thread that must install its filters with CAP_SYS_ADMIN (no
// no_new_privs, and no CAP_SYS_ADMIN once restored) installs them before
// step 3, which needs the suspension.

// Securebits (include/uapi/linux/securebits.h).
const secbitNoSetuidFixup = 1 << 2

// seccomp(2) operation and flags.
const (
	seccompSetModeFilter = unix.SECCOMP_SET_MODE_FILTER
	seccompFlagTsync     = unix.SECCOMP_FILTER_FLAG_TSYNC
	sockFprogSize        = 16 // struct sock_fprog: len (u16), padding, filter pointer
)

// capsOf reads a thread's capability sets (CapInh CapPrm CapEff CapBnd
// CapAmb) and personality from /proc.
type threadCaps struct {
	inh, prm, eff, bnd, amb uint64
	personality             uint64
	noNewPrivs              bool
}

func readThreadCaps(pid, tid int) (threadCaps, error) {
	var c threadCaps
	base := fmt.Sprintf("/proc/%d/task/%d/", pid, tid)
	b, err := os.ReadFile(base + "status")
	if err != nil {
		return c, err
	}
	kv := proc.KeyValues(b)
	for _, f := range []struct {
		key string
		dst *uint64
	}{{"CapInh", &c.inh}, {"CapPrm", &c.prm}, {"CapEff", &c.eff}, {"CapBnd", &c.bnd}, {"CapAmb", &c.amb}} {
		if *f.dst, err = strconv.ParseUint(kv[f.key], 16, 64); err != nil {
			return c, fmt.Errorf("%sstatus %s %q: %w", base, f.key, kv[f.key], err)
		}
	}
	c.noNewPrivs = kv["NoNewPrivs"] == "1"
	pers, err := os.ReadFile(base + "personality")
	if err != nil {
		return c, err
	}
	if c.personality, err = strconv.ParseUint(strings.TrimSpace(string(pers)), 16, 32); err != nil {
		return c, fmt.Errorf("%spersonality %q: %w", base, pers, err)
	}
	return c, nil
}

// checkSecurity refuses, before anything is created, a checkpoint whose
// threads had capabilities the restorer itself lacks: it can only give
// what it has.
func checkSecurity(c *image.Checkpoint) error {
	own, err := readThreadCaps(os.Getpid(), os.Getpid())
	if err != nil {
		return err
	}
	for _, t := range c.Tasks {
		for i, th := range t.Threads {
			s := t.ThreadSecurity(i)
			if s == nil {
				continue
			}
			if more := (s.CapPrm | s.CapInh) &^ own.prm; more != 0 {
				return fmt.Errorf("task %d thread %d: capabilities %#x were permitted or inheritable, beyond the restorer's own %#x", t.PID, th.TID, more, own.prm)
			}
			if more := s.CapBnd &^ own.bnd; more != 0 {
				return fmt.Errorf("task %d thread %d: its bounding set has capabilities %#x beyond the restorer's own %#x", t.PID, th.TID, more, own.bnd)
			}
		}
	}
	return nil
}

// setCredsAndSecurity restores every thread's credentials and security
// state, then the seccomp filters (steps 1-7 above).
func (p *target) setCredsAndSecurity() error {
	early := make([]bool, len(p.t.Threads)) // filters installed before the caps step
	for i := range p.t.Threads {
		tid := p.tids[i]
		s := p.t.ThreadSecurity(i)
		if s == nil { // a tree made before security was recorded
			if err := p.setCreds(tid); err != nil {
				return err
			}
			continue
		}
		// Neither the uid change (SECBIT_NO_SETUID_FIXUP, or uids the
		// task has already) nor the gids and groups change the sets
		// read here: setSecurity starts from them.
		cur, err := readThreadCaps(p.pid, tid)
		if err != nil {
			return err
		}
		bits, err := p.keepCapsAcrossSetuid(tid, cur)
		if err != nil {
			return fmt.Errorf("thread %d: %w", p.t.Threads[i].TID, err)
		}
		if err := p.setCreds(tid); err != nil {
			return err
		}
		if needsAdminForFilters(s) {
			early[i] = true
			if err := p.suspendSeccomp(); err != nil {
				return fmt.Errorf("thread %d installed its seccomp filters with CAP_SYS_ADMIN, which it no longer has: %w", p.t.Threads[i].TID, err)
			}
			if err := p.installFilters(tid, s.Filters, 0); err != nil {
				return fmt.Errorf("thread %d: %w", p.t.Threads[i].TID, err)
			}
		}
		if err := p.setSecurity(tid, s, cur, bits); err != nil {
			return fmt.Errorf("thread %d: %w", p.t.Threads[i].TID, err)
		}
	}
	if s := p.t.Security; s != nil {
		// 1 is SUID_DUMP_USER; 2 (suidsafe) cannot be asked for, and 0
		// is as strict for ptrace.
		d := uint64(0)
		if s.Dumpable == 1 {
			d = 1
		}
		if err := p.do(p.pid, wrapf("dumpable %d", d), unix.SYS_PRCTL, unix.PR_SET_DUMPABLE, d); err != nil {
			return err
		}
	}
	return p.installSeccomp(early)
}

// needsAdminForFilters: a thread with filters, without no_new_privs, and
// without CAP_SYS_ADMIN once restored could not install them last.
func needsAdminForFilters(s *image.Security) bool {
	return len(s.Filters) > 0 && !s.NoNewPrivs && s.CapEff&(1<<unix.CAP_SYS_ADMIN) == 0
}

// keepCapsAcrossSetuid sets SECBIT_NO_SETUID_FIXUP if the thread may
// (CAP_SETPCAP; cur: its sets), so that its uid change keeps its
// capability sets. It returns the thread's securebits after: every
// thread starts with the stub's (restorer.stubBits), which only this file
// changes.
func (p *target) keepCapsAcrossSetuid(tid int, cur threadCaps) (uint64, error) {
	bits := p.r.stubBits
	if cur.eff&(1<<unix.CAP_SETPCAP) == 0 {
		return bits, nil // not root: setresuid to its own uids changes nothing
	}
	if bits&secbitNoSetuidFixup != 0 {
		return bits, nil
	}
	bits |= secbitNoSetuidFixup
	return bits, p.do(tid, wrapf("securebits %#x", bits), unix.SYS_PRCTL, unix.PR_SET_SECUREBITS, bits)
}

// setSecurity restores one thread's capability sets, securebits,
// pdeathsig, no_new_privs and personality (steps 3-5), after its creds;
// cur and curBits are what it has now.
func (p *target) setSecurity(tid int, s *image.Security, cur threadCaps, curBits uint64) error {
	if more := s.CapBnd &^ cur.bnd; more != 0 {
		return fmt.Errorf("bounding set: capabilities %#x cannot be added back", more)
	}
	for drop := cur.bnd &^ s.CapBnd; drop != 0; drop &= drop - 1 {
		c := uint64(bits.TrailingZeros64(drop))
		if err := p.do(tid, wrapf("drop capability %d from the bounding set", c), unix.SYS_PRCTL, unix.PR_CAPBSET_DROP, c); err != nil {
			return err
		}
	}
	keep := uint64(0) // CAP_SETPCAP, kept until securebits are set
	if curBits != s.SecureBits {
		keep = cur.eff & (1 << unix.CAP_SETPCAP)
	}
	if cur.amb&^s.CapAmb != 0 {
		if err := p.do(tid, wrapf("clear ambient capabilities"), unix.SYS_PRCTL, unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil {
			return err
		}
		cur.amb = 0
	}
	if cur.prm != s.CapPrm|keep || cur.eff != s.CapEff|keep || cur.inh != s.CapInh {
		if err := p.capset(tid, s.CapPrm|keep, s.CapEff|keep, s.CapInh); err != nil {
			return err
		}
	}
	for raise := s.CapAmb &^ cur.amb; raise != 0; raise &= raise - 1 {
		c := uint64(bits.TrailingZeros64(raise))
		if err := p.do(tid, wrapf("raise ambient capability %d", c), unix.SYS_PRCTL, unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_RAISE, c, 0, 0); err != nil {
			return err
		}
	}
	if curBits != s.SecureBits {
		if err := p.do(tid, wrapf("securebits %#x", s.SecureBits), unix.SYS_PRCTL, unix.PR_SET_SECUREBITS, s.SecureBits); err != nil {
			return err
		}
	}
	if keep&^s.CapPrm != 0 || keep&^s.CapEff != 0 {
		if err := p.capset(tid, s.CapPrm, s.CapEff, s.CapInh); err != nil {
			return err
		}
	}
	if s.PDeathSig != 0 && p.t.PID == p.r.c.RootPID {
		// The root's parent was outside the checkpoint; its parent now
		// is the restorer, which exits at once: not restored for it.
		p.r.logf("task %d thread %d: parent-death signal %d not restored (its parent is not in the checkpoint)", p.pid, tid, s.PDeathSig)
	} else if s.PDeathSig != 0 {
		if err := p.do(tid, wrapf("pdeathsig %d", s.PDeathSig), unix.SYS_PRCTL, unix.PR_SET_PDEATHSIG, uint64(s.PDeathSig)); err != nil {
			return err
		}
	}
	if s.NoNewPrivs && !cur.noNewPrivs {
		if err := p.do(tid, wrapf("no_new_privs"), unix.SYS_PRCTL, unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			return err
		}
	}
	if s.Personality != cur.personality {
		if err := p.do(tid, wrapf("personality %#x", s.Personality), unix.SYS_PERSONALITY, s.Personality); err != nil {
			return err
		}
	}
	return nil
}

// capset sets a thread's permitted, effective and inheritable sets
// (_LINUX_CAPABILITY_VERSION_3: a header, then two 32-bit halves).
func (p *target) capset(tid int, prm, eff, inh uint64) error {
	b := make([]byte, 8+24)
	le.PutUint32(b[0:], unix.LINUX_CAPABILITY_VERSION_3)
	le.PutUint32(b[4:], uint32(tid))
	for i, half := range []uint64{0, 32} {
		d := b[8+12*i:]
		le.PutUint32(d[0:], uint32(eff>>half))
		le.PutUint32(d[4:], uint32(prm>>half))
		le.PutUint32(d[8:], uint32(inh>>half))
	}
	what := wrapf("capset permitted %#x effective %#x inheritable %#x", prm, eff, inh)
	if p.queues(tid) {
		addrs, err := p.putSeq(b)
		if err != nil {
			return err
		}
		p.q(what, unix.SYS_CAPSET, addrs[0], addrs[0]+8)
		return nil
	}
	addr, err := p.put(0, b)
	if err != nil {
		return err
	}
	return p.do(tid, what, unix.SYS_CAPSET, addr, addr+8)
}

// suspendSeccomp sets PTRACE_O_SUSPEND_SECCOMP on every thread of the
// task (needs CAP_SYS_ADMIN): the filters installed then let the
// restore's own later calls through; the detach clears it.
func (p *target) suspendSeccomp() error {
	if p.suspended {
		return nil
	}
	if noSuspendSeccomp {
		return fmt.Errorf("suspend seccomp (turned off by a test): %w", unix.EPERM)
	}
	for _, tid := range p.tids {
		if err := ptrace.SetOptions(tid, traceOptions|unix.PTRACE_O_SUSPEND_SECCOMP); err != nil {
			return err
		}
	}
	p.suspended = true
	return nil
}

// noSuspendSeccomp makes the restore behave as without CAP_SYS_ADMIN
// (tests of the filters' order).
var noSuspendSeccomp bool

// installSeccomp installs every thread's filters but those installed
// early, the last injected calls of the task but the trampoline's munmap
// (step 7).
func (p *target) installSeccomp(early []bool) error {
	lists := make([][]image.SeccompFilter, len(p.t.Threads))
	anyFilters, tsync := false, true
	for i := range p.t.Threads {
		if early[i] {
			tsync = false
		} else if s := p.t.ThreadSecurity(i); s != nil {
			lists[i] = s.Filters
			anyFilters = anyFilters || len(s.Filters) > 0
		}
	}
	if !anyFilters {
		return nil
	}
	// As root, no filter may deny the munmap that follows; otherwise
	// the filters must allow the restore's own calls made after them.
	if err := p.suspendSeccomp(); err != nil && !errors.Is(err, unix.EPERM) {
		return err
	}
	if !p.suspended {
		if err := p.checkFiltersLetRestoreFinish(lists); err != nil {
			return err
		}
	}
	shared := sharedPrefix(lists)
	if shared > 0 && len(lists) > 1 && tsync && p.tsyncKeepsNoNewPrivs() {
		if err := p.installFilters(p.pid, lists[0][:shared], seccompFlagTsync); err != nil {
			return fmt.Errorf("seccomp filters shared by all threads: %w", err)
		}
	} else {
		shared = 0
	}
	for i := range p.t.Threads {
		if err := p.installFilters(p.tids[i], lists[i][shared:], 0); err != nil {
			return fmt.Errorf("thread %d: %w", p.t.Threads[i].TID, err)
		}
	}
	return nil
}

// checkFiltersLetRestoreFinish refuses filters that would deny (or kill
// on) the calls the restore injects after them when they are not
// suspended: the seccomp calls installing each thread's next filters, and
// the main thread's munmap of the trampoline (finish). It evaluates them
// as the kernel will (internal/seccomp) before any is installed.
func (p *target) checkFiltersLetRestoreFinish(lists [][]image.SeccompFilter) error {
	at := func(nr int, args ...uint64) seccomp.Data {
		d := seccomp.Data{Nr: int32(nr), Arch: unix.AUDIT_ARCH_X86_64, IP: p.tramp + 2}
		copy(d.Args[:], args)
		return d
	}
	check := func(i int, stack []image.SeccompFilter, what string, d seccomp.Data) error {
		progs := make([][]byte, len(stack))
		for j, f := range stack {
			progs[j] = f.Prog
		}
		act, err := seccomp.Action(progs, d)
		if err != nil {
			return fmt.Errorf("thread %d: %w", p.t.Threads[i].TID, err)
		}
		if !seccomp.Allows(act) {
			return fmt.Errorf("thread %d: its seccomp filters would answer %#x to the restore's own %s: "+
				"restore as root (CAP_SYS_ADMIN), which suspends them meanwhile", p.t.Threads[i].TID, act, what)
		}
		return nil
	}
	for i, l := range lists {
		for j := 1; j < len(l); j++ {
			if err := check(i, l[:j], "seccomp() installing the next filter",
				at(unix.SYS_SECCOMP, seccompSetModeFilter, l[j].Flags, p.scratch)); err != nil {
				return err
			}
		}
	}
	return check(0, lists[0], "munmap of its trampoline", at(unix.SYS_MUNMAP, p.region, regionSize))
}

// tsyncKeepsNoNewPrivs: SECCOMP_FILTER_FLAG_TSYNC gives every thread the
// caller's no_new_privs; that is right only if they all have it or the
// main thread has not.
func (p *target) tsyncKeepsNoNewPrivs() bool {
	main := p.t.ThreadSecurity(0)
	if !main.NoNewPrivs {
		return true
	}
	for i := range p.t.Threads {
		if s := p.t.ThreadSecurity(i); s == nil || !s.NoNewPrivs {
			return false
		}
	}
	return true
}

// sharedPrefix is how many filters, oldest first, every list has alike.
func sharedPrefix(lists [][]image.SeccompFilter) int {
	n := len(lists[0])
	for _, l := range lists[1:] {
		n = min(n, len(l))
		for i := 0; i < n; i++ {
			if l[i].Flags != lists[0][i].Flags || !slices.Equal(l[i].Prog, lists[0][i].Prog) {
				n = i
				break
			}
		}
	}
	return n
}

// installFilters installs filters in thread tid, oldest first, with
// seccomp(SECCOMP_SET_MODE_FILTER, flags | the filter's own flags).
func (p *target) installFilters(tid int, filters []image.SeccompFilter, flags uint64) error {
	for i, f := range filters {
		if sockFprogSize+len(f.Prog) > scratchSize {
			return fmt.Errorf("seccomp filter of %d bytes does not fit the scratch area", len(f.Prog))
		}
		prog, err := p.put(sockFprogSize, f.Prog)
		if err != nil {
			return err
		}
		fprog := make([]byte, sockFprogSize)
		le.PutUint16(fprog, uint16(len(f.Prog)/image.SockFilterSize))
		le.PutUint64(fprog[8:], prog)
		addr, err := p.put(0, fprog)
		if err != nil {
			return err
		}
		// At the trampoline, where checkFiltersLetRestoreFinish checks it.
		got, err := p.sysTrap(tid, unix.SYS_SECCOMP, seccompSetModeFilter, flags|f.Flags, addr)
		if err != nil {
			return fmt.Errorf("install seccomp filter %d: %w", i, err)
		}
		if flags&seccompFlagTsync != 0 && got != 0 {
			return fmt.Errorf("install seccomp filter %d: thread %d could not take it", i, got)
		}
	}
	return nil
}
