package image

import (
	"bytes"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// Security is what bounds one thread's privileges: its capability sets,
// securebits, no_new_privs, seccomp filters, parent-death signal and
// personality, and its process' dumpable flag. The kernel keeps all of
// them per thread but dumpable (per mm); a restore must give them back
// exactly, or the restored program is more powerful than it was.
type Security struct {
	Personality uint64 // personality(2) flags (/proc/<pid>/task/<tid>/personality)
	CapInh      uint64 // capability sets, bit n = capability n (status CapInh ...)
	CapPrm      uint64
	CapEff      uint64
	CapBnd      uint64
	CapAmb      uint64
	SecureBits  uint64 // prctl(PR_GET_SECUREBITS)
	NoNewPrivs  bool
	PDeathSig   int // prctl(PR_GET_PDEATHSIG), 0: none
	Dumpable    int // prctl(PR_GET_DUMPABLE) of the process: 0, 1 or 2
	SeccompMode int // 0 none, 2 filter (strict mode 1 is refused by the dump)
	// Filters are the seccomp filters, oldest (installed first) first.
	Filters []SeccompFilter
}

// SeccompFilter is one installed seccomp filter program.
type SeccompFilter struct {
	Flags uint64 // SECCOMP_FILTER_FLAG_LOG, the only flag the kernel reports
	Prog  []byte // struct sock_filter array, 8 bytes an instruction
}

// Kernel limits and values the validation checks against.
const (
	SeccompModeFilter = 2
	SeccompFlagLog    = 0x2   // SECCOMP_FILTER_FLAG_LOG
	SockFilterSize    = 8     // sizeof(struct sock_filter)
	BPFMaxInsns       = 4096  // BPF_MAXINSNS
	maxInsnsPerPath   = 32768 // MAX_INSNS_PER_PATH: a stack's instructions, 4 more a filter
	secureBitsKnown   = 0xfff // SECBIT_NOROOT .. SECBIT_EXEC_DENY_INTERACTIVE_LOCKED
	personalityQuery  = 0xffffffff
	dumpableMax       = 2 // SUID_DUMP_ROOT
)

// Names in the tree.
const (
	securityFile      = "security"
	seccompDir        = "seccomp"
	seccompFlagsKey   = "seccomp_filter_flags"
	seccompFiltersKey = "seccomp_filters"
)

// Equal reports whether two threads' security state is the same.
func (s *Security) Equal(o *Security) bool {
	if s == nil || o == nil {
		return s == o
	}
	same := s.Personality == o.Personality && s.CapInh == o.CapInh && s.CapPrm == o.CapPrm &&
		s.CapEff == o.CapEff && s.CapBnd == o.CapBnd && s.CapAmb == o.CapAmb && s.SecureBits == o.SecureBits &&
		s.NoNewPrivs == o.NoNewPrivs && s.PDeathSig == o.PDeathSig && s.Dumpable == o.Dumpable &&
		s.SeccompMode == o.SeccompMode
	return same && slices.EqualFunc(s.Filters, o.Filters, func(x, y SeccompFilter) bool {
		return x.Flags == y.Flags && bytes.Equal(x.Prog, y.Prog)
	})
}

// Validate checks the kernel's own invariants, so that a hand-edited tree
// cannot ask a restore for a state no kernel produces.
func (s *Security) Validate() error {
	switch {
	case s.Personality >= personalityQuery:
		return fmt.Errorf("personality %#x out of range", s.Personality)
	case s.CapEff&^s.CapPrm != 0:
		return fmt.Errorf("cap_effective %#x is not a subset of cap_permitted %#x", s.CapEff, s.CapPrm)
	case s.CapAmb&^(s.CapPrm&s.CapInh) != 0:
		return fmt.Errorf("cap_ambient %#x is not a subset of cap_permitted & cap_inheritable", s.CapAmb)
	case s.SecureBits&^secureBitsKnown != 0:
		return fmt.Errorf("securebits %#x has unknown bits", s.SecureBits)
	case s.PDeathSig < 0 || s.PDeathSig > maxSignal:
		return fmt.Errorf("pdeathsig %d is not a signal", s.PDeathSig)
	case s.Dumpable < 0 || s.Dumpable > dumpableMax:
		return fmt.Errorf("dumpable %d out of range", s.Dumpable)
	case s.SeccompMode != 0 && s.SeccompMode != SeccompModeFilter:
		return fmt.Errorf("seccomp mode %d cannot be restored", s.SeccompMode)
	case s.SeccompMode == 0 && len(s.Filters) > 0:
		return fmt.Errorf("seccomp mode 0 with %d filters", len(s.Filters))
	case s.SeccompMode == SeccompModeFilter && len(s.Filters) == 0:
		return fmt.Errorf("seccomp mode 2 without filters")
	}
	total := 0
	for i, f := range s.Filters {
		n := len(f.Prog) / SockFilterSize
		if total += n + 4; total > maxInsnsPerPath {
			return fmt.Errorf("seccomp filters 0..%d: more than the kernel's %d instructions a stack", i, maxInsnsPerPath)
		}
		if len(f.Prog)%SockFilterSize != 0 || n == 0 || n > BPFMaxInsns {
			return fmt.Errorf("seccomp filter %d: %d bytes is not 1..%d instructions", i, len(f.Prog), BPFMaxInsns)
		}
		if f.Flags&^SeccompFlagLog != 0 {
			return fmt.Errorf("seccomp filter %d: flags %#x", i, f.Flags)
		}
	}
	return nil
}

// renderSecurity writes the security file and the seccomp filters of one
// thread into d (a task's or a thread's directory).
func renderSecurity(d *Dir, s *Security) {
	if s == nil {
		return
	}
	var k kv
	k.add("personality", "%#x", s.Personality)
	k.add("cap_inheritable", "%#x", s.CapInh)
	k.add("cap_permitted", "%#x", s.CapPrm)
	k.add("cap_effective", "%#x", s.CapEff)
	k.add("cap_bounding", "%#x", s.CapBnd)
	k.add("cap_ambient", "%#x", s.CapAmb)
	k.add("securebits", "%#x", s.SecureBits)
	k.add("no_new_privs", "%d", boolInt(s.NoNewPrivs))
	k.add("pdeathsig", "%d", s.PDeathSig)
	k.add("dumpable", "%d", s.Dumpable)
	k.add("seccomp", "%d", s.SeccompMode)
	k.add(seccompFiltersKey, "%d", len(s.Filters))
	if len(s.Filters) > 0 {
		flags := make([]string, len(s.Filters))
		for i, f := range s.Filters {
			flags[i] = hexs(f.Flags)
		}
		k.add(seccompFlagsKey, "%s", strings.Join(flags, " "))
		fd := &Dir{}
		for i, f := range s.Filters {
			fd.Add(strconv.Itoa(i), Bytes(f.Prog))
		}
		d.Add(seccompDir, fd)
	}
	d.Add(securityFile, k.bytes())
}

// withThreadSecurity adds a thread's security files to its directory d
// only where its state differs from its task's (the main thread's).
func withThreadSecurity(d *Dir, t *Task, th *Thread) *Dir {
	if th.Security != nil && !th.Security.Equal(t.Security) {
		renderSecurity(d, th.Security)
	}
	return d
}

// loadSecurity reads the security file of directory rel (a task's or a
// thread's) and its seccomp filters; nil if there is none (a tree made
// before these were recorded, or a thread like its task).
func (l *loader) loadSecurity(rel string) *Security {
	// Through the tree's reader, not the file system: a rendered tree
	// (LoadRendered) is not read from its mount at all.
	if t, err := l.root.lstat(filepath.Join(rel, securityFile)); err != nil || t == 0 {
		return nil
	}
	k := l.kv(filepath.Join(rel, securityFile))
	s := &Security{
		Personality: k.u64("personality"),
		CapInh:      k.u64("cap_inheritable"),
		CapPrm:      k.u64("cap_permitted"),
		CapEff:      k.u64("cap_effective"),
		CapBnd:      k.u64("cap_bounding"),
		CapAmb:      k.u64("cap_ambient"),
		SecureBits:  k.u64("securebits"),
		PDeathSig:   k.int("pdeathsig"),
		Dumpable:    k.int("dumpable"),
		SeccompMode: k.int("seccomp"),
	}
	switch nnp := k.int("no_new_privs"); nnp {
	case 0, 1:
		s.NoNewPrivs = nnp == 1
	default:
		k.fail("no_new_privs: %d is not 0 or 1", nnp)
	}
	n := k.int(seccompFiltersKey)
	if n < 0 || n > BPFMaxInsns { // the kernel's limit on a stack is lower still
		k.fail("%s: %d out of range", seccompFiltersKey, n)
		n = 0
	}
	var flags []string
	if n > 0 {
		flags = strings.Fields(k.str(seccompFlagsKey))
		if len(flags) != n && k.err == nil {
			k.fail("%s: %d values for %d filters", seccompFlagsKey, len(flags), n)
		}
	}
	for i := 0; i < n && k.err == nil; i++ {
		fl, err := strconv.ParseUint(flags[i], 0, 64)
		if err != nil {
			k.fail("%s: bad number %q", seccompFlagsKey, flags[i])
			break
		}
		prog := l.read(filepath.Join(rel, seccompDir, strconv.Itoa(i)))
		s.Filters = append(s.Filters, SeccompFilter{Flags: fl, Prog: prog})
	}
	if k.err == nil {
		if err := s.Validate(); err != nil {
			k.fail("%v", err)
		}
	}
	l.done(k)
	if n > 0 && l.err == nil {
		if got := len(l.list(filepath.Join(rel, seccompDir))); got != n {
			l.fail(fmt.Errorf("checkpoint dir %s: %d filters, %s says %d",
				filepath.Join(l.dir, rel, seccompDir), got, securityFile, n))
		}
	}
	return s
}

// loadThreadSecurity reads a thread's own security file; a thread without
// one has its task's state (nil).
func (l *loader) loadThreadSecurity(t *Task, th *Thread, rel string) {
	th.Security = l.loadSecurity(rel)
	if th.Security != nil && t.Security == nil {
		l.fail(fmt.Errorf("checkpoint file %s: a thread's security without its process'", filepath.Join(l.dir, rel, securityFile)))
	} else if th.Security != nil && th.Security.Dumpable != t.Security.Dumpable {
		l.fail(fmt.Errorf("checkpoint file %s: dumpable %d differs from the process' %d (it is per process)",
			filepath.Join(l.dir, rel, securityFile), th.Security.Dumpable, t.Security.Dumpable))
	}
}

// ThreadSecurity returns the security state of thread i of t: its own, or
// the task's (nil if the tree recorded none).
func (t *Task) ThreadSecurity(i int) *Security {
	if i < len(t.Threads) && t.Threads[i].Security != nil {
		return t.Threads[i].Security
	}
	return t.Security
}
