package image

import (
	"fmt"
	"math"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Load reads a checkpoint tree (a mount's <id> directory or a copy of one)
// into the model. VMA.Pages is left empty: memory is read from each vma's
// pages file (PagesPath, opened with OpenTreeFile). Errors name the file
// (and line) that is missing, garbled or out of range. No file of the tree
// is followed through a symlink or opened if it is not a regular file.
func Load(dir string) (*Checkpoint, error) {
	root, err := openTreeRoot(dir)
	if err != nil {
		return nil, err
	}
	defer root.close()
	l := loader{dir: dir, root: root}
	c := l.checkpoint()
	if l.err != nil {
		return nil, l.err
	}
	return c, nil
}

// PagesPath is the pages file of vma v of task pid in checkpoint dir.
func PagesPath(dir string, pid int, v *VMA) string {
	return filepath.Join(dir, "tasks", strconv.Itoa(pid), "vmas", v.DirName(), "pages")
}

type loader struct {
	dir     string
	root    treeReader
	version int // tree format, from info
	err     error
}

func (l *loader) fail(err error) {
	if l.err == nil && err != nil {
		l.err = err
	}
}

func (l *loader) read(rel string) []byte {
	b, err := l.root.readFile(rel)
	l.fail(err)
	return b
}

func (l *loader) kv(rel string) *kvFile {
	f := parseKVAt(l.dir, rel, l.read(rel))
	f.version = l.version
	return f
}

// done reports the first error of f, after checking its keys: a typed file
// has no key twice and (format 2) no key Load does not know.
func (l *loader) done(f *kvFile) {
	f.checkKeys()
	if f.err != nil {
		l.fail(fmt.Errorf("checkpoint file %w", f.err))
	}
}

func (l *loader) link(rel string) string {
	s, err := l.root.readlink(rel)
	l.fail(err)
	return s
}

// exists says whether rel exists (not followed if a symlink).
func (l *loader) exists(rel string) bool {
	t, err := l.root.lstat(rel)
	l.fail(err)
	return t != 0
}

func (l *loader) list(rel string) []string {
	names, err := l.root.readDir(rel)
	l.fail(err)
	return names
}

func (l *loader) checkpoint() *Checkpoint {
	info := l.kv("info")
	l.version = formatLegacy
	if v, ok := info.get("format"); ok {
		n, err := strconv.Atoi(v)
		switch {
		case err != nil || n < 1:
			info.failKey("format", "bad tree format %.20q", v)
		case n > FormatVersion:
			l.fail(fmt.Errorf("checkpoint %s: tree format %d is newer than this ckptfs reads (%d); upgrade ckptfs", l.dir, n, FormatVersion))
			return nil
		default:
			l.version = n
		}
	}
	info.version = l.version
	c := &Checkpoint{
		ID:      info.text("id"),
		Name:    info.textOpt("name"),
		Host:    info.textOpt("host"),
		Kernel:  info.textOpt("kernel"),
		RootPID: info.intRange("root_pid", 1, maxPID),
	}
	if ts := info.opt("time"); ts != "" {
		t, err := time.Parse(time.RFC3339Nano, ts)
		if err != nil {
			info.failKey("time", "%v", err)
		}
		c.Time = t
	}
	c.Stats = Stats{
		PagesTotal: info.i64Range("pages_total", 0, math.MaxInt64),
		PagesZero:  info.i64Range("pages_zero", 0, math.MaxInt64),
		PagesNew:   info.i64Range("pages_new", 0, math.MaxInt64),
		BytesAdded: info.i64Range("bytes_added", 0, math.MaxInt64),
	}
	ntasks := -1
	if info.has("tasks") || !info.legacy() {
		ntasks = info.intRange("tasks", 1, maxPID)
	}
	if info.has("memory_bytes") || !info.legacy() {
		info.i64Range("memory_bytes", 0, math.MaxInt64) // derived: Render counts it again
	}
	l.done(info)
	if l.err != nil {
		return nil
	}
	if c.Tasks = l.tasks(); l.err != nil {
		return nil
	}
	if ntasks >= 0 && len(c.Tasks) != ntasks {
		l.fail(fmt.Errorf("checkpoint file %s: tasks: %d, but tasks/ holds %d", filepath.Join(l.dir, "info"), ntasks, len(c.Tasks)))
		return nil
	}
	if c.Task(c.RootPID) == nil {
		l.fail(fmt.Errorf("checkpoint %s: root task %d missing under tasks/", l.dir, c.RootPID))
		return nil
	}
	sorted := sortTasks(c.Tasks, c.RootPID)
	if len(sorted) != len(c.Tasks) {
		l.fail(fmt.Errorf("checkpoint %s: %s", l.dir, unreachableTask(c.Tasks, sorted)))
		return nil
	}
	c.Tasks = sorted
	if l.exists("objects") {
		for _, id := range l.list("objects") {
			c.Objects = append(c.Objects, l.object(id))
		}
	}
	if l.err == nil {
		l.fail(checkReferences(l.dir, c))
	}
	return c
}

// maxAuxv bounds auxv: the kernel keeps fewer than 64 (type, value) pairs
// (mm->saved_auxv); a page is ample.
const maxAuxv = 4096

// maxPID is the kernel's PID_MAX_LIMIT (4 Mi).
const maxPID = 1 << 22

// loadParallel is how many tasks are read at once: through a FUSE mount
// each small file costs a few round trips, which overlap.
const loadParallel = 16

// tasks reads every task under tasks/, several at once; the first error
// in pid order is the one reported.
func (l *loader) tasks() []*Task {
	var pids []int
	for _, name := range l.list("tasks") {
		pid, err := parseNumber(name, 1, maxPID)
		if err != nil {
			if l.version == formatLegacy {
				continue
			}
			l.fail(fmt.Errorf("checkpoint dir %s: entry %q: %v", filepath.Join(l.dir, "tasks"), name, err))
			return nil
		}
		pids = append(pids, pid)
	}
	sort.Ints(pids)
	tasks := make([]*Task, len(pids))
	errs := make([]error, len(pids))
	sem := make(chan struct{}, loadParallel)
	var wg sync.WaitGroup
	for i, pid := range pids {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			tl := loader{dir: l.dir, root: l.root, version: l.version}
			tasks[i], errs[i] = tl.task(pid), tl.err
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			l.fail(err)
			return nil
		}
	}
	return tasks
}

// parseNumber parses a decimal directory name in [lo, hi]: no sign, no
// leading zeros, so that each number has one name.
func parseNumber(s string, lo, hi int) (int, error) {
	v, err := strconv.Atoi(s)
	if err != nil || s != strconv.Itoa(v) {
		return 0, fmt.Errorf("not a decimal number")
	}
	if v < lo || v > hi {
		return 0, fmt.Errorf("%d is out of range [%d, %d]", v, lo, hi)
	}
	return v, nil
}

// taskStates are the states of /proc/<pid>/stat a dumped task can have.
const taskStates = "RSDTtZXIWPK"

func (l *loader) task(pid int) *Task {
	base := filepath.Join("tasks", strconv.Itoa(pid))
	p := func(name string) string { return filepath.Join(base, name) }
	st := l.kv(p("status"))
	t := &Task{
		PID:   pid,
		PPID:  st.intRange("PPid", 0, maxPID),
		PGID:  st.intRange("Pgid", 0, maxPID),
		SID:   st.intRange("Sid", 0, maxPID),
		Comm:  st.text("Name"),
		State: st.str("State"),
	}
	if len(t.State) != 1 || !strings.Contains(taskStates, t.State) {
		st.failKey("State", "bad state %.20q", t.State)
	}
	if st.has("TtyNr") || !st.legacy() {
		t.TTYNr = st.u64Max("TtyNr", math.MaxUint32)
	}
	if st.has("FilesOf") {
		t.FilesOf = st.intRange("FilesOf", 1, maxPID)
	}
	if st.has("Tpgid") || !st.legacy() {
		t.TPGID = st.intRange("Tpgid", -1, maxPID)
	} else {
		t.TPGID = -1
	}
	if t.State == "Z" {
		t.ExitCode = st.intRange("ExitCode", 0, math.MaxUint16)
	}
	if got := st.int("Pid"); got != pid && st.err == nil {
		st.failKey("Pid", "%d does not match directory %d", got, pid)
	}
	if st.has("NSpid") { // pidns.go
		ids, err := parseNSpid(st.str("NSpid"), pid)
		if err != nil && st.err == nil {
			st.failKey("NSpid", "%v", err)
		}
		t.NSpid = ids
	}
	for _, ids := range []struct {
		key string
		dst []int
	}{{"Uid", t.Creds.UID[:]}, {"Gid", t.Creds.GID[:]}} {
		v := st.idsRange(ids.key)
		if len(v) != len(ids.dst) && st.err == nil {
			st.failKey(ids.key, "want %d ids (real effective saved fs), got %d", len(ids.dst), len(v))
		}
		copy(ids.dst, v)
	}
	t.Creds.Groups = st.idsRange("Groups")
	um, err := strconv.ParseUint(st.str("Umask"), 8, 32)
	if (err != nil || um > 0o777) && st.err == nil {
		st.failKey("Umask", "bad umask %.20q", st.opt("Umask"))
	}
	t.Umask = uint32(um)
	nthreads := -1
	if st.has("Threads") || !st.legacy() {
		nthreads = st.intRange("Threads", 0, maxPID) // derived: checked against threads/
	}
	// Free-text paths: from format 2 the quoted status fields are what
	// Load reads; the exe, cwd, root symlinks are for people and tools and
	// must agree with them. Format 1 had only the symlinks.
	paths := []struct {
		key, name string
		dst       *string
	}{{"Exe", "exe", &t.Exe}, {"Cwd", "cwd", &t.Cwd}, {"Root", "root", &t.Root}}
	for _, f := range paths {
		if !st.legacy() {
			*f.dst = st.textOpt(f.key)
		}
	}
	l.done(st)
	if l.err != nil {
		return nil
	}
	t.Cmdline = l.read(p("cmdline"))
	t.Environ = l.read(p("environ"))
	t.Auxv = l.read(p("auxv"))
	if len(t.Auxv)%16 != 0 || len(t.Auxv) > maxAuxv {
		l.fail(fmt.Errorf("checkpoint file %s: %d bytes, not whole (type, value) pairs of at most %d bytes", filepath.Join(l.dir, p("auxv")), len(t.Auxv), maxAuxv))
	}
	for _, f := range paths {
		if !l.exists(p(f.name)) {
			if t.State != "Z" && l.err == nil {
				l.fail(fmt.Errorf("checkpoint file %s: missing", filepath.Join(l.dir, p(f.name))))
			}
			continue // a zombie has none
		}
		target := l.link(p(f.name))
		switch {
		case l.version == formatLegacy:
			*f.dst = target
		case target != *f.dst && l.err == nil:
			l.fail(fmt.Errorf("checkpoint file %s: symlink to %q, but status says %s: %q", filepath.Join(l.dir, p(f.name)), target, f.key, *f.dst))
		}
	}
	mm := l.kv(p("mm"))
	for _, f := range mmFields(&t.MM) {
		*f.p = mm.u64Max(f.name, userEnd)
	}
	l.done(mm)
	lim, err := ParseLimits(l.read(p("limits")))
	if err != nil {
		l.fail(fmt.Errorf("checkpoint file %s: %w", filepath.Join(l.dir, p("limits")), err))
	}
	t.Limits = lim
	sa, err := parseSigactions(filepath.Join(l.dir, p("sigactions")), l.read(p("sigactions")))
	l.fail(err)
	t.Sigactions = sa
	sp, err := unpackSiginfo(filepath.Join(l.dir, p("sigpending")), l.read(p("sigpending")))
	l.fail(err)
	t.SharedPending = sp
	t.Security = l.loadSecurity(base)
	if l.err != nil {
		return nil
	}
	for _, tid := range l.numbers(p("threads"), 1, maxPID) {
		t.Threads = append(t.Threads, l.thread(filepath.Join(base, "threads", strconv.Itoa(tid)), tid))
		l.loadThreadSecurity(t, t.Threads[len(t.Threads)-1], filepath.Join(base, "threads", strconv.Itoa(tid)))
	}
	sort.SliceStable(t.Threads, func(i, j int) bool { return t.Threads[i].TID == pid && t.Threads[j].TID != pid })
	if err := checkNSpid(t); err != nil && l.err == nil { // pidns.go
		l.fail(fmt.Errorf("checkpoint dir %s: %w", filepath.Join(l.dir, base), err))
	}
	if t.FilesOf == 0 { // else fds and fdinfo link to the owner's table
		for _, n := range l.numbers(p("fdinfo"), 0, math.MaxInt32) {
			t.FDs = append(t.FDs, l.fd(filepath.Join(base, "fdinfo", strconv.Itoa(n)), n))
		}
	}
	for _, name := range l.list(p("vmas")) {
		t.VMAs = append(t.VMAs, l.vma(filepath.Join(base, "vmas", name)))
	}
	if l.err != nil {
		return nil
	}
	sort.Slice(t.VMAs, func(i, j int) bool { return t.VMAs[i].Start < t.VMAs[j].Start })
	for i := 1; i < len(t.VMAs); i++ {
		if a, b := t.VMAs[i-1], t.VMAs[i]; b.Start < a.End {
			l.fail(fmt.Errorf("checkpoint dir %s: vmas %s and %s overlap", filepath.Join(l.dir, p("vmas")), a.DirName(), b.DirName()))
		}
	}
	if t.State != "Z" && l.err == nil {
		if len(t.Threads) == 0 {
			l.fail(fmt.Errorf("checkpoint dir %s: no threads", filepath.Join(l.dir, p("threads"))))
		} else if t.Threads[0].TID != pid {
			l.fail(fmt.Errorf("checkpoint dir %s: no main thread %d", filepath.Join(l.dir, p("threads")), pid))
		} else if nthreads >= 0 && nthreads != len(t.Threads) {
			l.fail(fmt.Errorf("checkpoint file %s: Threads: %d, but threads/ holds %d", filepath.Join(l.dir, p("status")), nthreads, len(t.Threads)))
		}
	}
	return t
}

// numbers lists the numeric entries of a directory in [lo, hi], ascending.
func (l *loader) numbers(rel string, lo, hi int) []int {
	var out []int
	for _, n := range l.list(rel) {
		v, err := parseNumber(n, lo, hi)
		if err != nil {
			l.fail(fmt.Errorf("checkpoint dir %s: unexpected entry %q: %v", filepath.Join(l.dir, rel), n, err))
			continue
		}
		out = append(out, v)
	}
	sort.Ints(out)
	return out
}

func (l *loader) thread(rel string, tid int) *Thread {
	th := &Thread{TID: tid}
	th.Comm = strings.TrimSuffix(string(l.read(filepath.Join(rel, "comm"))), "\n")
	regs := l.kv(filepath.Join(rel, "regs"))
	for _, f := range regFields {
		*f.ptr(&th.Regs) = regs.u64(f.name)
	}
	l.done(regs)
	th.InSyscall = InterruptedSyscall(&th.Regs)
	th.XState = l.read(filepath.Join(rel, "xstate"))
	mask := strings.TrimSpace(string(l.read(filepath.Join(rel, "sigmask"))))
	m, err := strconv.ParseUint(mask, 0, 64)
	if err != nil && l.err == nil {
		l.fail(fmt.Errorf("checkpoint file %s: bad mask %.40q", filepath.Join(l.dir, rel, "sigmask"), mask))
	}
	th.SigMask = m
	sp, err := unpackSiginfo(filepath.Join(l.dir, rel, "sigpending"), l.read(filepath.Join(rel, "sigpending")))
	l.fail(err)
	th.Pending = sp
	if l.exists(filepath.Join(rel, "nspid")) { // pidns.go
		ids, err := parseNSpid(string(l.read(filepath.Join(rel, "nspid"))), tid)
		if err != nil {
			l.fail(fmt.Errorf("checkpoint file %s: %w", filepath.Join(l.dir, rel, "nspid"), err))
		}
		th.NSpid = ids
	}
	if l.exists(filepath.Join(rel, "rseq")) {
		r := l.kv(filepath.Join(rel, "rseq"))
		th.Rseq = &Rseq{Addr: r.u64Max("addr", userEnd), Len: uint32(r.u64Max("len", math.MaxUint32)),
			Sig: uint32(r.u64Max("sig", math.MaxUint32)), Flags: uint32(r.u64Max("flags", math.MaxUint32))}
		l.done(r)
	}
	if l.exists(filepath.Join(rel, "extras")) {
		k := l.kv(filepath.Join(rel, "extras"))
		th.Extras = &Extras{}
		for _, f := range extrasFields(th.Extras) {
			*f.p = k.u64(f.name)
		}
		l.done(k)
	}
	return th
}

// fdinfo keys Render writes itself; the other lines are the kind's
// (kinds.go), kept in Extra.
var fdKeys = map[string]bool{"kind": true, "path": true, "flags": true, "pos": true, "size": true,
	"deleted": true, "cloexec": true, "object": true, "ofd": true}

func (l *loader) fd(rel string, n int) *FD {
	b := l.read(rel)
	k := parseKVAt(l.dir, rel, b)
	k.version = l.version
	f := &FD{Num: n, Kind: k.str("kind"), Path: k.text("path"),
		Pos: k.i64Range("pos", 0, math.MaxInt64), Size: k.i64Range("size", 0, math.MaxInt64)}
	if _, ok := fdSchemas[f.Kind]; !ok && k.err == nil {
		k.failKey("kind", "unknown fd kind %.40q", f.Kind)
	}
	fl, err := strconv.ParseUint(k.str("flags"), 8, 32)
	if err != nil && k.err == nil {
		k.failKey("flags", "bad octal flags %.20q", k.opt("flags"))
	}
	f.Flags = uint32(fl)
	f.Deleted = k.boolOpt("deleted")
	if c := k.boolOpt("cloexec"); c != f.Cloexec() && !k.legacy() && k.err == nil {
		k.failKey("cloexec", "%v disagrees with flags %#o", c, f.Flags)
	}
	f.Object = k.opt("object")
	f.OFD = k.opt("ofd")
	for _, id := range []struct{ key, v string }{{"object", f.Object}, {"ofd", f.OFD}} {
		if err := checkID(id.v); id.v != "" && err != nil && k.err == nil {
			k.failKey(id.key, "%v", err)
		}
	}
	if k.has("ino") { // the kernel's own fdinfo line, kept in Extra
		f.Ino = k.u64("ino")
	}
	// Only Render's keys are typed: the kernel's lines may repeat (tfd:).
	for _, d := range k.dup {
		if fdKeys[d.v] || d.v == "ino" {
			k.failLine(d.line, "duplicate key %q (first on line %d)", d.v, k.line(d.v))
		}
	}
	if k.err != nil {
		l.fail(fmt.Errorf("checkpoint file %w", k.err))
		return f
	}
	for line := range strings.Lines(string(b)) {
		line = strings.TrimSuffix(line, "\n")
		key, _, _ := strings.Cut(line, ":")
		if strings.TrimSpace(line) != "" && !fdKeys[strings.TrimSpace(key)] {
			f.Extra = append(f.Extra, line)
		}
	}
	if l.version == formatLegacy {
		f.Extra = legacyInotifyLines(f.Extra)
	}
	// The kind's own lines, by its schema: strictly from format 3; an
	// older tree's kernel lines are read and rendered typed.
	extra, err := canonFD(f, l.version >= formatKinds)
	if err != nil {
		l.fail(fmt.Errorf("checkpoint file %s: %w", filepath.Join(l.dir, rel), err))
		return f
	}
	f.Extra = extra
	return f
}

// boolOpt reads an optional 0/1 flag.
func (f *kvFile) boolOpt(key string) bool {
	switch v := f.opt(key); v {
	case "", "0":
		return false
	case "1":
		return true
	default:
		f.failKey(key, "want 0 or 1, got %.20q", v)
		return false
	}
}

// vmaKinds are the values of a vma's kind.
var vmaKinds = map[string]bool{VMAAnon: true, VMAFile: true, VMAHeap: true, VMAStack: true,
	VMAVdso: true, VMAVvar: true, VMAVsyscall: true, VMAShmem: true}

func (l *loader) vma(rel string) *VMA {
	k := l.kv(filepath.Join(rel, "info"))
	v := &VMA{
		Start:    k.u64("start"),
		End:      k.u64("end"),
		Perms:    k.str("perms"),
		Offset:   k.u64("offset"),
		Dev:      k.str("dev"),
		Inode:    k.u64("inode"),
		Name:     k.textOpt("name"),
		Kind:     k.str("kind"),
		FileSize: k.i64Range("file_size", 0, math.MaxInt64),
		Flags:    strings.Fields(k.opt("vmflags")),
	}
	if k.has("pages_saved") || !k.legacy() {
		k.i64Range("pages_saved", 0, math.MaxInt64) // derived from pages
	}
	if k.err == nil {
		if err := checkVMA(v); err != nil {
			k.fail("%v", err)
		}
	}
	if k.err == nil && v.DirName() != filepath.Base(rel) {
		k.fail("range %s does not match directory %s", v.DirName(), filepath.Base(rel))
	}
	l.done(k)
	if l.err == nil {
		pages := filepath.Join(rel, "pages")
		t, err := l.root.lstat(pages)
		l.fail(err)
		if err == nil && t != unix.S_IFREG {
			l.fail(fmt.Errorf("checkpoint file %s is %s, not a regular file", filepath.Join(l.dir, pages), fileTypeOrMissing(t)))
		}
	}
	return v
}

func fileTypeOrMissing(t uint32) string {
	if t == 0 {
		return "missing"
	}
	return fileType(t)
}

func (l *loader) object(id string) *Object {
	rel := filepath.Join("objects", id)
	if err := checkID(id); err != nil {
		l.fail(fmt.Errorf("checkpoint dir %s: entry %q: %v", filepath.Join(l.dir, "objects"), id, err))
		return &Object{ID: id}
	}
	path := filepath.Join(l.dir, rel, "info")
	b := l.read(filepath.Join(rel, "info"))
	k := parseKV(path, b)
	k.version = l.version
	o := &Object{ID: id, Kind: k.str("kind")}
	// Only "msg" (one line per queued message) may repeat.
	for _, d := range k.dup {
		if d.v != "msg" {
			k.failLine(d.line, "duplicate key %q (first on line %d)", d.v, k.line(d.v))
		}
	}
	if k.err != nil {
		l.fail(fmt.Errorf("checkpoint file %w", k.err))
		return o
	}
	n := 0
	for line := range strings.Lines(string(b)) {
		n++
		line = strings.TrimSuffix(line, "\n")
		key, v, _ := strings.Cut(line, ":")
		key, v = strings.TrimSpace(key), strings.TrimSpace(v)
		if strings.TrimSpace(line) == "" || key == "kind" {
			continue
		}
		switch {
		case l.version == formatLegacy:
			line = legacyObjectLine(o.Kind, key, v, line)
		case objectTextKey(o.Kind, key):
			if _, err := UnquoteText(v); err != nil {
				l.fail(fmt.Errorf("checkpoint file %s:%d: %s: %v", path, n, key, err))
			}
		}
		o.Info = append(o.Info, line)
	}
	o.Data = l.read(filepath.Join(rel, "data"))
	if l.err != nil {
		return o
	}
	schema, ok := objectSchemas[o.Kind]
	if !ok {
		if l.version >= formatKinds {
			l.fail(fmt.Errorf("checkpoint file %s: unknown object kind %.40q", path, o.Kind))
		}
		return o
	}
	info, err := schema.parse(o, l.version >= formatKinds)
	if err != nil {
		l.fail(fmt.Errorf("checkpoint file %s: %w", path, err))
		return o
	}
	o.Info = info
	return o
}
