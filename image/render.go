package image

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"io"
	"slices"
	"sort"
	"strconv"
	"time"
)

// Render lays a checkpoint out as its tree (see docs/tree-format.md). Page
// contents are read lazily from src; everything else is built now.
func Render(c *Checkpoint, src PageSource) *Dir {
	root := &Dir{}
	root.Add("info", renderInfo(c))
	root.Add("tree", renderPstree(c))
	tasks := &Dir{}
	shared := sharedAnonPages(c)
	for _, t := range c.Tasks {
		tasks.Add(strconv.Itoa(t.PID), renderTask(withSharedPages(t, shared), src))
	}
	root.Add("tasks", tasks)
	if len(c.Objects) > 0 {
		objs := &Dir{}
		for _, o := range c.Objects {
			var k kv
			k.add("kind", "%s", o.Kind)
			for _, l := range renderObjectInfo(o) {
				k.line(l)
			}
			objs.Add(o.ID, (&Dir{}).Add("info", k.bytes()).Add("data", Secret(o.Data)))
		}
		root.Add("objects", objs)
	}
	return root
}

func renderInfo(c *Checkpoint) Bytes {
	var k kv
	k.add("format", "%d", FormatVersion)
	k.text("id", c.ID)
	k.text("name", c.Name)
	k.add("time", "%s", c.Time.UTC().Format(time.RFC3339Nano))
	k.text("host", c.Host)
	k.text("kernel", c.Kernel)
	k.add("root_pid", "%d", c.RootPID)
	k.add("tasks", "%d", len(c.Tasks))
	k.add("memory_bytes", "%d", c.MemoryBytes())
	k.add("pages_total", "%d", c.Stats.PagesTotal)
	k.add("pages_zero", "%d", c.Stats.PagesZero)
	k.add("pages_new", "%d", c.Stats.PagesNew)
	k.add("bytes_added", "%d", c.Stats.BytesAdded)
	return k.bytes()
}

func renderPstree(c *Checkpoint) Bytes {
	var b bytes.Buffer
	depth := map[int]int{}
	for _, t := range c.Tasks {
		d := 0
		if t.PID != c.RootPID {
			d = depth[t.PPID] + 1
		}
		depth[t.PID] = d
		for i := 0; i < d; i++ {
			b.WriteString("  ")
		}
		fmt.Fprintf(&b, "%s(%d)%s state=%s threads=%d\n", QuoteText(t.Comm), t.PID, pstreeNSpid(t), t.State, len(t.Threads))
	}
	return b.Bytes()
}

func renderTask(t *Task, src PageSource) *Dir {
	d := &Dir{}
	d.Add("status", renderStatus(t))
	d.Add("cmdline", Bytes(t.Cmdline))
	d.Add("environ", Secret(t.Environ))
	d.Add("auxv", Secret(t.Auxv))
	for _, l := range []struct{ name, target string }{{"exe", t.Exe}, {"cwd", t.Cwd}, {"root", t.Root}} {
		if l.target != "" { // a zombie has none
			d.Add(l.name, &Symlink{Target: l.target})
		}
	}
	d.Add("mm", renderMM(&t.MM))
	d.Add("limits", renderLimits(t.Limits))
	d.Add("maps", Bytes(RenderMaps(t.VMAs)))
	d.Add("sigactions", renderSigactions(t.Sigactions))
	d.Add("sigpending", Secret(packSiginfo(t.SharedPending)))
	threads := &Dir{}
	for _, th := range t.Threads {
		threads.Add(strconv.Itoa(th.TID), withThreadSecurity(renderThread(th), t, th))
	}
	d.Add("threads", threads)
	renderSecurity(d, t.Security)
	if t.FilesOf != 0 {
		// One fd table shared with another process: shown once, there.
		owner := "../" + strconv.Itoa(t.FilesOf) + "/"
		d.Add("fds", &Symlink{Target: owner + "fds"})
		d.Add("fdinfo", &Symlink{Target: owner + "fdinfo"})
	} else {
		fds, fdinfo := &Dir{}, &Dir{}
		for _, f := range t.FDs {
			n := strconv.Itoa(f.Num)
			fds.Add(n, &Symlink{Target: f.Path})
			fdinfo.Add(n, renderFDInfo(f))
		}
		d.Add("fds", fds)
		d.Add("fdinfo", fdinfo)
	}
	vmas := &Dir{}
	for _, v := range t.VMAs {
		vd := &Dir{}
		vd.Add("info", renderVMAInfo(v))
		vd.Add("pages", &PagesFile{VMA: v, Src: src})
		vd.Add("pagemap", &Lazy{Gen: func() []byte { return renderPagemap(v) }, Secret: true})
		vmas.Add(v.DirName(), vd)
	}
	d.Add("vmas", vmas)
	if coreFile != nil {
		d.Add("core", coreFile(t, src))
	}
	return d
}

// coreFile builds tasks/<pid>/core; set by core.go when present.
var coreFile func(t *Task, src PageSource) File

func renderStatus(t *Task) Bytes {
	var k kv
	k.text("Name", t.Comm)
	k.add("State", "%s", t.State)
	if t.State == "Z" {
		k.add("ExitCode", "%d", t.ExitCode)
	}
	k.add("Pid", "%d", t.PID)
	if len(t.NSpid) > 1 {
		k.add("NSpid", "%s", formatNSpid(t.NSpid)) // pidns.go
	}
	k.add("PPid", "%d", t.PPID)
	k.add("Pgid", "%d", t.PGID)
	k.add("Sid", "%d", t.SID)
	k.add("TtyNr", "%d", t.TTYNr)
	k.add("Tpgid", "%d", t.TPGID)
	if t.FilesOf != 0 {
		k.add("FilesOf", "%d", t.FilesOf)
	}
	k.add("Uid", "%s", joinInts(t.Creds.UID[:]))
	k.add("Gid", "%s", joinInts(t.Creds.GID[:]))
	k.add("Groups", "%s", joinInts(t.Creds.Groups))
	k.add("Umask", "%04o", t.Umask)
	k.add("Threads", "%d", len(t.Threads))
	// The authoritative paths (the exe, cwd, root symlinks hold the same).
	for _, p := range []struct{ key, v string }{{"Exe", t.Exe}, {"Cwd", t.Cwd}, {"Root", t.Root}} {
		if p.v != "" { // a zombie has none
			k.text(p.key, p.v)
		}
	}
	return k.bytes()
}

func renderMM(m *MM) Bytes {
	var k kv
	for _, f := range mmFields(m) {
		k.add(f.name, "%#x", *f.p)
	}
	return k.bytes()
}

type mmField struct {
	name string
	p    *uint64
}

func mmFields(m *MM) []mmField {
	return []mmField{
		{"start_code", &m.StartCode}, {"end_code", &m.EndCode},
		{"start_data", &m.StartData}, {"end_data", &m.EndData},
		{"start_brk", &m.StartBrk}, {"brk", &m.Brk},
		{"start_stack", &m.StartStack},
		{"arg_start", &m.ArgStart}, {"arg_end", &m.ArgEnd},
		{"env_start", &m.EnvStart}, {"env_end", &m.EnvEnd},
	}
}

func extrasFields(x *Extras) []mmField {
	return []mmField{
		{"altstack_sp", &x.AltStackSP}, {"altstack_flags", &x.AltStackFlags}, {"altstack_size", &x.AltStackSize},
		{"clear_tid", &x.ClearTID}, {"robust_head", &x.RobustHead}, {"robust_len", &x.RobustLen},
	}
}

func renderThread(th *Thread) *Dir {
	d := &Dir{}
	d.Add("comm", Bytes(th.Comm+"\n"))
	var k kv
	for _, f := range regFields {
		k.add(f.name, "%#016x", *f.ptr(&th.Regs))
	}
	d.Add("regs", Secret(k.bytes()))
	d.Add("xstate", Secret(th.XState))
	d.Add("sigmask", Bytes(fmt.Sprintf("%#016x\n", th.SigMask)))
	d.Add("sigpending", Secret(packSiginfo(th.Pending)))
	if len(th.NSpid) > 1 {
		d.Add("nspid", Bytes(formatNSpid(th.NSpid)+"\n")) // pidns.go
	}
	if th.Rseq != nil {
		var r kv
		r.add("addr", "%#x", th.Rseq.Addr)
		r.add("len", "%d", th.Rseq.Len)
		r.add("sig", "%#x", th.Rseq.Sig)
		r.add("flags", "%#x", th.Rseq.Flags)
		d.Add("rseq", r.bytes())
	}
	if x := th.Extras; x != nil {
		var k kv
		for _, f := range extrasFields(x) {
			k.add(f.name, "%#x", *f.p)
		}
		d.Add("extras", k.bytes())
	}
	return d
}

func renderFDInfo(f *FD) Bytes {
	var k kv
	k.add("kind", "%s", f.Kind)
	k.text("path", f.Path)
	k.add("flags", "%07o", f.Flags)
	k.add("pos", "%d", f.Pos)
	k.add("size", "%d", f.Size)
	k.add("deleted", "%d", boolInt(f.Deleted))
	k.add("cloexec", "%d", boolInt(f.Cloexec()))
	if f.Object != "" {
		k.add("object", "%s", f.Object)
	}
	if f.OFD != "" {
		k.add("ofd", "%s", f.OFD)
	}
	for _, e := range renderFDExtra(f) {
		k.line(e)
	}
	return k.bytes()
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func renderVMAInfo(v *VMA) Bytes {
	var k kv
	k.add("start", "%#x", v.Start)
	k.add("end", "%#x", v.End)
	k.add("perms", "%s", v.Perms)
	k.add("offset", "%#x", v.Offset)
	k.add("dev", "%s", v.Dev)
	k.add("inode", "%d", v.Inode)
	k.text("name", v.Name)
	k.add("kind", "%s", v.Kind)
	k.add("file_size", "%d", v.FileSize)
	k.add("vmflags", "%s", joinStrings(v.Flags))
	k.add("pages_saved", "%d", len(v.Pages))
	return k.bytes()
}

func joinStrings(s []string) string {
	var b bytes.Buffer
	for i, x := range s {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(x)
	}
	return b.String()
}

// renderPagemap writes "%#x %s\n" of each page's address and hash, without
// fmt: a 1 GiB vma has 262144 lines, which fmt took some 100 ms to write.
func renderPagemap(v *VMA) []byte {
	b := make([]byte, 0, len(v.Pages)*(len("0x000000000000 ")+65))
	for _, p := range v.Pages {
		b = append(b, "0x"...)
		b = strconv.AppendUint(b, v.Start+uint64(p.Index)*PageSize, 16)
		b = append(b, ' ')
		b = hex.AppendEncode(b, p.Hash[:])
		b = append(b, '\n')
	}
	return b
}

// PagesFile is vmas/<range>/pages: the vma's memory as a sparse file, read
// page by page from the store.
type PagesFile struct {
	VMA *VMA
	Src PageSource
}

func (*PagesFile) isNode() {}

// Size is the vma length.
func (p *PagesFile) Size() (int64, error) { return int64(p.VMA.Len()), nil }

// find returns the position in VMA.Pages of the first page with Index >= idx.
func (p *PagesFile) find(idx uint64) int {
	pages := p.VMA.Pages
	return sort.Search(len(pages), func(i int) bool { return uint64(pages[i].Index) >= idx })
}

// ReadAt reads memory at offset off of the vma; holes read as zeros.
func (p *PagesFile) ReadAt(buf []byte, off int64) (int, error) {
	size := int64(p.VMA.Len())
	if off >= size {
		return 0, io.EOF
	}
	want := len(buf)
	if int64(want) > size-off {
		buf = buf[:size-off]
	}
	var page []byte
	pages := p.VMA.Pages
	next := off // bytes of buf before next are filled
	for i := p.find(uint64(off) / PageSize); i < len(pages); i++ {
		pstart := int64(pages[i].Index) * PageSize
		if pstart >= off+int64(len(buf)) {
			break
		}
		lo, hi := max(pstart, off), min(pstart+PageSize, off+int64(len(buf)))
		clear(buf[next-off : lo-off]) // the hole before this page
		next = hi
		if lo == pstart && hi == pstart+PageSize {
			if err := p.Src.ReadPage(pages[i].Hash, buf[lo-off:hi-off]); err != nil {
				return 0, fmt.Errorf("vma %s page %d: %w", p.VMA.DirName(), pages[i].Index, err)
			}
			continue
		}
		if page == nil {
			page = make([]byte, PageSize)
		}
		if err := p.Src.ReadPage(pages[i].Hash, page); err != nil {
			return 0, fmt.Errorf("vma %s page %d: %w", p.VMA.DirName(), pages[i].Index, err)
		}
		copy(buf[lo-off:hi-off], page[lo-pstart:hi-pstart])
	}
	clear(buf[next-off:])
	if len(buf) < want {
		return len(buf), io.EOF
	}
	return len(buf), nil
}

// NextData implements SEEK_DATA.
func (p *PagesFile) NextData(off int64) (int64, bool) {
	if off >= int64(p.VMA.Len()) {
		return 0, false
	}
	i := p.find(uint64(off) / PageSize)
	if i == len(p.VMA.Pages) {
		return 0, false
	}
	return max(off, int64(p.VMA.Pages[i].Index)*PageSize), true
}

// NextHole implements SEEK_HOLE.
func (p *PagesFile) NextHole(off int64) int64 {
	size := int64(p.VMA.Len())
	if off >= size {
		return size
	}
	idx := uint64(off) / PageSize
	pages := p.VMA.Pages
	i := p.find(idx)
	for i < len(pages) && uint64(pages[i].Index) == idx {
		i++
		idx++
	}
	return max(off, min(int64(idx)*PageSize, size))
}

// DataRanges lists [start, end) byte ranges of saved pages, merged.
func (p *PagesFile) DataRanges() [][2]int64 {
	var out [][2]int64
	for _, pg := range p.VMA.Pages {
		s := int64(pg.Index) * PageSize
		if n := len(out); n > 0 && out[n-1][1] == s {
			out[n-1][1] += PageSize
			continue
		}
		out = append(out, [2]int64{s, s + PageSize})
	}
	return out
}

// sharedAnonPages collects, per shared anonymous memory object ("dev:inode"),
// the pages saved by any vma that maps it, by offset in the object.
func sharedAnonPages(c *Checkpoint) map[string]map[uint64]Hash {
	var out map[string]map[uint64]Hash
	for _, t := range c.Tasks {
		for _, v := range t.VMAs {
			if !v.SharedAnon() || len(v.Pages) == 0 {
				continue
			}
			if out == nil {
				out = map[string]map[uint64]Hash{}
			}
			key := v.Dev + ":" + strconv.FormatUint(v.Inode, 10)
			if out[key] == nil {
				out[key] = map[uint64]Hash{}
			}
			for _, p := range v.Pages {
				out[key][v.Offset+uint64(p.Index)*PageSize] = p.Hash
			}
		}
	}
	return out
}

// withSharedPages returns t, or a copy of it whose shared anonymous vmas
// carry every page their object holds in their range, so that pages, pagemap
// and core show what the process saw.
func withSharedPages(t *Task, shared map[string]map[uint64]Hash) *Task {
	if len(shared) == 0 {
		return t
	}
	var vmas []*VMA
	for i, v := range t.VMAs {
		pages := shared[v.Dev+":"+strconv.FormatUint(v.Inode, 10)]
		if !v.SharedAnon() || pages == nil {
			continue
		}
		if vmas == nil {
			vmas = slices.Clone(t.VMAs)
		}
		w := *v
		w.Pages = nil
		for idx := uint64(0); idx < v.Len()/PageSize; idx++ {
			if h, ok := pages[v.Offset+idx*PageSize]; ok {
				w.Pages = append(w.Pages, PageRef{Index: uint32(idx), Hash: h})
			}
		}
		vmas[i] = &w
	}
	if vmas == nil {
		return t
	}
	u := *t
	u.VMAs = vmas
	return &u
}
