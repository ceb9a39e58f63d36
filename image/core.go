//go:build linux && amd64

package image

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"sync"
	"syscall"
)

func init() { coreFile = NewCoreFile }

// NewCoreFile returns the task as an ELF core file (x86-64), generated on
// read: headers and notes (NT_PRSTATUS, NT_FPREGSET and NT_X86_XSTATE per
// thread, NT_PRPSINFO, NT_AUXV, NT_FILE) followed by one PT_LOAD per vma.
// The layout is computed once, without reading pages, so Size is cheap.
//
// Memory: anonymous vmas read as their saved pages, zeros in holes.
// File-backed vmas with saved pages or write permission read their saved
// pages, holes filled from the mapped file when it is still the same file
// (the dumper leaves out pages equal to the file); read-only file vmas
// without saved pages get p_filesz 0, so gdb reads them from the
// executable and libraries (named in NT_FILE). [vvar] areas and
// [vsyscall] are left out.
func NewCoreFile(t *Task, src PageSource) File {
	return &CoreFile{task: t, src: src}
}

// CoreFile is the ELF core file of one task; see NewCoreFile.
type CoreFile struct {
	task *Task
	src  PageSource

	once sync.Once
	head []byte    // ELF header, program headers, notes
	segs []coreSeg // PT_LOAD data in file order
	size int64
}

func (*CoreFile) isNode()  {}
func (*CoreFile) private() {}

var _ SparseFile = (*CoreFile)(nil)

// coreSeg is the file data of one PT_LOAD.
type coreSeg struct {
	off  int64 // file offset, page aligned
	size int64 // p_filesz: the vma's length or less
	vma  *VMA
	file bool // holes come from the mapped file
}

// ELF constants (debug/elf has them typed; these are the raw values).
const (
	coreEhdrSize  = 64
	corePhdrSize  = 56
	coreShdrSize  = 64
	corePNXNum    = 0xffff
	corePTLoad    = 1
	corePTNote    = 4
	corePFX       = 1
	corePFW       = 2
	corePFR       = 4
	coreNTPrstat  = 1
	coreNTFPRegs  = 2
	coreNTPrpsinf = 3
	coreNTAuxv    = 6
	coreNTFile    = 0x46494c45
	coreNTXState  = 0x202
)

// Size returns the length of the core file.
func (c *CoreFile) Size() (int64, error) {
	c.once.Do(c.layout)
	return c.size, nil
}

// coreDumped says how v appears in the core: load (a PT_LOAD at all),
// filesz (bytes of it in the file: all, or only the first page of a
// read-only file mapping at offset 0, which carries the ELF headers and
// build-id gdb matches the executable and libraries by, or none) and
// fromFile (holes are read from the mapped file). Like the kernel,
// unreadable vmas (reservations) and VM_DONTDUMP ones get no data.
func coreDumped(v *VMA) (load bool, filesz uint64, fromFile bool) {
	switch {
	case v.Kind == VMAVvar || v.Kind == VMAVsyscall:
		return false, 0, false
	case len(v.Perms) < 3 || v.Perms[0] != 'r' || v.HasFlag("dd"):
		return true, 0, false
	}
	switch v.Kind {
	case VMAFile:
		if len(v.Pages) == 0 && v.Perms[1] != 'w' {
			if v.Offset == 0 {
				return true, min(PageSize, v.Len()), true
			}
			return true, 0, false
		}
		return true, v.Len(), true
	case VMAVdso:
		if len(v.Pages) == 0 {
			return true, 0, false
		}
	}
	return true, v.Len(), false
}

func (c *CoreFile) layout() {
	t := c.task
	var notes []byte
	for i, th := range t.Threads {
		notes = coreNote(notes, "CORE", coreNTPrstat, corePrstatus(t, th))
		if i == 0 {
			notes = coreNote(notes, "CORE", coreNTPrpsinf, corePrpsinfo(t))
			if len(t.Auxv) > 0 {
				notes = coreNote(notes, "CORE", coreNTAuxv, t.Auxv)
			}
			notes = coreNote(notes, "CORE", coreNTFile, coreNTFileDesc(t.VMAs))
		}
		if len(th.XState) >= 512 {
			notes = coreNote(notes, "CORE", coreNTFPRegs, th.XState[:512])
			if coreStdXState(th.XState) {
				notes = coreNote(notes, "LINUX", coreNTXState, th.XState)
			}
		}
	}

	var loads []*VMA
	for _, v := range t.VMAs {
		if load, _, _ := coreDumped(v); load {
			loads = append(loads, v)
		}
	}
	phnum := 1 + len(loads)
	shnum := 0
	if phnum >= corePNXNum {
		shnum = 1
	}
	phoff := int64(coreEhdrSize)
	noteOff := phoff + int64(phnum)*corePhdrSize + int64(shnum)*coreShdrSize
	headEnd := noteOff + int64(len(notes))
	dataOff := (headEnd + PageSize - 1) &^ (PageSize - 1)

	head := make([]byte, headEnd)
	le := binary.LittleEndian
	copy(head, "\x7fELF")
	head[4], head[5], head[6] = 2, 1, 1 // ELFCLASS64, ELFDATA2LSB, EV_CURRENT
	le.PutUint16(head[16:], 4)          // ET_CORE
	le.PutUint16(head[18:], 62)         // EM_X86_64
	le.PutUint32(head[20:], 1)
	le.PutUint64(head[32:], uint64(phoff))
	le.PutUint16(head[52:], coreEhdrSize)
	le.PutUint16(head[54:], corePhdrSize)
	if shnum == 0 {
		le.PutUint16(head[56:], uint16(phnum))
	} else {
		// PN_XNUM: the real count is in sh_info of section header 0.
		shoff := phoff + int64(phnum)*corePhdrSize
		le.PutUint64(head[40:], uint64(shoff))
		le.PutUint16(head[56:], corePNXNum)
		le.PutUint16(head[58:], coreShdrSize)
		le.PutUint16(head[60:], 1)
		le.PutUint32(head[shoff+44:], uint32(phnum))
	}

	ph := head[phoff:]
	putPhdr := func(typ, flags uint32, off, vaddr, filesz, memsz, align uint64) {
		le.PutUint32(ph[0:], typ)
		le.PutUint32(ph[4:], flags)
		le.PutUint64(ph[8:], off)
		le.PutUint64(ph[16:], vaddr)
		le.PutUint64(ph[24:], 0) // p_paddr
		le.PutUint64(ph[32:], filesz)
		le.PutUint64(ph[40:], memsz)
		le.PutUint64(ph[48:], align)
		ph = ph[corePhdrSize:]
	}
	putPhdr(corePTNote, 0, uint64(noteOff), 0, uint64(len(notes)), 0, 0)
	copy(head[noteOff:], notes)

	off := dataOff
	for _, v := range loads {
		_, filesz, fromFile := coreDumped(v)
		var flags uint32
		if v.Perms[0] == 'r' {
			flags |= corePFR
		}
		if v.Perms[1] == 'w' {
			flags |= corePFW
		}
		if v.Perms[2] == 'x' {
			flags |= corePFX
		}
		if filesz > 0 {
			c.segs = append(c.segs, coreSeg{off: off, size: int64(filesz), vma: v, file: fromFile})
		}
		putPhdr(corePTLoad, flags, uint64(off), v.Start, filesz, v.Len(), PageSize)
		off += int64(filesz)
	}
	c.head = head
	c.size = off
	if len(c.segs) == 0 {
		c.size = headEnd
	}
}

// coreStdXState reports whether xs is laid out with the standard (Intel)
// component offsets, the only layout gdb understands without the
// NT_X86_XSAVE_LAYOUT note of newer kernels (AMD CPUs without MPX pack
// AVX-512 and PKRU lower). Other layouts are left out of the core: gdb then
// takes x87/SSE state from NT_FPREGSET and shows no AVX upper halves,
// rather than wrong ones.
func coreStdXState(xs []byte) bool {
	if len(xs) < 472 {
		return false
	}
	xcr0 := binary.LittleEndian.Uint64(xs[464:]) // fxsave sw_reserved: xfeatures mask
	end := 576                                   // legacy area + xsave header
	std := [...]struct{ bit, off, size int }{
		{2, 576, 256}, {3, 960, 64}, {4, 1024, 64}, {5, 1088, 64},
		{6, 1152, 512}, {7, 1664, 1024}, {9, 2688, 8},
	}
	for _, c := range std {
		if xcr0&(1<<c.bit) != 0 {
			end = max(end, c.off+c.size)
		}
	}
	if xcr0>>10 != 0 || xcr0&(1<<8) != 0 {
		return false // components gdb 13 does not know
	}
	return len(xs) == end
}

// coreNote appends one ELF note.
func coreNote(b []byte, name string, typ uint32, desc []byte) []byte {
	le := binary.LittleEndian
	b = le.AppendUint32(b, uint32(len(name)+1))
	b = le.AppendUint32(b, uint32(len(desc)))
	b = le.AppendUint32(b, typ)
	b = append(b, name...)
	b = append(b, make([]byte, coreAlign4(len(name)+1)-len(name))...)
	b = append(b, desc...)
	return append(b, make([]byte, coreAlign4(len(desc))-len(desc))...)
}

func coreAlign4(n int) int { return (n + 3) &^ 3 }

// corePrstatus is struct elf_prstatus (336 bytes on x86-64).
func corePrstatus(t *Task, th *Thread) []byte {
	b := make([]byte, 336)
	le := binary.LittleEndian
	var pend uint64
	for i := range th.Pending {
		if s := th.Pending[i].Signo(); s > 0 && s <= 64 {
			pend |= 1 << (s - 1)
		}
	}
	le.PutUint64(b[16:], pend)
	le.PutUint64(b[24:], th.SigMask)
	le.PutUint32(b[32:], uint32(th.TID))
	le.PutUint32(b[36:], uint32(t.PPID))
	le.PutUint32(b[40:], uint32(t.PGID))
	le.PutUint32(b[44:], uint32(t.SID))
	r := &th.Regs
	regs := []uint64{r.R15, r.R14, r.R13, r.R12, r.Rbp, r.Rbx, r.R11, r.R10, r.R9, r.R8,
		r.Rax, r.Rcx, r.Rdx, r.Rsi, r.Rdi, r.Orig_rax, r.Rip, r.Cs, r.Eflags, r.Rsp, r.Ss,
		r.Fs_base, r.Gs_base, r.Ds, r.Es, r.Fs, r.Gs}
	for i, v := range regs {
		le.PutUint64(b[112+8*i:], v)
	}
	if len(th.XState) >= 512 {
		le.PutUint32(b[328:], 1) // pr_fpvalid
	}
	return b
}

// corePrpsinfo is struct elf_prpsinfo (136 bytes on x86-64).
func corePrpsinfo(t *Task) []byte {
	b := make([]byte, 136)
	le := binary.LittleEndian
	if t.State != "" {
		if i := strings.IndexByte("RSDTZW", t.State[0]); i >= 0 {
			b[0] = byte(i)
		}
		b[1] = t.State[0]
	}
	if t.State == "Z" {
		b[2] = 1
	}
	le.PutUint32(b[16:], uint32(t.Creds.UID[0]))
	le.PutUint32(b[20:], uint32(t.Creds.GID[0]))
	le.PutUint32(b[24:], uint32(t.PID))
	le.PutUint32(b[28:], uint32(t.PPID))
	le.PutUint32(b[32:], uint32(t.PGID))
	le.PutUint32(b[36:], uint32(t.SID))
	copy(b[40:40+15], t.Comm)
	args := strings.TrimRight(strings.ReplaceAll(string(t.Cmdline), "\x00", " "), " ")
	copy(b[56:56+79], args)
	return b
}

// coreNTFileDesc is the NT_FILE note: count, page size, (start, end,
// offset in pages) per file mapping, then the names.
func coreNTFileDesc(vmas []*VMA) []byte {
	le := binary.LittleEndian
	var files []*VMA
	for _, v := range vmas {
		if v.Kind == VMAFile && strings.HasPrefix(v.Name, "/") {
			files = append(files, v)
		}
	}
	b := le.AppendUint64(nil, uint64(len(files)))
	b = le.AppendUint64(b, PageSize)
	for _, v := range files {
		b = le.AppendUint64(b, v.Start)
		b = le.AppendUint64(b, v.End)
		b = le.AppendUint64(b, v.Offset/PageSize)
	}
	for _, v := range files {
		b = append(b, strings.TrimSuffix(v.Name, " (deleted)")...)
		b = append(b, 0)
	}
	return b
}

// ReadAt reads the core file: headers and notes, then the vmas' memory.
func (c *CoreFile) ReadAt(p []byte, off int64) (int, error) {
	c.once.Do(c.layout)
	if off < 0 {
		return 0, errors.New("core: negative offset")
	}
	if off >= c.size {
		return 0, io.EOF
	}
	want := len(p)
	if int64(want) > c.size-off {
		p = p[:c.size-off]
	}
	n := 0
	if off < int64(len(c.head)) {
		n = copy(p, c.head[off:])
	}
	// The first segment, if any, starting at or before off+n.
	i := sort.Search(len(c.segs), func(i int) bool { return c.segs[i].off > off+int64(n) }) - 1
	for n < len(p) {
		cur := off + int64(n)
		if i < 0 || cur >= c.segs[i].off+c.segs[i].size {
			// Padding before the next segment.
			end := int64(len(p)) + off
			if i+1 < len(c.segs) {
				end = min(end, c.segs[i+1].off)
			}
			clear(p[n : end-off])
			n = int(end - off)
			i++
			continue
		}
		s := &c.segs[i]
		k := min(len(p)-n, int(s.off+s.size-cur))
		if err := c.readVMA(s, p[n:n+k], cur-s.off); err != nil {
			return n, fmt.Errorf("core of %d: %w", c.task.PID, err)
		}
		n += k
	}
	if n < want {
		return n, io.EOF
	}
	return n, nil
}

// readVMA fills p with the memory of s.vma at offset off: saved pages, and
// in holes the mapped file's content (for file vmas) or zeros.
func (c *CoreFile) readVMA(s *coreSeg, p []byte, off int64) error {
	pf := &PagesFile{VMA: s.vma, Src: c.src}
	if _, err := pf.ReadAt(p, off); err != nil && err != io.EOF {
		return err
	}
	if !s.file {
		return nil
	}
	end := off + int64(len(p))
	var f *os.File
	defer func() {
		if f != nil {
			f.Close()
		}
	}()
	for h := pf.NextHole(off); h < end; {
		d, ok := pf.NextData(h)
		if !ok || d > end {
			d = end
		}
		if f == nil {
			var err error
			if f, err = coreOpenMapped(s.vma); f == nil {
				return err // nil: the file is gone, holes stay zero
			}
		}
		buf := p[h-off : d-off]
		k, err := f.ReadAt(buf, int64(s.vma.Offset)+h)
		if err != nil && err != io.EOF {
			return fmt.Errorf("read %s: %w", s.vma.Name, err)
		}
		clear(buf[k:]) // beyond the end of the file
		if d >= end {
			break
		}
		h = pf.NextHole(d)
	}
	return nil
}

// coreOpenMapped opens the file v maps if it is still the file that was
// mapped (same inode); it returns nil, nil if it is not.
func coreOpenMapped(v *VMA) (*os.File, error) {
	if !strings.HasPrefix(v.Name, "/") || strings.HasSuffix(v.Name, " (deleted)") {
		return nil, nil
	}
	f, err := os.Open(v.Name)
	if err != nil {
		return nil, nil
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok && v.Inode != 0 && sys.Ino != v.Inode {
		f.Close()
		return nil, nil
	}
	return f, nil
}

// run reports whether offset cur (< size) of the core file holds data and
// where that data or hole run ends. Headers and file-backed vmas are data;
// anonymous vmas are data where pages were saved.
func (c *CoreFile) run(cur int64) (data bool, end int64) {
	if cur < int64(len(c.head)) {
		return true, int64(len(c.head))
	}
	i := sort.Search(len(c.segs), func(i int) bool { return c.segs[i].off > cur }) - 1
	if i < 0 || cur >= c.segs[i].off+c.segs[i].size {
		if i+1 < len(c.segs) {
			return false, c.segs[i+1].off
		}
		return false, c.size
	}
	s := &c.segs[i]
	segEnd := s.off + s.size
	if s.file {
		return true, segEnd
	}
	pf := &PagesFile{VMA: s.vma}
	rel := cur - s.off
	d, ok := pf.NextData(rel)
	if !ok {
		return false, segEnd
	}
	if d > rel {
		return false, s.off + d
	}
	return true, s.off + pf.NextHole(rel)
}

// NextData implements SEEK_DATA.
func (c *CoreFile) NextData(off int64) (int64, bool) {
	c.once.Do(c.layout)
	for cur := max(off, 0); cur < c.size; {
		data, end := c.run(cur)
		if data {
			return cur, true
		}
		cur = end
	}
	return 0, false
}

// NextHole implements SEEK_HOLE.
func (c *CoreFile) NextHole(off int64) int64 {
	c.once.Do(c.layout)
	cur := max(off, 0)
	for cur < c.size {
		data, end := c.run(cur)
		if !data {
			return cur
		}
		cur = end
	}
	return max(cur, c.size)
}
