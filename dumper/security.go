package dumper

import (
	"encoding/binary"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/image"
	"github.com/ckptfs/ckptfs/internal/inject"
	"github.com/ckptfs/ckptfs/internal/proc"
	"github.com/ckptfs/ckptfs/internal/ptrace"
)

// What bounds a thread's privileges is recorded per thread (security.go of
// image): capability sets, no_new_privs and seccomp from
// /proc/<pid>/task/<tid>/status, personality from .../personality, the
// seccomp filters with PTRACE_SECCOMP_GET_FILTER, and securebits,
// pdeathsig and dumpable with prctl injected in the thread's ReadExtras
// batch. A task whose threads are under seccomp filters gets
// PTRACE_O_SUSPEND_SECCOMP before anything is injected: its filters could
// deny (or kill on) the injected calls. The detach clears it.

// ErrUnrestorable says a thread is in a state a restore cannot give back.
type ErrUnrestorable struct {
	PID, TID int
	What     string
}

func (e *ErrUnrestorable) Error() string {
	return fmt.Sprintf("process %d thread %d %s: it could not be restored, so it is not dumped", e.PID, e.TID, e.What)
}

// threadStatus is what /proc/<pid>/task/<tid>/status says about a thread's
// privileges.
type threadStatus struct {
	caps           [5]uint64 // CapInh CapPrm CapEff CapBnd CapAmb
	noNewPrivs     bool
	seccomp        int
	seccompFilters int
	nspid          []int // the thread's ids at every pid namespace level (pidns.go); nil: one
}

var capKeys = [5]string{"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"}

func readThreadStatus(pid, tid int) (threadStatus, error) {
	var s threadStatus
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/status", pid, tid))
	if err != nil {
		return s, fmt.Errorf("thread %d: %w", tid, err)
	}
	kv := proc.KeyValues(b)
	if s.nspid, err = nsPIDs(kv["NSpid"]); err != nil { // pidns.go
		return s, fmt.Errorf("thread %d: %w", tid, err)
	}
	for i, k := range capKeys {
		if s.caps[i], err = strconv.ParseUint(kv[k], 16, 64); err != nil {
			return s, fmt.Errorf("thread %d status %s %q: %w", tid, k, kv[k], err)
		}
	}
	// Absent: a kernel without seccomp (Seccomp), or older than 5.9
	// (Seccomp_filters: counted by ptrace.SeccompFilters).
	s.seccompFilters = -1
	for _, f := range []struct {
		key string
		dst *int
	}{{"Seccomp", &s.seccomp}, {"Seccomp_filters", &s.seccompFilters}} {
		v, ok := kv[f.key]
		if !ok {
			continue
		}
		if *f.dst, err = strconv.Atoi(v); err != nil {
			return s, fmt.Errorf("thread %d status %s %q: %w", tid, f.key, v, err)
		}
	}
	s.noNewPrivs = kv["NoNewPrivs"] == "1"
	return s, nil
}

// precheckSecurity refuses, before anything is seized, threads whose
// state a restore cannot reproduce or that the dump could not read:
// seccomp strict mode (only read, write, exit and sigreturn are allowed:
// the restore could not inject a single call after it), and filters when
// this process may not read them.
func precheckSecurity(pid int) error {
	tids, err := proc.Tasks(pid)
	if err != nil {
		return nil // exited meanwhile: the frozen check decides
	}
	for _, tid := range tids {
		st, err := readThreadStatus(pid, tid)
		if err != nil {
			return nil
		}
		switch st.seccomp {
		case 0:
		case image.SeccompModeFilter:
			if err := canReadFilters(); err != nil {
				return &ErrUnrestorable{PID: pid, TID: tid, What: "is under seccomp filters, which " + err.Error()}
			}
		default:
			return &ErrUnrestorable{PID: pid, TID: tid, What: fmt.Sprintf("is in seccomp strict mode (%d)", st.seccomp)}
		}
	}
	return nil
}

// canReadFilters says why this process cannot read seccomp filters
// (PTRACE_SECCOMP_GET_FILTER and PTRACE_O_SUSPEND_SECCOMP need
// CAP_SYS_ADMIN and a tracer without seccomp), nil if it can.
func canReadFilters() error {
	st, err := readThreadStatus(os.Getpid(), unix.Gettid())
	if err != nil {
		return err
	}
	if st.caps[2]&(1<<unix.CAP_SYS_ADMIN) == 0 {
		return fmt.Errorf("only a dumper with CAP_SYS_ADMIN can read")
	}
	if st.seccomp != 0 {
		return fmt.Errorf("a dumper under seccomp itself cannot read")
	}
	return nil
}

// readThreadStatuses reads the status of every thread of a frozen task
// (no ptrace: the /proc part of collection, read ahead); they serve
// suspendSeccomp and collectSecurity.
func readThreadStatuses(ft *frozenTask) (map[int]threadStatus, error) {
	statuses := map[int]threadStatus{}
	for _, tid := range ft.tids {
		st, err := readThreadStatus(ft.pid, tid)
		if err != nil {
			return nil, err
		}
		statuses[tid] = st
	}
	return statuses, nil
}

// suspendSeccomp sets PTRACE_O_SUSPEND_SECCOMP on every thread of a frozen
// task if any has seccomp filters (statuses: readThreadStatuses), before
// calls are injected.
func suspendSeccomp(ft *frozenTask, statuses map[int]threadStatus) error {
	filtered := false
	for _, tid := range ft.tids {
		filtered = filtered || statuses[tid].seccomp != 0
	}
	if !filtered {
		return nil
	}
	for _, tid := range ft.tids {
		if err := ptrace.SetOptions(tid, unix.PTRACE_O_TRACESYSGOOD|unix.PTRACE_O_SUSPEND_SECCOMP); err != nil {
			return fmt.Errorf("process %d: suspend its seccomp filters while it is dumped: %w", ft.pid, err)
		}
	}
	return nil
}

// collectSecurity reads the security state of thread tid of pid; st is
// its status (suspendSeccomp), pr what prctl said in it (ReadExtras; the
// process' dumpable flag comes from the main thread).
func collectSecurity(pid, tid int, st threadStatus, pr inject.Prctls) (*image.Security, error) {
	pers, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/personality", pid, tid))
	if err != nil {
		return nil, fmt.Errorf("thread %d: %w", tid, err)
	}
	s := &image.Security{CapInh: st.caps[0], CapPrm: st.caps[1], CapEff: st.caps[2], CapBnd: st.caps[3], CapAmb: st.caps[4],
		NoNewPrivs: st.noNewPrivs, SeccompMode: st.seccomp,
		SecureBits: pr.SecureBits, PDeathSig: pr.PDeathSig, Dumpable: pr.Dumpable}
	if s.Personality, err = strconv.ParseUint(strings.TrimSpace(string(pers)), 16, 32); err != nil {
		return nil, fmt.Errorf("thread %d personality %q: %w", tid, pers, err)
	}
	switch st.seccomp {
	case 0:
		return s, nil
	case image.SeccompModeFilter:
	default:
		return nil, &ErrUnrestorable{PID: pid, TID: tid, What: fmt.Sprintf("is in seccomp strict mode (%d)", st.seccomp)}
	}
	filters, err := ptrace.SeccompFilters(tid, st.seccompFilters)
	if err != nil {
		return nil, fmt.Errorf("process %d: %w", pid, err)
	}
	for _, f := range filters {
		s.Filters = append(s.Filters, image.SeccompFilter(f))
	}
	for i, f := range s.Filters {
		if why := unrestorableFilter(f.Prog); why != "" {
			return nil, &ErrUnrestorable{PID: pid, TID: tid, What: fmt.Sprintf("has a seccomp filter (%d of %d, oldest first) that %s", i, len(s.Filters), why)}
		}
	}
	if err := s.Validate(); err != nil {
		return nil, fmt.Errorf("process %d thread %d: %w", pid, tid, err)
	}
	return s, nil
}

// BPF opcodes of the returns a seccomp filter may have.
const (
	bpfRetK = 0x06 // BPF_RET | BPF_K
	bpfRetA = 0x16 // BPF_RET | BPF_A
)

// unrestorableFilter says why a filter program cannot be installed again
// with the same effect, "" if it can. A filter that may return
// SECCOMP_RET_USER_NOTIF was installed with SECCOMP_FILTER_FLAG_NEW_LISTENER
// (else the kernel returns ENOSYS for it, and PTRACE_GET_SECCOMP_METADATA
// does not say which): its supervisor holds the listener, which a restore
// cannot hand back. A return of the accumulator could be that action.
func unrestorableFilter(prog []byte) string {
	for i := 0; i+image.SockFilterSize <= len(prog); i += image.SockFilterSize {
		code := binary.LittleEndian.Uint16(prog[i:])
		k := binary.LittleEndian.Uint32(prog[i+4:])
		switch {
		case code == bpfRetK && k&unix.SECCOMP_RET_ACTION_FULL == unix.SECCOMP_RET_USER_NOTIF:
			return "sends user notifications (SECCOMP_RET_USER_NOTIF, a SECCOMP_FILTER_FLAG_NEW_LISTENER filter)"
		case code == bpfRetA:
			return "returns a computed action (BPF_RET|BPF_A), maybe a user notification"
		}
	}
	return ""
}

// shareSecurity keeps the main thread's state as the task's and, per
// thread, only a state that differs from it. Dumpable, per process, was
// read in the main thread only.
func shareSecurity(t *image.Task) {
	if len(t.Threads) == 0 {
		return
	}
	t.Security = t.Threads[0].Security
	for _, th := range t.Threads {
		th.Security.Dumpable = t.Security.Dumpable
	}
	for _, th := range t.Threads {
		if th.Security.Equal(t.Security) {
			th.Security = nil
		}
	}
}
