package image

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Load reads a checkpoint tree (a mount's <id> directory or a copy of one)
// into the model. VMA.Pages is left empty: memory is read from each vma's
// pages file (PagesPath). Errors name the file that is missing or garbled.
func Load(dir string) (*Checkpoint, error) {
	l := loader{dir: dir}
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
	dir string
	err error
}

func (l *loader) fail(err error) {
	if l.err == nil {
		l.err = err
	}
}

func (l *loader) read(rel string) []byte {
	b, err := os.ReadFile(filepath.Join(l.dir, rel))
	if err != nil {
		l.fail(fmt.Errorf("checkpoint file %s: %w", filepath.Join(l.dir, rel), err))
	}
	return b
}

func (l *loader) kv(rel string) *kvFile {
	return parseKV(filepath.Join(l.dir, rel), l.read(rel))
}

func (l *loader) done(f *kvFile) {
	if f.err != nil {
		l.fail(fmt.Errorf("checkpoint file %w", f.err))
	}
}

func (l *loader) link(rel string) string {
	s, err := os.Readlink(filepath.Join(l.dir, rel))
	if err != nil {
		l.fail(fmt.Errorf("checkpoint file %s: %w", filepath.Join(l.dir, rel), err))
	}
	return s
}

func (l *loader) list(rel string) []string {
	ents, err := os.ReadDir(filepath.Join(l.dir, rel))
	if err != nil {
		l.fail(fmt.Errorf("checkpoint dir %s: %w", filepath.Join(l.dir, rel), err))
		return nil
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func (l *loader) checkpoint() *Checkpoint {
	info := l.kv("info")
	c := &Checkpoint{
		ID:      info.str("id"),
		Name:    info.opt("name"),
		Host:    info.opt("host"),
		Kernel:  info.opt("kernel"),
		RootPID: info.int("root_pid"),
	}
	if ts := info.opt("time"); ts != "" {
		t, err := time.Parse(time.RFC3339Nano, ts)
		if err != nil {
			info.fail("time: %v", err)
		}
		c.Time = t
	}
	c.Stats = Stats{
		PagesTotal: info.i64("pages_total"),
		PagesZero:  info.i64("pages_zero"),
		PagesNew:   info.i64("pages_new"),
		BytesAdded: info.i64("bytes_added"),
	}
	l.done(info)
	if l.err != nil {
		return nil
	}
	if c.Tasks = l.tasks(); l.err != nil {
		return nil
	}
	c.Tasks = sortTasks(c.Tasks, c.RootPID)
	if _, err := os.Stat(filepath.Join(l.dir, "objects")); err == nil {
		for _, id := range l.list("objects") {
			c.Objects = append(c.Objects, l.object(id))
		}
	}
	if c.Task(c.RootPID) == nil {
		l.fail(fmt.Errorf("checkpoint %s: root task %d missing under tasks/", l.dir, c.RootPID))
	}
	return c
}

// loadParallel is how many tasks are read at once: through a FUSE mount
// each small file costs a few round trips, which overlap.
const loadParallel = 16

// tasks reads every task under tasks/, several at once; the first error
// in directory order is the one reported.
func (l *loader) tasks() []*Task {
	var pids []int
	for _, name := range l.list("tasks") {
		if pid, err := strconv.Atoi(name); err == nil {
			pids = append(pids, pid)
		}
	}
	tasks := make([]*Task, len(pids))
	errs := make([]error, len(pids))
	sem := make(chan struct{}, loadParallel)
	var wg sync.WaitGroup
	for i, pid := range pids {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			tl := loader{dir: l.dir}
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

func (l *loader) task(pid int) *Task {
	base := filepath.Join("tasks", strconv.Itoa(pid))
	p := func(name string) string { return filepath.Join(base, name) }
	st := l.kv(p("status"))
	t := &Task{
		PID:   pid,
		PPID:  st.int("PPid"),
		PGID:  st.int("Pgid"),
		SID:   st.int("Sid"),
		Comm:  st.str("Name"),
		State: st.str("State"),
	}
	t.TTYNr, _ = strconv.ParseUint(st.opt("TtyNr"), 10, 64) // absent: no terminal
	if v := st.opt("FilesOf"); v != "" {
		t.FilesOf = st.int("FilesOf")
	}
	if v := st.opt("Tpgid"); v != "" {
		t.TPGID, _ = strconv.Atoi(v)
	} else {
		t.TPGID = -1
	}
	if t.State == "Z" {
		t.ExitCode = st.int("ExitCode")
	}
	if got := st.int("Pid"); got != pid && st.err == nil {
		st.fail("Pid %d does not match directory %d", got, pid)
	}
	copy(t.Creds.UID[:], st.ints("Uid"))
	copy(t.Creds.GID[:], st.ints("Gid"))
	t.Creds.Groups = st.ints("Groups")
	um, err := strconv.ParseUint(st.str("Umask"), 8, 32)
	if err != nil {
		st.fail("Umask: %v", err)
	}
	t.Umask = uint32(um)
	l.done(st)
	t.Cmdline = l.read(p("cmdline"))
	t.Environ = l.read(p("environ"))
	t.Auxv = l.read(p("auxv"))
	for _, f := range []struct {
		name string
		dst  *string
	}{{"exe", &t.Exe}, {"cwd", &t.Cwd}, {"root", &t.Root}} {
		if _, err := os.Lstat(filepath.Join(l.dir, p(f.name))); err == nil || t.State != "Z" {
			*f.dst = l.link(p(f.name)) // a zombie has none
		}
	}
	mm := l.kv(p("mm"))
	for _, f := range mmFields(&t.MM) {
		*f.p = mm.u64(f.name)
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
	for _, tid := range l.numbers(p("threads")) {
		t.Threads = append(t.Threads, l.thread(filepath.Join(base, "threads", strconv.Itoa(tid)), tid))
		l.loadThreadSecurity(t, t.Threads[len(t.Threads)-1], filepath.Join(base, "threads", strconv.Itoa(tid)))
	}
	sort.SliceStable(t.Threads, func(i, j int) bool { return t.Threads[i].TID == pid && t.Threads[j].TID != pid })
	for _, n := range l.numbers(p("fdinfo")) {
		if t.FilesOf != 0 {
			break // fdinfo links to the owner's table
		}
		t.FDs = append(t.FDs, l.fd(filepath.Join(base, "fdinfo", strconv.Itoa(n)), n))
	}
	for _, name := range l.list(p("vmas")) {
		t.VMAs = append(t.VMAs, l.vma(filepath.Join(base, "vmas", name)))
	}
	sort.Slice(t.VMAs, func(i, j int) bool {
		return t.VMAs[i] != nil && t.VMAs[j] != nil && t.VMAs[i].Start < t.VMAs[j].Start
	})
	if len(t.Threads) == 0 && l.err == nil && t.State != "Z" {
		l.fail(fmt.Errorf("checkpoint dir %s: no threads", filepath.Join(l.dir, p("threads"))))
	}
	return t
}

// numbers lists the numeric entries of a directory, ascending.
func (l *loader) numbers(rel string) []int {
	var out []int
	for _, n := range l.list(rel) {
		v, err := strconv.Atoi(n)
		if err != nil {
			l.fail(fmt.Errorf("checkpoint dir %s: unexpected entry %q", filepath.Join(l.dir, rel), n))
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
	if err != nil {
		l.fail(fmt.Errorf("checkpoint file %s: bad mask %q", filepath.Join(l.dir, rel, "sigmask"), mask))
	}
	th.SigMask = m
	sp, err := unpackSiginfo(filepath.Join(l.dir, rel, "sigpending"), l.read(filepath.Join(rel, "sigpending")))
	l.fail(err)
	th.Pending = sp
	if _, err := os.Lstat(filepath.Join(l.dir, rel, "rseq")); err == nil {
		r := l.kv(filepath.Join(rel, "rseq"))
		th.Rseq = &Rseq{Addr: r.u64("addr"), Len: uint32(r.u64("len")), Sig: uint32(r.u64("sig")), Flags: uint32(r.u64("flags"))}
		l.done(r)
	}
	if _, err := os.Lstat(filepath.Join(l.dir, rel, "extras")); err == nil {
		k := l.kv(filepath.Join(rel, "extras"))
		th.Extras = &Extras{}
		for _, f := range extrasFields(th.Extras) {
			*f.p = k.u64(f.name)
		}
		l.done(k)
	}
	return th
}

// fdinfo keys Render writes itself; other lines are kept verbatim in Extra.
var fdKeys = map[string]bool{"kind": true, "path": true, "flags": true, "pos": true, "size": true,
	"deleted": true, "cloexec": true, "object": true, "ofd": true}

func (l *loader) fd(rel string, n int) *FD {
	b := l.read(rel)
	k := parseKV(filepath.Join(l.dir, rel), b)
	f := &FD{Num: n, Kind: k.str("kind"), Path: k.str("path"), Pos: k.i64("pos"), Size: k.i64("size")}
	fl, err := strconv.ParseUint(k.str("flags"), 8, 32)
	if err != nil {
		k.fail("flags: %v", err)
	}
	f.Flags = uint32(fl)
	f.Deleted = k.opt("deleted") == "1"
	f.Object = k.opt("object")
	f.OFD = k.opt("ofd")
	if k.opt("ino") != "" { // the kernel's own fdinfo line, kept in Extra
		f.Ino = k.u64("ino")
	}
	l.done(k)
	for _, line := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
		key, _, _ := strings.Cut(line, ":")
		if line != "" && !fdKeys[strings.TrimSpace(key)] {
			f.Extra = append(f.Extra, line)
		}
	}
	return f
}

func (l *loader) vma(rel string) *VMA {
	k := l.kv(filepath.Join(rel, "info"))
	v := &VMA{
		Start:    k.u64("start"),
		End:      k.u64("end"),
		Perms:    k.str("perms"),
		Offset:   k.u64("offset"),
		Dev:      k.str("dev"),
		Inode:    k.u64("inode"),
		Name:     k.opt("name"),
		Kind:     k.str("kind"),
		FileSize: k.i64("file_size"),
		Flags:    strings.Fields(k.opt("vmflags")),
	}
	if k.err == nil && (v.End <= v.Start || v.Start%PageSize != 0 || v.End%PageSize != 0) {
		k.fail("bad range %#x-%#x", v.Start, v.End)
	}
	if k.err == nil && v.DirName() != filepath.Base(rel) {
		k.fail("range %s does not match directory %s", v.DirName(), filepath.Base(rel))
	}
	l.done(k)
	return v
}

func (l *loader) object(id string) *Object {
	rel := filepath.Join("objects", id)
	b := l.read(filepath.Join(rel, "info"))
	k := parseKV(filepath.Join(l.dir, rel, "info"), b)
	o := &Object{ID: id, Kind: k.str("kind")}
	l.done(k)
	for _, line := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
		if key, _, _ := strings.Cut(line, ":"); line != "" && strings.TrimSpace(key) != "kind" {
			o.Info = append(o.Info, line)
		}
	}
	o.Data = l.read(filepath.Join(rel, "data"))
	return o
}
