package dumper

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/image"
	"github.com/ckptfs/ckptfs/internal/inject"
	"github.com/ckptfs/ckptfs/internal/proc"
	"github.com/ckptfs/ckptfs/internal/ptrace"
)

// procPart is what collection reads of a frozen process from /proc alone,
// with no ptrace request: it is read for all processes in parallel, ahead
// of the ptrace thread (prefetch.go).
type procPart struct {
	task    *image.Task
	status  map[string]string    // /proc/<pid>/status
	threads map[int]threadStatus // /proc/<pid>/task/<tid>/status
	comms   map[int]string       // /proc/<pid>/task/<tid>/comm
	vdso    *image.VMA           // nil: none
}

// collectProc reads the /proc part of a frozen process, checks its fds
// and mappings (refuse.go) and its threads' seccomp mode.
func collectProc(ft *frozenTask) (*procPart, error) {
	pid := ft.pid
	stb, err := proc.Read(pid, "stat")
	if err != nil {
		return nil, err
	}
	st, err := proc.ParseStat(stb)
	if err != nil {
		return nil, fmt.Errorf("process %d: %w", pid, err)
	}
	// The state as it was before the seize (now it is "t", traced).
	t := &image.Task{PID: pid, PPID: st.PPID, PGID: st.PGID, SID: st.SID, TTYNr: st.TTYNr, TPGID: st.TPGID, Comm: st.Comm, State: ft.state}
	part := &procPart{task: t}
	status, err := proc.Read(pid, "status")
	if ft.zombie {
		t.ExitCode = statExitCode(stb)
		if err != nil {
			return part, nil // its status is read only for its pids at every level
		}
		t.NSpid, err = nsPIDs(proc.KeyValues(status)["NSpid"]) // pidns.go
		return part, err
	}
	if err != nil {
		return nil, err
	}
	kv := proc.KeyValues(status)
	if t.NSpid, err = nsPIDs(kv["NSpid"]); err != nil { // pidns.go
		return nil, fmt.Errorf("process %d: %w", pid, err)
	}
	part.status = kv
	copy(t.Creds.UID[:], proc.IDs(kv["Uid"]))
	copy(t.Creds.GID[:], proc.IDs(kv["Gid"]))
	t.Creds.Groups = proc.IDs(kv["Groups"])
	if um, err := strconv.ParseUint(kv["Umask"], 8, 32); err == nil {
		t.Umask = uint32(um)
	}
	for _, f := range []struct {
		name string
		dst  *[]byte
	}{{"cmdline", &t.Cmdline}, {"environ", &t.Environ}, {"auxv", &t.Auxv}} {
		if *f.dst, err = proc.Read(pid, f.name); err != nil {
			return nil, err
		}
	}
	for _, f := range []struct {
		name string
		dst  *string
	}{{"exe", &t.Exe}, {"cwd", &t.Cwd}, {"root", &t.Root}} {
		if *f.dst, err = proc.Readlink(pid, f.name); err != nil {
			return nil, err
		}
	}
	t.MM = image.MM{
		StartCode: st.StartCode, EndCode: st.EndCode,
		StartData: st.StartData, EndData: st.EndData,
		StartBrk: st.StartBrk, Brk: st.StartBrk,
		StartStack: st.StartStack,
		ArgStart:   st.ArgStart, ArgEnd: st.ArgEnd,
		EnvStart: st.EnvStart, EnvEnd: st.EnvEnd,
	}
	if t.Limits, err = readLimits(pid); err != nil {
		return nil, err
	}
	if t.VMAs, err = collectVMAs(pid); err != nil {
		return nil, err
	}
	for _, v := range t.VMAs {
		switch v.Kind {
		case image.VMAHeap:
			t.MM.Brk = v.End
		case image.VMAVdso:
			part.vdso = v
		}
	}
	if t.FDs, err = collectFDs(pid); err != nil {
		return nil, err
	}
	if err := checkFDs(pid, t.FDs); err != nil {
		return nil, err
	}
	if err := checkVMAs(pid, t.VMAs); err != nil {
		return nil, err
	}
	if part.threads, err = readThreadStatuses(ft); err != nil { // security.go
		return nil, err
	}
	part.comms = map[int]string{}
	for _, tid := range ft.tids {
		comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/comm", pid, tid))
		if err != nil {
			return nil, fmt.Errorf("thread %d: %w", tid, err)
		}
		part.comms[tid] = strings.TrimSuffix(string(comm), "\n")
	}
	return part, nil
}

// batchThreads is how many threads' injected calls run at once
// (inject.Batch): enough that a step costs one scheduling round trip for
// a whole tree of small processes.
const batchThreads = 256

// collectTasks collects every frozen task, in order, the /proc part read
// ahead (prefetch.go), the injected calls of many threads batched. stop
// is asked before each task; each task is passed to done once collected.
func collectTasks(tasks []*frozenTask, stop func() error, done func(*image.Task) error) error {
	pre := prefetchProc(tasks)
	defer pre.stop()
	tramps := &inject.VdsoTrampolines{}
	var pending []*taskCollect
	var jobs []*inject.Job
	flush := func() error {
		if err := inject.Batch(jobs); err != nil {
			return err
		}
		for _, tc := range pending {
			t, err := tc.finish()
			if err != nil {
				return err
			}
			if err := done(t); err != nil {
				return err
			}
		}
		pending, jobs = nil, nil
		return nil
	}
	for i, ft := range tasks {
		if err := stop(); err != nil {
			return err
		}
		part, err := pre.get(i)
		if err != nil {
			return err
		}
		tc, err := prepareTask(ft, part, tramps)
		if err != nil {
			return err
		}
		pending = append(pending, tc)
		jobs = append(jobs, tc.jobs...)
		if len(jobs) >= batchThreads {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	return flush()
}

// taskCollect is a task being collected: its /proc part, what ptrace read
// of its threads, and the jobs that read the rest inside them.
type taskCollect struct {
	task   *image.Task
	part   *procPart
	extras []*inject.Extras // per thread, filled by the jobs
	jobs   []*inject.Job
}

// prepareTask completes the /proc part of a frozen process with what its
// tracer reads without running it (registers, signal state) and returns
// the jobs to inject into each thread: the extras and, in the main
// thread, the signal handlers. tramps finds the syscall instruction to
// inject with.
func prepareTask(ft *frozenTask, part *procPart, tramps *inject.VdsoTrampolines) (*taskCollect, error) {
	t, pid := part.task, ft.pid
	tc := &taskCollect{task: t, part: part}
	if ft.zombie {
		return tc, nil
	}
	var err error
	if t.SharedPending, err = ptrace.PeekSiginfo[image.Siginfo](pid, true); err != nil {
		return nil, err
	}
	if err := suspendSeccomp(ft, part.threads); err != nil { // security.go: before any injection
		return nil, err
	}
	// A syscall instruction to inject with, found once for all threads.
	var tramp uint64
	if part.vdso != nil && strings.Contains(part.vdso.Perms, "x") {
		tramp, err = tramps.Find(pid, part.vdso.Start, part.vdso.End)
	} else {
		tramp, err = inject.FindSyscallInsn(pid)
	}
	if err != nil {
		return nil, err
	}
	ask, err := sigactionsToAsk(part.status)
	if err != nil {
		return nil, fmt.Errorf("process %d: %w", pid, err)
	}
	for _, tid := range ft.tids {
		th, err := readThread(tid, part.comms[tid])
		if err != nil {
			return nil, err
		}
		th.NSpid = part.threads[tid].nspid
		t.Threads = append(t.Threads, th)
		var more func(scratch uint64) []inject.Call
		if tid == pid {
			more = func(scratch uint64) []inject.Call { return sigactionCalls(t, tramp, scratch, ask) } // sigactions.go
		}
		x := &inject.Extras{}
		j, err := inject.ExtrasJob(tid, tramp, tid == pid, x, more)
		if err != nil {
			return nil, fmt.Errorf("thread %d: %w", tid, err)
		}
		tc.extras = append(tc.extras, x)
		tc.jobs = append(tc.jobs, j)
	}
	return tc, nil
}

// finish records what the jobs read, once they ran.
func (tc *taskCollect) finish() (*image.Task, error) {
	t := tc.task
	for i, th := range t.Threads {
		x := tc.extras[i]
		th.Extras = &image.Extras{AltStackSP: x.AltStack.SP, AltStackFlags: uint64(uint32(x.AltStack.Flags)),
			AltStackSize: x.AltStack.Size, ClearTID: x.ClearTID, RobustHead: x.RobustHead, RobustLen: x.RobustLen}
		var err error
		if th.Security, err = collectSecurity(t.PID, th.TID, tc.part.threads[th.TID], x.Prctls); err != nil { // security.go
			return nil, err
		}
	}
	if len(t.Threads) > 0 {
		shareSecurity(t) // security.go
	}
	return t, nil
}

// readThread reads what ptrace gives of a stopped thread without running it.
func readThread(tid int, comm string) (*image.Thread, error) {
	th := &image.Thread{TID: tid, Comm: comm}
	var err error
	if th.Regs, err = ptrace.GetRegs(tid); err != nil {
		return nil, err
	}
	th.InSyscall = image.InterruptedSyscall(&th.Regs)
	if th.XState, err = ptrace.GetXState(tid); err != nil {
		return nil, err
	}
	if th.SigMask, err = ptrace.GetSigMask(tid); err != nil {
		return nil, err
	}
	if th.Pending, err = ptrace.PeekSiginfo[image.Siginfo](tid, false); err != nil {
		return nil, err
	}
	rseq, err := ptrace.GetRseq(tid)
	if err != nil {
		return nil, err
	}
	th.Rseq = (*image.Rseq)(rseq)
	return th, nil
}

func collectVMAs(pid int) ([]*image.VMA, error) {
	maps, err := proc.Maps(pid)
	if err != nil {
		return nil, err
	}
	var out []*image.VMA
	for _, m := range maps {
		v := &image.VMA{Start: m.Start, End: m.End, Perms: m.Perms, Offset: m.Offset, Dev: m.Dev,
			Inode: m.Inode, Name: m.Name, Flags: m.Flags}
		v.Name = deletedAsMemfd(v) // kind_memfd.go
		v.Kind = vmaKind(v)
		if v.Kind == image.VMAFile {
			// The kernel keeps the mapped file: stat it through map_files.
			var st unix.Stat_t
			if err := unix.Stat(fmt.Sprintf("/proc/%d/map_files/%x-%x", pid, m.Start, m.End), &st); err == nil {
				v.FileSize = st.Size
			}
		}
		out = append(out, v)
	}
	return out, nil
}

func vmaKind(v *image.VMA) string {
	switch {
	case v.Name == "[heap]":
		return image.VMAHeap
	case v.Name == "[stack]":
		return image.VMAStack
	case v.Name == "[vdso]":
		return image.VMAVdso
	case strings.HasPrefix(v.Name, "[vvar"):
		return image.VMAVvar
	case v.Name == "[vsyscall]":
		return image.VMAVsyscall
	case v.Shared() && (v.Inode == 0 || strings.HasPrefix(v.Name, "/dev/zero") ||
		strings.HasPrefix(v.Name, "/memfd:") || strings.HasPrefix(v.Name, "/SYSV")):
		return image.VMAShmem
	case v.Inode != 0 && strings.HasPrefix(v.Name, "/"):
		return image.VMAFile
	}
	return image.VMAAnon
}

// parallelFDs is the fd table size from which collectFDs reads it on
// every CPU: each fd costs some ten /proc calls, all while frozen.
const parallelFDs = 512

func collectFDs(pid int) ([]*image.FD, error) {
	nums, err := proc.FDs(pid)
	if err != nil {
		return nil, err
	}
	workers := 1
	if len(nums) >= parallelFDs {
		workers = min(runtime.NumCPU(), 4)
	}
	out := make([]*image.FD, len(nums))
	errs := make([]error, workers)
	per := (len(nums) + workers - 1) / workers
	var wg sync.WaitGroup
	for w := range workers {
		lo, hi := min(w*per, len(nums)), min((w+1)*per, len(nums))
		wg.Go(func() {
			defer func() {
				// an error, not a crash that would leave the tree to the
				// kernel (as Dump does for the ptrace thread)
				if r := recover(); r != nil {
					errs[w] = fmt.Errorf("fds of %d: internal error: %v", pid, r)
				}
			}()
			errs[w] = collectFDRange(pid, nums[lo:hi], out[lo:hi])
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// collectFDRange reads fds nums of pid into out (as long as nums).
func collectFDRange(pid int, nums []int, out []*image.FD) error {
	if len(nums) == 0 {
		return nil
	}
	dirs, err := openFDDirs(pid) // fdread.go
	if err != nil {
		return err
	}
	defer dirs.close()
	ids := fileIDs{} // kind_file.go
	for i, n := range nums {
		path, err := dirs.link(n)
		if err != nil {
			return err
		}
		info, err := dirs.info(n)
		if err != nil {
			return err
		}
		f := &image.FD{Num: n, Path: path}
		for line := range strings.Lines(string(info)) {
			line = strings.TrimSuffix(line, "\n")
			k, v, _ := strings.Cut(line, ":")
			v = strings.TrimSpace(v)
			switch k {
			case "pos":
				f.Pos, _ = strconv.ParseInt(v, 10, 64)
			case "flags":
				fl, _ := strconv.ParseUint(v, 8, 32)
				f.Flags = uint32(fl)
			default:
				f.Extra = append(f.Extra, line)
			}
		}
		if p, ok := strings.CutSuffix(path, " (deleted)"); ok && strings.HasPrefix(path, "/") {
			f.Deleted = true
			f.Path = p
		}
		var st unix.Stat_t
		if err := dirs.stat(n, &st); err != nil {
			return err
		}
		f.Kind = fdKind(path, st.Mode)
		f.Ino = st.Ino
		if f.Kind == image.FDSocket {
			if err := classifySocket(pid, f); err != nil { // kind_inet.go
				return err
			}
		}
		if f.Kind == image.FDFile {
			f.Size = st.Size
		}
		if err := fdKindStateStat(pid, f, &st, ids); err != nil {
			return fmt.Errorf("fd %d of %d: %w", n, pid, err)
		}
		out[i] = f
	}
	return nil
}

// statExitCode returns field 52 of /proc/<pid>/stat, the wait status of a
// task that has exited (0 if the kernel does not show it).
func statExitCode(stat []byte) int {
	s := string(stat)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	// f[0] is field 3.
	if len(f) < 50 {
		return 0
	}
	n, _ := strconv.Atoi(f[49])
	return n
}
