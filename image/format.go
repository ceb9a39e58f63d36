package image

import (
	"bytes"
	"fmt"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"
)

// This file holds the text encodings shared by Render and Load. Every text
// file of the tree is "key: value" lines unless said otherwise; numbers that
// are addresses or masks are hex with 0x, counts are decimal, and free text
// (paths, names) is a Go-quoted string (strconv.Quote) from tree format 2 on,
// so that no byte a program chose can start a line of its own.

// Tree format versions: FormatVersion is what Render writes as "format:" in
// info; a tree without that key is format 1 (free text written raw).
// Format 3 gave every fd and object kind a typed schema (kinds.go): an
// fd's kind lines and an object's info hold only the keys of its kind.
const (
	FormatVersion = 3
	formatLegacy  = 1
	formatKinds   = 3 // from this version kind lines are read strictly
)

// kv builds a "key: value" file.
type kv struct{ b bytes.Buffer }

// add writes a value that format makes safe by itself (numbers, tokens).
func (k *kv) add(key string, format string, args ...any) {
	k.b.WriteString(key)
	k.b.WriteString(": ")
	if len(args) != 1 || !k.addFast(format, args[0]) {
		fmt.Fprintf(&k.b, format, args...)
	}
	k.b.WriteByte('\n')
}

// addFast writes a string with "%s", an integer with "%d" or a
// non-negative one with "%#x" or "%#016x" as fmt would, without fmt (a tree of 101
// tasks writes some 100,000 lines); false for anything else.
func (k *kv) addFast(format string, arg any) bool {
	if format == "%s" {
		s, ok := arg.(string)
		if ok {
			k.b.WriteString(s)
		}
		return ok
	}
	var u uint64
	neg := false
	switch v := arg.(type) {
	case int:
		u, neg = uint64(v), v < 0
	case int64:
		u, neg = uint64(v), v < 0
	case int32:
		u, neg = uint64(v), v < 0
	case uint64:
		u = v
	case uint32:
		u = uint64(v)
	case uint:
		u = uint64(v)
	case uint16:
		u = uint64(v)
	case uint8:
		u = uint64(v)
	default:
		return false
	}
	var buf [24]byte
	switch {
	case format == "%d" && neg:
		k.b.Write(strconv.AppendInt(buf[:0], int64(u), 10))
	case format == "%d":
		k.b.Write(strconv.AppendUint(buf[:0], u, 10))
	case format == "%#x" && !neg:
		k.b.WriteString("0x")
		k.b.Write(strconv.AppendUint(buf[:0], u, 16))
	case format == "%#016x" && !neg:
		k.b.WriteString("0x")
		d := strconv.AppendUint(buf[:0], u, 16)
		for range 16 - len(d) {
			k.b.WriteByte('0')
		}
		k.b.Write(d)
	default:
		return false
	}
	return true
}

// text writes free text, quoted: read back exactly by kvFile.text.
func (k *kv) text(key, value string) {
	k.b.WriteString(key)
	k.b.WriteString(": ")
	k.b.WriteString(strconv.Quote(value))
	k.b.WriteByte('\n')
}

// line writes a line that is already a whole "key: value" line (kernel
// fdinfo lines, object Info lines). A newline in it would start a line of
// its own: written as the two characters \n instead.
func (k *kv) line(l string) {
	k.b.WriteString(strings.ReplaceAll(l, "\n", `\n`))
	k.b.WriteByte('\n')
}

func (k *kv) bytes() Bytes { return Bytes(k.b.Bytes()) }

// QuoteText is how free text is written inside a tree line (format 2).
func QuoteText(s string) string { return strconv.Quote(s) }

// UnquoteText reads back what QuoteText wrote; anything else is an error.
func UnquoteText(s string) (string, error) {
	if len(s) < 2 || s[0] != '"' {
		return "", fmt.Errorf("%.40q is not a quoted string", s)
	}
	u, err := strconv.Unquote(s)
	if err != nil {
		return "", fmt.Errorf("%.40q is not a quoted string", s)
	}
	return u, nil
}

// kvFile is a parsed "key: value" file; it remembers its path, the line of
// every key, which keys were read and the tree format for errors and for
// reading free text.
type kvFile struct {
	dir, rel string // its path, dir/rel (joined only for an error)
	version  int    // tree format; 0 means FormatVersion
	ents     []kvEnt
	index    map[string]int // key -> ents position, for a file of many keys
	dup      []kvVal        // line of a key's second occurrence (v: the key), in line order
	err      error
}

// kvEnt is a key's first occurrence.
type kvEnt struct {
	k, v string
	line int
	used bool
}

type kvVal struct {
	v    string
	line int
}

// kvIndexed is the number of keys from which a kvFile finds them by map
// rather than by scanning (most files of a tree have a dozen).
const kvIndexed = 32

func parseKV(path string, b []byte) *kvFile { return parseKVAt(path, "", b) }

// parseKVAt parses the file rel below dir (named in errors).
func parseKVAt(dir, rel string, b []byte) *kvFile {
	f := &kvFile{dir: dir, rel: rel, ents: make([]kvEnt, 0, bytes.Count(b, []byte{'\n'})+1)}
	// No bufio.Scanner: its buffer cost more than parsing the small files.
	n := 0
	for line := range strings.Lines(string(b)) {
		n++
		line = strings.TrimSuffix(line, "\n")
		if strings.TrimSpace(line) == "" {
			continue
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			f.failLine(n, "%.60q is not key: value", line)
			continue
		}
		k = strings.TrimSpace(k)
		if f.find(k) >= 0 {
			if !slices.ContainsFunc(f.dup, func(d kvVal) bool { return d.v == k }) {
				f.dup = append(f.dup, kvVal{k, n})
			}
			continue
		}
		f.ents = append(f.ents, kvEnt{k: k, v: strings.TrimSpace(v), line: n})
		if f.index != nil {
			f.index[k] = len(f.ents) - 1
		} else if len(f.ents) == kvIndexed {
			f.index = make(map[string]int, 2*kvIndexed)
			for i, e := range f.ents {
				f.index[e.k] = i
			}
		}
	}
	return f
}

// path is the file's path, for errors.
func (f *kvFile) path() string {
	if f.rel == "" {
		return f.dir
	}
	return filepath.Join(f.dir, f.rel)
}

// find returns the position of key in f.ents, -1 if it has none.
func (f *kvFile) find(key string) int {
	if f.index != nil {
		if i, ok := f.index[key]; ok {
			return i
		}
		return -1
	}
	for i := range f.ents {
		if f.ents[i].k == key {
			return i
		}
	}
	return -1
}

// line returns the line of key's first occurrence, 0 if it has none.
func (f *kvFile) line(key string) int {
	if i := f.find(key); i >= 0 {
		return f.ents[i].line
	}
	return 0
}

func (f *kvFile) fail(format string, args ...any) {
	if f.err == nil {
		f.err = fmt.Errorf("%s: %s", f.path(), fmt.Sprintf(format, args...))
	}
}

func (f *kvFile) failLine(line int, format string, args ...any) {
	if f.err == nil {
		f.err = fmt.Errorf("%s:%d: %s", f.path(), line, fmt.Sprintf(format, args...))
	}
}

// failKey reports a bad value of key at its line.
func (f *kvFile) failKey(key string, format string, args ...any) {
	f.failLine(f.line(key), "%s: %s", key, fmt.Sprintf(format, args...))
}

// get returns the value of key, marking it read; a key given twice is an
// error.
func (f *kvFile) get(key string) (string, bool) {
	i := f.find(key)
	if i < 0 {
		return "", false
	}
	e := &f.ents[i]
	e.used = true
	for _, d := range f.dup {
		if d.v == key {
			f.failLine(d.line, "duplicate key %q (first on line %d)", key, e.line)
		}
	}
	return e.v, true
}

func (f *kvFile) str(key string) string {
	v, ok := f.get(key)
	if !ok {
		f.fail("missing %q", key)
	}
	return v
}

func (f *kvFile) opt(key string) string {
	v, _ := f.get(key)
	return v
}

func (f *kvFile) has(key string) bool { return f.find(key) >= 0 }

// legacy reports a format-1 file: free text raw, unknown keys ignored.
func (f *kvFile) legacy() bool { return f.version == formatLegacy }

// text reads free text: quoted (format 2), or the raw value (format 1).
func (f *kvFile) text(key string) string {
	v, ok := f.get(key)
	if !ok {
		f.fail("missing %q", key)
		return ""
	}
	return f.unquote(key, v)
}

// textOpt is text for a key that may be absent ("").
func (f *kvFile) textOpt(key string) string {
	v, ok := f.get(key)
	if !ok {
		return ""
	}
	return f.unquote(key, v)
}

func (f *kvFile) unquote(key, v string) string {
	if f.legacy() {
		return v
	}
	u, err := UnquoteText(v)
	if err != nil {
		f.failKey(key, "%v", err)
	}
	return u
}

// checkKeys reports a key given twice and, from format 2 on, a key that no
// getter read (an unknown key of a typed file).
func (f *kvFile) checkKeys() {
	for _, d := range f.dup {
		f.failLine(d.line, "duplicate key %q (first on line %d)", d.v, f.line(d.v))
	}
	if f.legacy() {
		return
	}
	for _, e := range f.ents { // in line order: the first unknown key
		if !e.used {
			f.failLine(e.line, "unknown key %q", e.k)
			return
		}
	}
}

func (f *kvFile) u64(key string) uint64 {
	s := f.str(key)
	if s == "" {
		return 0
	}
	v, err := strconv.ParseUint(s, 0, 64)
	if err != nil {
		f.failKey(key, "bad number %q", s)
	}
	return v
}

// u64Max is u64 for a value that must be <= max.
func (f *kvFile) u64Max(key string, max uint64) uint64 {
	v := f.u64(key)
	if v > max {
		f.failKey(key, "%#x is out of range (max %#x)", v, max)
	}
	return v
}

func (f *kvFile) i64(key string) int64 {
	s := f.str(key)
	if s == "" {
		return 0
	}
	v, err := strconv.ParseInt(s, 0, 64)
	if err != nil {
		f.failKey(key, "bad number %q", s)
	}
	return v
}

// i64Range is i64 for a value in [lo, hi].
func (f *kvFile) i64Range(key string, lo, hi int64) int64 {
	v := f.i64(key)
	if v < lo || v > hi {
		f.failKey(key, "%d is out of range [%d, %d]", v, lo, hi)
	}
	return v
}

func (f *kvFile) int(key string) int { return int(f.i64(key)) }

// intRange is int for a value in [lo, hi].
func (f *kvFile) intRange(key string, lo, hi int) int {
	return int(f.i64Range(key, int64(lo), int64(hi)))
}

func (f *kvFile) ints(key string) []int {
	var out []int
	for _, s := range strings.Fields(f.str(key)) {
		v, err := strconv.Atoi(s)
		if err != nil {
			f.failKey(key, "bad number %q", s)
		}
		out = append(out, v)
	}
	return out
}

// idsRange is ints for ids in [0, maxID].
func (f *kvFile) idsRange(key string) []int {
	out := f.ints(key)
	for _, v := range out {
		if v < 0 || v > maxID {
			f.failKey(key, "id %d is out of range", v)
		}
	}
	return out
}

// maxID is the largest uid/gid (uid_t, less the (uid_t)-1 "no id").
const maxID = 1<<32 - 2

func joinInts(v []int) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = strconv.Itoa(x)
	}
	return strings.Join(s, " ")
}

// regField names one register of user_regs_struct.
type regField struct {
	name string
	ptr  func(*Regs) *uint64
}

// regFields lists the registers in user_regs_struct order.
var regFields = []regField{
	{"r15", func(r *Regs) *uint64 { return &r.R15 }},
	{"r14", func(r *Regs) *uint64 { return &r.R14 }},
	{"r13", func(r *Regs) *uint64 { return &r.R13 }},
	{"r12", func(r *Regs) *uint64 { return &r.R12 }},
	{"rbp", func(r *Regs) *uint64 { return &r.Rbp }},
	{"rbx", func(r *Regs) *uint64 { return &r.Rbx }},
	{"r11", func(r *Regs) *uint64 { return &r.R11 }},
	{"r10", func(r *Regs) *uint64 { return &r.R10 }},
	{"r9", func(r *Regs) *uint64 { return &r.R9 }},
	{"r8", func(r *Regs) *uint64 { return &r.R8 }},
	{"rax", func(r *Regs) *uint64 { return &r.Rax }},
	{"rcx", func(r *Regs) *uint64 { return &r.Rcx }},
	{"rdx", func(r *Regs) *uint64 { return &r.Rdx }},
	{"rsi", func(r *Regs) *uint64 { return &r.Rsi }},
	{"rdi", func(r *Regs) *uint64 { return &r.Rdi }},
	{"orig_rax", func(r *Regs) *uint64 { return &r.Orig_rax }},
	{"rip", func(r *Regs) *uint64 { return &r.Rip }},
	{"cs", func(r *Regs) *uint64 { return &r.Cs }},
	{"eflags", func(r *Regs) *uint64 { return &r.Eflags }},
	{"rsp", func(r *Regs) *uint64 { return &r.Rsp }},
	{"ss", func(r *Regs) *uint64 { return &r.Ss }},
	{"fs_base", func(r *Regs) *uint64 { return &r.Fs_base }},
	{"gs_base", func(r *Regs) *uint64 { return &r.Gs_base }},
	{"ds", func(r *Regs) *uint64 { return &r.Ds }},
	{"es", func(r *Regs) *uint64 { return &r.Es }},
	{"fs", func(r *Regs) *uint64 { return &r.Fs }},
	{"gs", func(r *Regs) *uint64 { return &r.Gs }},
}

// Kernel syscall restart codes (include/linux/errno.h).
const (
	ERestartSys          = 512
	ERestartNoIntr       = 513
	ERestartNoHand       = 514
	ERestartRestartBlock = 516
)

// NrRestartSyscall is __NR_restart_syscall on x86-64.
const NrRestartSyscall = 219

// InterruptedSyscall reports whether regs show a thread stopped inside a
// syscall the kernel would restart (rax = -ERESTART*, orig_rax = the call).
func InterruptedSyscall(r *Regs) bool {
	if int64(r.Orig_rax) < 0 {
		return false
	}
	switch -int64(r.Rax) {
	case ERestartSys, ERestartNoIntr, ERestartNoHand, ERestartRestartBlock:
		return true
	}
	return false
}

// Syscalls the kernel never restarts that a freeze (PTRACE_INTERRUPT)
// breaks with EINTR: epoll_wait, epoll_pwait, epoll_pwait2.
var eintrSyscalls = map[uint64]bool{232: true, 281: true, 441: true}

// EINTRByFreeze reports a thread stopped right after one of those calls
// returned -EINTR. Whether a signal explains the EINTR is the caller's
// question (pending signals).
func EINTRByFreeze(r *Regs) bool {
	return eintrSyscalls[r.Orig_rax] && int64(r.Rax) == -4
}

// ReenterSyscall sets regs so that the thread executes its syscall
// instruction again with the same arguments.
func ReenterSyscall(r *Regs) {
	r.Rax = r.Orig_rax
	r.Rip -= 2
	r.Orig_rax = ^uint64(0)
}

// Resource limit names as /proc/<pid>/limits prints them, by RLIMIT_* number.
var limitNames = []struct{ name, unit string }{
	{"Max cpu time", "seconds"},
	{"Max file size", "bytes"},
	{"Max data size", "bytes"},
	{"Max stack size", "bytes"},
	{"Max core file size", "bytes"},
	{"Max resident set", "bytes"},
	{"Max processes", "processes"},
	{"Max open files", "files"},
	{"Max locked memory", "bytes"},
	{"Max address space", "bytes"},
	{"Max file locks", "locks"},
	{"Max pending signals", "signals"},
	{"Max msgqueue size", "bytes"},
	{"Max nice priority", ""},
	{"Max realtime priority", ""},
	{"Max realtime timeout", "us"},
}

const rlimInfinity = ^uint64(0)

func fmtLimit(v uint64) string {
	if v == rlimInfinity {
		return "unlimited"
	}
	return strconv.FormatUint(v, 10)
}

// renderLimits prints limits exactly as /proc/<pid>/limits does.
func renderLimits(ls []Rlimit) Bytes {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%-25s %-20s %-20s %-10s\n", "Limit", "Soft Limit", "Hard Limit", "Units")
	for _, l := range ls {
		if l.Resource < 0 || l.Resource >= len(limitNames) {
			continue
		}
		n := limitNames[l.Resource]
		fmt.Fprintf(&b, "%-25s %-20s %-20s %-10s\n", n.name, fmtLimit(l.Cur), fmtLimit(l.Max), n.unit)
	}
	return b.Bytes()
}

// ParseLimits parses the /proc/<pid>/limits format.
func ParseLimits(b []byte) ([]Rlimit, error) {
	var out []Rlimit
	seen := map[int]bool{}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	for i, line := range lines {
		if i == 0 && strings.HasPrefix(line, "Limit") {
			continue
		}
		res := -1
		for r, n := range limitNames {
			if strings.HasPrefix(line, n.name+" ") {
				res = r
				line = line[len(n.name):]
				break
			}
		}
		f := strings.Fields(line)
		if res < 0 || len(f) < 2 {
			return nil, fmt.Errorf("line %d: bad limits line %.80q", i+1, lines[i])
		}
		if seen[res] {
			return nil, fmt.Errorf("line %d: %s listed twice", i+1, limitNames[res].name)
		}
		seen[res] = true
		l := Rlimit{Resource: res}
		for j, p := range []*uint64{&l.Cur, &l.Max} {
			if f[j] == "unlimited" {
				*p = rlimInfinity
				continue
			}
			v, err := strconv.ParseUint(f[j], 10, 64)
			if err != nil {
				return nil, fmt.Errorf("line %d: bad limits line %.80q", i+1, lines[i])
			}
			*p = v
		}
		if l.Cur > l.Max {
			return nil, fmt.Errorf("line %d: %s: soft limit above hard limit", i+1, limitNames[res].name)
		}
		out = append(out, l)
	}
	return out, nil
}

// RenderMaps prints vmas exactly as /proc/<pid>/maps does.
func RenderMaps(vmas []*VMA) []byte {
	var b bytes.Buffer
	for _, v := range vmas {
		start := b.Len()
		// fmt's "%08x-%08x %s %08x %s %d ", without fmt
		var num [24]byte
		b.Write(hex08(num[:0], v.Start))
		b.WriteByte('-')
		b.Write(hex08(num[:0], v.End))
		b.WriteByte(' ')
		b.WriteString(v.Perms)
		b.WriteByte(' ')
		b.Write(hex08(num[:0], v.Offset))
		b.WriteByte(' ')
		b.WriteString(v.Dev)
		b.WriteByte(' ')
		b.Write(strconv.AppendUint(num[:0], v.Inode, 10))
		b.WriteByte(' ')
		if v.Name != "" {
			for b.Len()-start < 72 {
				b.WriteByte(' ')
			}
			b.WriteByte(' ')
			b.WriteString(v.Name)
		}
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// hex08 appends v in hex, zero-padded to 8 digits (fmt's "%08x").
func hex08(b []byte, v uint64) []byte {
	var d [16]byte
	x := strconv.AppendUint(d[:0], v, 16)
	for range 8 - len(x) {
		b = append(b, '0')
	}
	return append(b, x...)
}

var signalNames = map[int]string{
	1: "HUP", 2: "INT", 3: "QUIT", 4: "ILL", 5: "TRAP", 6: "ABRT", 7: "BUS", 8: "FPE", 9: "KILL",
	10: "USR1", 11: "SEGV", 12: "USR2", 13: "PIPE", 14: "ALRM", 15: "TERM", 16: "STKFLT", 17: "CHLD",
	18: "CONT", 19: "STOP", 20: "TSTP", 21: "TTIN", 22: "TTOU", 23: "URG", 24: "XCPU", 25: "XFSZ",
	26: "VTALRM", 27: "PROF", 28: "WINCH", 29: "IO", 30: "PWR", 31: "SYS",
}

func signalName(n int) string {
	if s, ok := signalNames[n]; ok {
		return "SIG" + s
	}
	if n >= 34 {
		return fmt.Sprintf("SIGRTMIN+%d", n-34)
	}
	return fmt.Sprintf("SIG%d", n)
}

// renderSigactions prints one line per signal: number, name, handler, flags, restorer, mask.
// Its columns are fmt's "%-4d %-12s %-18s %-18s %-18s %s", written
// without fmt (65 lines a task).
func renderSigactions(sa []Sigaction) Bytes {
	b := make([]byte, 0, (len(sa)+1)*96)
	b = padRight(b, "#", 4)
	b = padRight(b, "signal", 12)
	b = padRight(b, "handler", 18)
	b = padRight(b, "flags", 18)
	b = padRight(b, "restorer", 18)
	b = append(b, "mask\n"...)
	var num [20]byte
	for _, s := range sa {
		b = padRight(b, string(strconv.AppendInt(num[:0], int64(s.Signo), 10)), 4)
		b = padRight(b, signalName(s.Signo), 12)
		b = padRight(b, fmtHandler(s.Handler), 18)
		b = padRight(b, hexs(s.Flags), 18)
		b = padRight(b, hexs(s.Restorer), 18)
		b = append(b, hexs(s.Mask)...)
		b = append(b, '\n')
	}
	return b
}

// padRight appends s and a space, with spaces after s up to width runes
// first (fmt's "%-<width>s ").
func padRight(b []byte, s string, width int) []byte {
	b = append(b, s...)
	for n := utf8.RuneCountInString(s); n < width; n++ {
		b = append(b, ' ')
	}
	return append(b, ' ')
}

func fmtHandler(h uint64) string {
	switch h {
	case 0:
		return "SIG_DFL"
	case 1:
		return "SIG_IGN"
	}
	return hexs(h)
}

func hexs(v uint64) string { return "0x" + strconv.FormatUint(v, 16) }

func parseSigactions(path string, b []byte) ([]Sigaction, error) {
	var out []Sigaction
	for i, line := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
		if i == 0 || strings.TrimSpace(line) == "" {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 6 {
			return nil, fmt.Errorf("%s:%d: want 6 fields, got %.80q", path, i+1, line)
		}
		var s Sigaction
		var err error
		if s.Signo, err = strconv.Atoi(f[0]); err != nil {
			return nil, fmt.Errorf("%s:%d: %w", path, i+1, err)
		}
		if s.Signo < 1 || s.Signo > maxSignal || len(out) > 0 && s.Signo <= out[len(out)-1].Signo {
			return nil, fmt.Errorf("%s:%d: signal %d out of range or order (1..%d, ascending, once each)", path, i+1, s.Signo, maxSignal)
		}
		switch f[2] {
		case "SIG_DFL":
			s.Handler = 0
		case "SIG_IGN":
			s.Handler = 1
		default:
			if s.Handler, err = strconv.ParseUint(f[2], 0, 64); err != nil {
				return nil, fmt.Errorf("%s:%d: %w", path, i+1, err)
			}
		}
		for j, p := range []*uint64{&s.Flags, &s.Restorer, &s.Mask} {
			if *p, err = strconv.ParseUint(f[3+j], 0, 64); err != nil {
				return nil, fmt.Errorf("%s:%d: %w", path, i+1, err)
			}
		}
		out = append(out, s)
	}
	return out, nil
}

// maxSignal is _NSIG on x86-64.
const maxSignal = 64

func packSiginfo(s []Siginfo) Bytes {
	b := make([]byte, 0, len(s)*128)
	for i := range s {
		b = append(b, s[i][:]...)
	}
	return b
}

func unpackSiginfo(path string, b []byte) ([]Siginfo, error) {
	if len(b)%128 != 0 {
		return nil, fmt.Errorf("%s: length %d is not a multiple of 128", path, len(b))
	}
	out := make([]Siginfo, len(b)/128)
	for i := range out {
		copy(out[i][:], b[i*128:])
		if n := out[i].Signo(); n < 1 || n > maxSignal {
			return nil, fmt.Errorf("%s: record %d: signal %d out of range 1..%d", path, i, n, maxSignal)
		}
	}
	return out, nil
}

// sortTasks orders tasks root first, then parents before children.
func sortTasks(tasks []*Task, root int) []*Task {
	kids := map[int][]*Task{}
	byPID := map[int]*Task{}
	for _, t := range tasks {
		byPID[t.PID] = t
	}
	for _, t := range tasks {
		if t.PID != root {
			kids[t.PPID] = append(kids[t.PPID], t)
		}
	}
	var out []*Task
	var walk func(t *Task)
	walk = func(t *Task) {
		out = append(out, t)
		ks := kids[t.PID]
		sort.Slice(ks, func(i, j int) bool { return ks[i].PID < ks[j].PID })
		for _, k := range ks {
			walk(k)
		}
	}
	if r := byPID[root]; r != nil {
		walk(r)
	}
	return out
}
