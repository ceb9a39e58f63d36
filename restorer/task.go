package restorer

import (
	"errors"
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/image"
	"github.com/ckptfs/ckptfs/internal/human"
	"github.com/ckptfs/ckptfs/internal/inject"
	"github.com/ckptfs/ckptfs/internal/proc"
	"github.com/ckptfs/ckptfs/internal/ptrace"
	"github.com/ckptfs/ckptfs/internal/sysseq"
)

// Trampoline region: one code page (`syscall; int3`, then the runner of
// queued calls: queue.go), scratch pages for the data injected syscalls
// point at, and the queued calls' table and data (seqSize).
const (
	scratchSize = 11 * image.PageSize // fits the largest seccomp filter (security.go)
	regionSize  = image.PageSize + scratchSize + seqSize
)

// target is one process being restored.
type target struct {
	r       *restorer
	t       *image.Task
	pid     int
	tramp   uint64 // a `syscall` instruction in the process
	scratch uint64 // writable scratch memory in the process
	region  uint64 // the trampoline region, once mapped
	tids    []int  // threads created, main thread first
	// suspended: PTRACE_O_SUSPEND_SECCOMP is set on its threads (security.go)
	suspended bool
	// inNS: in a pid namespace the restore created, where the recorded
	// inner ids are used and the restorer is not visible (pidns.go)
	inNS bool
	// pidfd of the restorer in the process while restoreMemory installs
	// files (pullFD): a queued call's result; open while hasPidfd
	pidfd    sysseq.Ret
	hasPidfd bool
	// seq: the main thread's queued calls (queue.go), once the region
	// is mapped
	seq *sysseq.Seq
}

// pullFD queues taskFD for restoreMemory's files (executable, mapped
// files): one pidfd of the restorer serves every install, instead of a
// pidfd_open and a close around each. dropPidfd closes it before the fds
// are restored (they may be put at its number). The result is the fd's
// number in the task, once the call ran.
func (p *target) pullFD(own int, what func(error) error) sysseq.Ret {
	if !p.hasPidfd {
		p.pidfd, p.hasPidfd = p.queueRestorerPidfd(), true // pidns.go
	}
	return p.qFrom(what, p.pidfd, 0, unix.SYS_PIDFD_GETFD, 0, uint64(own), 0)
}

func (p *target) dropPidfd() {
	if p.hasPidfd {
		p.queue(sysseq.Call{Nr: unix.SYS_CLOSE, From: p.pidfd, GoOn: true}, nil)
		p.hasPidfd = false
	}
}

// sys injects a system call into thread tid of p at its `syscall; int3`
// trampoline, after the calls queued for p: into the main thread, once
// the region is mapped, as the last call of its queue (one stop for all).
func (p *target) sys(tid int, nr uintptr, args ...uint64) (uint64, error) {
	if p.seq != nil && tid == p.pid {
		return p.sysQueued(nr, args...) // queue.go
	}
	return p.sysTrap(tid, nr, args...)
}

// sysTrap is sys at the trampoline itself, never in a queue's runner:
// for calls whose address matters (seccomp filters are checked at the
// trampoline's) or that create tasks.
func (p *target) sysTrap(tid int, nr uintptr, args ...uint64) (uint64, error) {
	if err := p.flush(); err != nil {
		return 0, err
	}
	v, err := inject.SyscallTrap(tid, p.tramp, nr, args...)
	if err != nil {
		return v, fmt.Errorf("%s: %w", sysName(nr), err)
	}
	return v, nil
}

// put writes b at scratch+off and returns its address in the process.
func (p *target) put(off uint64, b []byte) (uint64, error) {
	if p.region != 0 && off+uint64(len(b)) > scratchSize {
		return 0, fmt.Errorf("%d bytes do not fit the scratch area", len(b))
	}
	addr := p.scratch + off
	return addr, inject.WriteMem(p.pid, addr, b)
}

// cstr writes s NUL-terminated at scratch+off.
func (p *target) cstr(off uint64, s string) (uint64, error) {
	if len(s) >= image.PageSize {
		return 0, fmt.Errorf("path too long: %q", s)
	}
	return p.put(off, append([]byte(s), 0))
}

// restoreMemory is the first part of restoreTask: address space, memory,
// mm fields and limits. It touches nothing but the task for a task without
// shared memory (orderedTask): such tasks run it on several tracers at
// once (parallel.go).
//
// Its calls are queued (queue.go) and run in three stops: the address
// space (stub unmapped, vdso moved, vmas mapped, the userfaultfd made and
// registered) before the memory is written, the rest after.
func (r *restorer) restoreMemory(p *target) error {
	t := p.t
	if err := p.takeOverAddressSpace(); err != nil {
		return err
	}
	ranges, err := r.scans.get(t.PID)
	if err != nil {
		return err
	}
	if err := p.mapVMAs(ranges); err != nil {
		return err
	}
	fill := ranges
	if r.lazy != nil { // lazy.go: the page server fills the rest
		if fill, err = p.lazyHandoff(r.lazy, ranges); err != nil {
			return fmt.Errorf("lazy restore: %w", err)
		}
	}
	ufd, uffd, closeUffd := -1, map[*image.VMA]bool(nil), func() {}
	if useUffd {
		if ufd, uffd, closeUffd, err = p.uffdFill(fill); err != nil {
			return fmt.Errorf("userfaultfd: %w", err)
		}
	}
	if err := p.flush(); err != nil {
		closeUffd()
		return err
	}
	r.logf("task %d: address space cleared, %d vmas mapped", p.pid, len(t.VMAs))
	sf, written := r.storeFill(t.PID)
	stopProgress := r.watchFill(t) // progress.go
	n, err := fillMemory(p.pid, r.dir, t, fill, ufd, uffd, sf)
	stopProgress()
	written()
	closeUffd()
	if err != nil {
		return err
	}
	r.logf("task %d: %s of memory written", p.pid, human.Bytes(n))
	p.protectVMAs(ranges)
	if err := p.setMM(); err != nil {
		return err
	}
	p.dropPidfd()
	if err := p.flush(); err != nil {
		return err
	}
	return p.setLimits() // after PR_SET_MM_MAP, which checks brk against RLIMIT_DATA
}

// restoreFiles is the part of restoreTask that depends on the tasks
// before it: the fds (objects one task creates, others install). Tasks
// run it one at a time, in restore order.
func (r *restorer) restoreFiles(p *target) error {
	if p.t.FilesOf == 0 { // else the table's owner restored it
		if err := p.restoreFDs(); err != nil {
			return err
		}
	}
	// The cwd's fds come and go here, before the fd limit is set.
	if err := p.setCwd(); err != nil {
		return err
	}
	return p.flush() // before the next task's turn
}

// restoreRest ends restoreTask: process state, signal handlers, threads,
// pending signals, credentials and security, all the task's own.
func (r *restorer) restoreRest(p *target) error {
	t := p.t
	if err := p.setProcessState(); err != nil {
		return err
	}
	if err := p.setSigactions(); err != nil {
		return err
	}
	if err := p.createThreads(); err != nil {
		return err
	}
	for i, th := range t.Threads {
		if err := p.setupThread(p.tids[i], th); err != nil {
			return fmt.Errorf("thread %d: %w", th.TID, err)
		}
	}
	if err := p.queuePending(); err != nil {
		return err
	}
	if err := p.setFDLimit(); err != nil {
		return err
	}
	if err := p.setCredsAndSecurity(); err != nil { // security.go; seccomp last
		return err
	}
	if err := p.flush(); err != nil {
		return err
	}
	r.logf("task %d: %d threads, signals, credentials", p.pid, len(t.Threads))
	return r.failpoint("threads")
}

// takeOverAddressSpace maps the trampoline region at an address free in
// both layouts, unmaps every mapping of the stub and moves the vdso unit
// to its recorded address.
func (p *target) takeOverAddressSpace() error {
	// The stub's mappings by address and name: maps, not smaps (whose
	// VmFlags Maps adds, walking every mapping's pages).
	b, err := proc.Read(p.pid, "maps")
	if err != nil {
		return err
	}
	cur, err := proc.ParseMaps(b)
	if err != nil {
		return fmt.Errorf("parse maps of %d: %w", p.pid, err)
	}
	avoid := append(mappingAreas(cur), vmaAreas(p.t.VMAs)...)
	region, err := findFree(regionSize, avoid)
	if err != nil {
		return err
	}
	got, err := p.sys(p.pid, unix.SYS_MMAP, region, regionSize, unix.PROT_READ|unix.PROT_WRITE|unix.PROT_EXEC,
		unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_FIXED_NOREPLACE, ^uint64(0), 0)
	if err != nil {
		return fmt.Errorf("map trampoline: %w", err)
	}
	if got != region {
		return fmt.Errorf("trampoline mapped at %#x, want %#x", got, region)
	}
	if err := p.startSeq(region); err != nil { // queue.go
		return err
	}
	p.region, p.tramp, p.scratch = region, region, region+image.PageSize
	for _, m := range cur {
		if isVdsoName(m.Name) || m.Name == "[vsyscall]" {
			continue
		}
		p.q(wrapf("unmap stub %#x-%#x %s", m.Start, m.End, m.Name), unix.SYS_MUNMAP, m.Start, m.End-m.Start)
	}
	return p.moveVdso(vdsoUnit(cur), append(avoid, area{"trampoline", region, region + regionSize}))
}

// moveVdso moves the vdso and vvar areas onto their recorded addresses, as
// a unit (through a free place first when old and new overlap).
func (p *target) moveVdso(cur []area, avoid []area) error {
	rec := recordedVdso(p.t)
	if len(rec) == 0 {
		for _, a := range cur {
			p.q(wrapf("unmap %s", a.name), unix.SYS_MUNMAP, a.start, a.size())
		}
		return nil
	}
	if !sameShape(rec, cur) {
		return fmt.Errorf("checkpoint needs a vdso layout this kernel lacks: recorded %s, this kernel %s", fmtUnit(rec), fmtUnit(cur))
	}
	if rec[0].start == cur[0].start {
		return nil
	}
	span := cur[len(cur)-1].end - cur[0].start
	move := func(to uint64) error {
		delta := to - cur[0].start
		for i, a := range cur {
			p.q(wrapf("move %s to %#x", a.name, a.start+delta), unix.SYS_MREMAP, a.start, a.size(), a.size(),
				unix.MREMAP_MAYMOVE|unix.MREMAP_FIXED, a.start+delta)
			cur[i].start += delta
			cur[i].end += delta
		}
		return nil
	}
	if rec[0].start < cur[0].start+span && cur[0].start < rec[0].start+span {
		tmp, err := findFree(span, avoid)
		if err != nil {
			return err
		}
		if err := move(tmp); err != nil {
			return err
		}
	}
	return move(rec[0].start)
}

// mapVMAs maps every recorded vma at its address (queued calls). VMAs
// that get contents are mapped writable; protectVMAs sets the recorded
// protection after.
func (p *target) mapVMAs(ranges map[*image.VMA][][2]int64) error {
	files := map[string]taskFile{} // path+mode -> fd in the process
	defer func() {
		for _, f := range files {
			p.queue(sysseq.Call{Nr: unix.SYS_CLOSE, Args: [6]uint64{f.fd}, From: f.ret, GoOn: true}, nil)
		}
	}()
	for i, v := range p.t.VMAs {
		switch v.Kind {
		case image.VMAVdso, image.VMAVvar, image.VMAVsyscall:
			continue
		}
		if isSysV(v) {
			if err := p.attachSysV(i); err != nil { // sysvshm.go
				return err
			}
			continue
		}
		prot := uint64(v.Prot())
		if len(ranges[v]) > 0 {
			prot |= unix.PROT_WRITE
		}
		flags := uint64(unix.MAP_FIXED | unix.MAP_PRIVATE)
		if v.Shared() {
			flags = unix.MAP_FIXED | unix.MAP_SHARED
		}
		if v.HasFlag("gd") {
			flags |= unix.MAP_GROWSDOWN
		}
		if v.HasFlag("nr") {
			flags |= unix.MAP_NORESERVE
		}
		fd, off := taskFile{fd: ^uint64(0)}, uint64(0)
		if mapsFile(v) {
			mode := uint64(unix.O_RDONLY)
			if v.Shared() && v.Perms[1] == 'w' {
				mode = unix.O_RDWR
			}
			key := fmt.Sprintf("%d:%s", mode, v.Name)
			var ok bool
			if fd, ok = files[key]; !ok && memfdOf(p.r.c, v) != nil {
				// A memfd mapped private: its object (shmem.go).
				n, err := p.privateMemfd(v)
				if err != nil {
					return err
				}
				fd = taskFile{fd: n}
				files[key] = fd
			} else if !ok {
				// Opened by the restorer as the task (preopen.go).
				own, err := p.r.sharedFiles(func() (int, error) { return p.r.files.mappedFile(p.t, v) })
				if err != nil {
					return err
				}
				fd = taskFile{ret: p.pullFD(own, wrapf("vma %s: install %s", v.DirName(), v.Name))}
				files[key] = fd
			}
			off = v.Offset
		} else if isShmem(v) {
			own, err := p.r.shmem(v)
			if err != nil {
				return err
			}
			n, err := p.taskFD(own)
			if err != nil {
				return fmt.Errorf("vma %s: shared memory: %w", v.DirName(), err)
			}
			fd = taskFile{fd: n}
			off = v.Offset
		} else {
			flags |= unix.MAP_ANONYMOUS
		}
		p.queue(sysseq.Call{Nr: unix.SYS_MMAP, Args: [6]uint64{v.Start, v.Len(), prot, flags, fd.fd, off}, From: fd.ret, Arg: 4,
			Check: func(got uint64, err error) error {
				if err != nil {
					return fmt.Errorf("vma %s (%s %s): %w", v.DirName(), v.Perms, v.Name, err)
				}
				if got != v.Start {
					return fmt.Errorf("vma %s mapped at %#x", v.DirName(), got)
				}
				return nil
			}}, nil)
		if isShmem(v) {
			p.q(nil, unix.SYS_CLOSE, fd.fd)
		}
		p.adviseVMA(v)
		if isShmem(v) {
			if err := p.shmemMapped(i); err != nil { // shmem.go: seals after the last mapping
				return err
			}
		}
	}
	return nil
}

// taskFile is an fd in the task: a number, or the result of a queued
// call (ret not 0).
type taskFile struct {
	ret sysseq.Ret
	fd  uint64
}

// vmaAdvice maps VmFlags to the madvise that sets them.
var vmaAdvice = []struct {
	flag   string
	advice uint64
}{
	{"hg", unix.MADV_HUGEPAGE},
	{"nh", unix.MADV_NOHUGEPAGE},
	{"dd", unix.MADV_DONTDUMP},
	{"dc", unix.MADV_DONTFORK},
	{"wf", unix.MADV_WIPEONFORK},
}

// adviseVMA queues the madvise calls that set v's VmFlags.
func (p *target) adviseVMA(v *image.VMA) {
	for _, a := range vmaAdvice {
		if v.HasFlag(a.flag) {
			p.q(wrapf("vma %s: madvise %s", v.DirName(), a.flag), unix.SYS_MADVISE, v.Start, v.Len(), a.advice)
		}
	}
}

// protectVMAs queues the mprotect calls that give the vmas written with
// their contents their recorded protection.
func (p *target) protectVMAs(ranges map[*image.VMA][][2]int64) {
	for _, v := range p.t.VMAs {
		if len(ranges[v]) == 0 || v.Prot()&unix.PROT_WRITE != 0 {
			continue
		}
		p.q(wrapf("vma %s", v.DirName()), unix.SYS_MPROTECT, v.Start, v.Len(), uint64(v.Prot()))
	}
}

// setMM queues PR_SET_MM_MAP: the mm fields, auxv and exe link.
func (p *target) setMM() error {
	t := p.t
	own, err := p.r.sharedFiles(func() (int, error) { return p.r.files.exe(t) }) // opened as the task (preopen.go)
	if err != nil {
		return err
	}
	exeFD := p.pullFD(own, wrapf("install executable %s", t.Exe))
	auxv := trimAuxv(t.Auxv)
	m := t.MM
	b := make([]byte, 104)
	le.PutUint32(b[96:], uint32(len(auxv)))
	addrs, err := p.putSeq(b, auxv)
	if err != nil {
		return err
	}
	for i, v := range []uint64{m.StartCode, m.EndCode, m.StartData, m.EndData, m.StartBrk, m.Brk,
		m.StartStack, m.ArgStart, m.ArgEnd, m.EnvStart, m.EnvEnd, addrs[1]} {
		le.PutUint64(b[i*8:], v)
	}
	// b is written when the sequence runs: its fields may still change.
	// The exe fd (at 100) is the pidfd_getfd's result, copied in.
	p.queue(sysseq.Call{Nr: unix.SYS_PRCTL, Args: [6]uint64{unix.PR_SET_MM, unix.PR_SET_MM_MAP, addrs[0], uint64(len(b)), 0},
		From: exeFD, To: addrs[0] + 100}, wrapf("set mm fields"))
	p.queue(sysseq.Call{Nr: unix.SYS_CLOSE, From: exeFD, GoOn: true}, nil)
	return nil
}

// eintrByDump reports a thread whose syscall returned -EINTR only because
// the dump stopped it: epoll_wait and friends are never restarted by the
// kernel, so PTRACE_INTERRUPT makes them fail with EINTR. With no signal
// pending (a signal that interrupted the call would still be pending at the
// stop), nothing but the dump interrupted it, and it is re-run.
func eintrByDump(t *image.Task, th *image.Thread) bool {
	return image.EINTRByFreeze(&th.Regs) && len(th.Pending) == 0 && len(t.SharedPending) == 0
}

// trimAuxv cuts auxv after its AT_NULL entry.
func trimAuxv(a []byte) []byte {
	for i := 0; i+16 <= len(a); i += 16 {
		if le.Uint64(a[i:]) == 0 {
			return a[:i+16]
		}
	}
	return a
}

// setLimits sets the recorded rlimits but RLIMIT_NOFILE, which
// setFDLimit sets once the fds are in: a program may hold fds above its
// own soft and hard limit (one inherited at fd 251 that then lowered it to
// 64), which could not be installed under it.
func (p *target) setLimits() error {
	return p.setLimitsOf(func(res int) bool { return res != unix.RLIMIT_NOFILE })
}

// setFDLimit sets the recorded RLIMIT_NOFILE, after the fds are installed
// and before the credentials change (prlimit on another user's task needs
// CAP_SYS_RESOURCE). No call queued since the fds' flush (restoreFiles)
// makes an fd, and the credentials are queued after: no flush is needed.
func (p *target) setFDLimit() error {
	return p.setLimitsOf(func(res int) bool { return res == unix.RLIMIT_NOFILE })
}

func (p *target) setLimitsOf(which func(res int) bool) error {
	for _, l := range p.t.Limits {
		if !which(l.Resource) {
			continue
		}
		lim := unix.Rlimit{Cur: l.Cur, Max: l.Max}
		err := unix.Prlimit(p.pid, l.Resource, &lim, nil)
		if errors.Is(err, unix.EPERM) && machineSized(l.Resource) {
			err = p.clampLimit(l.Resource, lim)
		}
		if err != nil {
			return fmt.Errorf("set rlimit %d: %w", l.Resource, err)
		}
	}
	return nil
}

// machineSized says whether the kernel sizes a limit's default from the
// machine's memory (RLIMIT_NPROC and RLIMIT_SIGPENDING: max_threads/2),
// so that a checkpoint of another machine can record a hard limit a few
// above this one's, which only CAP_SYS_RESOURCE may raise.
func machineSized(res int) bool {
	return res == unix.RLIMIT_NPROC || res == unix.RLIMIT_SIGPENDING
}

// clampLimit sets want capped at the task's present hard limit, when
// raising it was refused, and says so on stderr: the task gets the
// machine's limit, not an error for a count it will not reach.
func (p *target) clampLimit(res int, want unix.Rlimit) error {
	var now unix.Rlimit
	if err := unix.Prlimit(p.pid, res, nil, &now); err != nil {
		return err
	}
	if want.Max <= now.Max {
		return unix.EPERM // not a raise: the refusal is another one
	}
	got := unix.Rlimit{Cur: min(want.Cur, now.Max), Max: now.Max}
	if err := unix.Prlimit(p.pid, res, &got, nil); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "ckptfs: restore: task %d: rlimit %d hard limit %d recorded, %d here (raising needs CAP_SYS_RESOURCE): set to %d/%d\n",
		p.t.PID, res, want.Max, now.Max, got.Cur, got.Max)
	return nil
}

// setCwd queues the change to the task's cwd: the directory the restorer
// resolved as the task (preopen.go).
func (p *target) setCwd() error {
	t := p.t
	own, err := p.r.sharedFiles(func() (int, error) { return p.r.files.cwd(t) })
	if err != nil {
		return err
	}
	what := wrapf("cwd %s", t.Cwd)
	pidfd := p.queueRestorerPidfd() // pidns.go
	cwd := p.qFrom(what, pidfd, 0, unix.SYS_PIDFD_GETFD, 0, uint64(own), 0)
	p.queue(sysseq.Call{Nr: unix.SYS_CLOSE, From: pidfd, GoOn: true}, nil)
	p.qFrom(what, cwd, 0, unix.SYS_FCHDIR)
	p.queue(sysseq.Call{Nr: unix.SYS_CLOSE, From: cwd, GoOn: true}, nil)
	return nil
}

// setProcessState restores root (after the cwd: setCwd), umask, session
// and process group.
func (p *target) setProcessState() error {
	t := p.t
	if t.Root != "" && t.Root != "/" {
		if len(t.Root) >= image.PageSize {
			return fmt.Errorf("path too long: %q", t.Root)
		}
		addrs, err := p.putSeq(append([]byte(t.Root), 0))
		if err != nil {
			return err
		}
		p.q(wrapf("root %s", t.Root), unix.SYS_CHROOT, addrs[0])
	}
	p.q(nil, unix.SYS_UMASK, uint64(t.Umask))
	return p.setGroupAndTerminal() // session.go
}

func (p *target) setSigactions() error {
	// The task is a copy of the stub: every signal is SIG_DFL but those
	// the restorer itself had ignored when it started the stub (SIGHUP
	// under nohup, say), which exec kept ignored.
	status, err := proc.Read(p.pid, "status")
	if err != nil {
		return err
	}
	ignored, err := strconv.ParseUint(proc.KeyValues(status)["SigIgn"], 16, 64)
	if err != nil {
		return fmt.Errorf("status SigIgn: %w", err)
	}
	for _, sa := range p.t.Sigactions {
		isDefault := sa.Handler == 0 && sa.Flags == 0 && sa.Mask == 0
		if sa.Signo == int(unix.SIGKILL) || sa.Signo == int(unix.SIGSTOP) ||
			isDefault && ignored&(1<<(sa.Signo-1)) == 0 {
			continue
		}
		b := make([]byte, 32)
		le.PutUint64(b[0:], sa.Handler)
		le.PutUint64(b[8:], sa.Flags)
		le.PutUint64(b[16:], sa.Restorer)
		le.PutUint64(b[24:], sa.Mask)
		addrs, err := p.putSeq(b)
		if err != nil {
			return err
		}
		p.q(wrapf("sigaction %d", sa.Signo), unix.SYS_RT_SIGACTION, uint64(sa.Signo), addrs[0], 0, 8)
	}
	return nil
}

const threadFlags = unix.CLONE_VM | unix.CLONE_FS | unix.CLONE_FILES | unix.CLONE_SIGHAND |
	unix.CLONE_THREAD | unix.CLONE_SYSVSEM

func (p *target) createThreads() error {
	for _, th := range p.t.Threads[1:] {
		tid, err := p.clone3(p.pid, threadFlags, 0, th.InnerTID())
		if err != nil {
			return fmt.Errorf("create thread %d: %w", th.TID, err)
		}
		p.tids = append(p.tids, tid)
	}
	return nil
}

// setupThread restores what a thread sets itself: comm, sigaltstack,
// clear_child_tid, robust list and rseq.
func (p *target) setupThread(tid int, th *image.Thread) error {
	name := th.Comm
	if len(name) > 15 {
		name = name[:15]
	}
	if p.queues(tid) {
		return p.queueThreadSetup(th, name) // queue.go
	}
	addr, err := p.cstr(0, name)
	if err != nil {
		return err
	}
	if _, err := p.sys(tid, unix.SYS_PRCTL, unix.PR_SET_NAME, addr); err != nil {
		return err
	}
	if x := th.Extras; x != nil {
		ex := inject.Extras{
			AltStack:   inject.AltStack{SP: x.AltStackSP, Flags: int32(x.AltStackFlags), Size: x.AltStackSize},
			ClearTID:   x.ClearTID,
			RobustHead: x.RobustHead,
			RobustLen:  x.RobustLen,
		}
		if err := inject.WriteExtras(tid, p.tramp, p.scratch, ex); err != nil {
			return err
		}
	}
	if rs := th.Rseq; rs != nil {
		if _, err := p.sys(tid, unix.SYS_RSEQ, rs.Addr, uint64(rs.Len), 0, uint64(rs.Sig)); err != nil {
			return fmt.Errorf("rseq at %#x: %w", rs.Addr, err)
		}
	}
	return nil
}

// queuePending queues the recorded pending signals again. The kernel lets
// a thread queue any siginfo to itself only: process-wide signals are
// queued from the main thread (tid = pid), thread signals from their thread.
func (p *target) queuePending() error {
	if err := p.flushPending(); err != nil {
		return err
	}
	for _, si := range p.t.SharedPending {
		addrs, err := p.putSeq(append([]byte(nil), si[:]...))
		if err != nil {
			return err
		}
		p.q(wrapf("queue signal %d", si.Signo()), unix.SYS_RT_SIGQUEUEINFO, uint64(p.t.InnerPID()), uint64(si.Signo()), addrs[0])
	}
	for i, th := range p.t.Threads {
		if p.queues(p.tids[i]) {
			for _, si := range th.Pending {
				addrs, err := p.putSeq(append([]byte(nil), si[:]...))
				if err != nil {
					return err
				}
				p.q(wrapf("queue signal %d to thread %d", si.Signo(), th.TID), unix.SYS_RT_TGSIGQUEUEINFO, uint64(p.t.InnerPID()), uint64(th.InnerTID()), uint64(si.Signo()), addrs[0])
			}
			continue
		}
		for _, si := range th.Pending {
			addr, err := p.put(0, si[:])
			if err != nil {
				return err
			}
			if _, err := p.sys(p.tids[i], unix.SYS_RT_TGSIGQUEUEINFO, uint64(p.t.InnerPID()), uint64(th.InnerTID()), uint64(si.Signo()), addr); err != nil {
				return fmt.Errorf("queue signal %d to thread %d: %w", si.Signo(), th.TID, err)
			}
		}
	}
	return nil
}

// setCreds sets groups, gids and uids of one thread (credentials are per
// thread in the kernel). It comes last: it may drop privileges.
func (p *target) setCreds(tid int) error {
	c := p.t.Creds
	g := make([]byte, 4*len(c.Groups))
	for i, v := range c.Groups {
		le.PutUint32(g[4*i:], uint32(v))
	}
	if p.queues(tid) && len(g)+sysseq.EntrySize < seqSize/2 {
		return p.queueCreds(g) // queue.go
	}
	addr := p.scratch
	if len(g) > 0 {
		var err error
		if addr, err = p.put(0, g); err != nil {
			return err
		}
	}
	if _, err := p.sys(tid, unix.SYS_SETGROUPS, uint64(len(c.Groups)), addr); err != nil {
		return err
	}
	if _, err := p.sys(tid, unix.SYS_SETRESGID, uint64(c.GID[0]), uint64(c.GID[1]), uint64(c.GID[2])); err != nil {
		return err
	}
	if _, err := p.sys(tid, unix.SYS_SETRESUID, uint64(c.UID[0]), uint64(c.UID[1]), uint64(c.UID[2])); err != nil {
		return err
	}
	return nil
}

// finish unmaps the trampoline (the main thread stops at that munmap's
// exit) and loads every thread's recorded registers, XSAVE area and mask.
func (p *target) finish() error {
	// Its credentials are set (restoreTask): listeners record them.
	if err := p.relisten(); err != nil { // unixsock.go: SO_PEERCRED
		return err
	}
	p.dropReserved() // pidns.go
	// Not sys: the int3 goes with the trampoline; the thread stops at
	// the munmap's syscall-exit stop instead.
	if _, err := inject.Syscall(p.pid, p.tramp, unix.SYS_MUNMAP, p.region, regionSize); err != nil {
		return fmt.Errorf("unmap trampoline: %w", err)
	}
	for i, th := range p.t.Threads {
		tid := p.tids[i]
		regs := th.Regs
		switch {
		case th.InSyscall && regs.Orig_rax == image.NrRestartSyscall:
			// Dumped inside restart_syscall: the original call and its
			// restart block are unknown here; the program sees EINTR
			// (what the kernel's restart_syscall would give it too).
			regs.Rax = ^uint64(unix.EINTR) + 1 // -EINTR
		case th.InSyscall, eintrByDump(p.t, th):
			// Re-run the interrupted syscall (also for
			// -ERESTART_RESTARTBLOCK: its restart block is gone).
			image.ReenterSyscall(&regs)
		}
		regs.Orig_rax = ^uint64(0)
		if err := ptrace.SetXState(tid, th.XState); err != nil {
			return err
		}
		if err := ptrace.SetRegs(tid, regs); err != nil {
			return err
		}
		if err := ptrace.SetSigMask(tid, th.SigMask); err != nil {
			return err
		}
	}
	return nil
}

// flushPending discards the signals the restore itself made pending in the
// process (a recreated zombie child's SIGCHLD): every signal is blocked
// until the end, so rt_sigtimedwait with a zero timeout takes them one by
// one, until none is left (EAGAIN).
func (p *target) flushPending() error {
	if none, err := p.nonePending(); err != nil || none {
		return err
	}
	b := make([]byte, 24) // sigset_t (8 bytes), then struct timespec {0, 0}
	le.PutUint64(b, inject.AllSignals)
	set, err := p.put(0, b)
	if err != nil {
		return err
	}
	for range 64 {
		_, err := p.sys(p.pid, unix.SYS_RT_SIGTIMEDWAIT, set, 0, set+8, 8)
		if errors.Is(err, unix.EAGAIN) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("discard pending signals: %w", err)
		}
	}
	return fmt.Errorf("discard pending signals: still some after 64")
}
