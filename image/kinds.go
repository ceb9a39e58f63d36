package image

import (
	"fmt"
	"sort"
	"strings"
)

// Every kind of fd and of shared object has one schema here, in a file
// named after it (kind_<name>.go): a struct, its lines (Lines or Info:
// render), a parser (load) that validates, and the rule that says when no
// restore could give an fd of the kind back (Refusal), which the dumper and
// the restorer both apply. The schema of an fd kind covers the lines of
// fdinfo/<n> after the common keys (kind, path, flags, ...) and the
// kernel's mnt_id and ino lines; the schema of an object kind covers its
// info file. The tables below are the one place a kind is listed.

// fdSchema is the tree format's knowledge of one fd kind.
type fdSchema struct {
	// lines parses f's kind lines (strict: refuse keys the kind does not
	// have) and renders them again, canonical.
	lines func(f *FD, strict bool) ([]string, error)
	// refuse says why no restore could give f back (what, and the
	// detail that names it), "" if one can.
	refuse func(f *FD) (why, what string)
}

// fdSchemas lists every fd kind. A kind without state of its own (a file
// is its path, flags and offset) has no lines: the kernel's other fdinfo
// lines (a file's lock: lines, say) are not kept.
var fdSchemas = map[string]fdSchema{
	FDFile:     {lines: fileLines, refuse: refuseDeletedPath},
	FDDir:      {lines: noLines, refuse: refuseDeletedPath},
	FDChar:     {lines: noLines, refuse: refuseDeletedPath},
	FDPipe:     {lines: noLines},
	FDSocket:   {lines: noLines},
	FDEventfd:  {lines: eventfdLines},
	FDEpoll:    {lines: epollLines},
	FDTimerfd:  {lines: timerfdLines},
	FDSignalfd: {lines: signalfdLines},
	FDInotify:  {lines: inotifyLines, refuse: refuseInotify},
	FDPidfd:    {lines: pidfdLines},
	FDPty:      {lines: ptyLines},
	FDOther:    {lines: noLines, refuse: refuseOther},
}

// noLines is the schema of a kind with no lines of its own.
func noLines(f *FD, strict bool) ([]string, error) {
	return nil, fdKindLines(f, nil, nil, strict).err
}

// FDKinds returns every fd kind, sorted.
func FDKinds() []string { return sortedKeys(fdSchemas) }

// ObjectKinds returns every object kind, sorted.
func ObjectKinds() []string { return sortedKeys(objectSchemas) }

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// objectSchema is the tree format's knowledge of one object kind.
type objectSchema struct {
	// parse reads and validates o's info (strict: refuse unknown keys)
	// and its data against it, and returns the info lines rendered again.
	parse func(o *Object, strict bool) ([]string, error)
}

// objectSchemas lists every object kind.
var objectSchemas = map[string]objectSchema{
	ObjPipe:        {parse: parsePipeInfo},
	ObjUnixSocket:  {parse: parseUnixInfo},
	ObjDeletedFile: {parse: parseDeletedFileInfo},
	ObjMemfd:       {parse: parseMemfdInfo},
	ObjSysVShm:     {parse: parseSysVInfo},
	ObjTCPSocket:   {parse: parseTCPInfo},
	ObjUDPSocket:   {parse: parseUDPInfo},
	ObjPty:         {parse: parsePtyInfo},
}

// CommonFDLine reports the kernel's fdinfo lines every fd has, kept
// verbatim beside a kind's own lines.
func CommonFDLine(line string) bool {
	k, _, _ := strings.Cut(line, ":")
	k = strings.TrimSpace(k)
	return k == "mnt_id" || k == "ino"
}

// kindLinesOf splits f.Extra into the common kernel lines and the kind's.
func kindLinesOf(f *FD) (common, own []string) {
	for _, l := range f.Extra {
		if CommonFDLine(l) {
			common = append(common, l)
		} else {
			own = append(own, l)
		}
	}
	return common, own
}

// Refusal is the rule of f's kind that both sides apply: why no restore
// could give f back (nil: one can). The dumper refuses such an fd before
// it seizes anything (dumper/refuse.go); the restorer refuses a tree
// holding one before it creates any process (restorer/check.go).
func Refusal(f *FD) error {
	s, ok := fdSchemas[f.Kind]
	if !ok {
		return fmt.Errorf("unknown fd kind %.40q", f.Kind)
	}
	if _, err := s.lines(f, false); err != nil {
		return err
	}
	if s.refuse != nil {
		if why, what := s.refuse(f); why != "" {
			return &RefusedFD{Kind: f.Kind, Why: why, What: what}
		}
	}
	return nil
}

// RefusedFD is a Refusal: an fd of kind Kind that cannot be restored, Why
// says what it is ("an inotify watch without a path"), What names it.
type RefusedFD struct {
	Kind, Why, What string
}

func (e *RefusedFD) Error() string { return e.Why + " (" + e.What + ")" }

// CanonicalLines returns f.Extra as its kind's schema has it: the
// kernel's mnt_id and ino lines, then the kind's lines read from the
// kernel's spelling (or an older tree's) and rendered again. The dumper
// applies it to every fd it records.
func CanonicalLines(f *FD) ([]string, error) { return canonFD(f, false) }

// canonFD checks f's kind lines (strict) and returns f.Extra as Render
// writes it: the common kernel lines, then the kind's lines rendered by
// its schema.
func canonFD(f *FD, strict bool) ([]string, error) {
	s, ok := fdSchemas[f.Kind]
	if !ok {
		return nil, fmt.Errorf("unknown fd kind %.40q", f.Kind)
	}
	common, _ := kindLinesOf(f)
	own, err := s.lines(f, strict)
	if err != nil {
		return nil, err
	}
	return append(common, own...), nil
}

// fdKindLines reads f's own lines with the keys of its kind.
func fdKindLines(f *FD, keys, repeat []string, strict bool) *kindLines {
	_, own := kindLinesOf(f)
	return readKindLines(f.Kind, own, keys, repeat, strict)
}
