package image

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// Inotify is the state of an inotify instance: its watches, one line each
// in wd order,
//
//	inotify-watch: wd=3 mask=0x2 path="/some/file"
//
// wd is decimal, mask the kernel's mask in hex, path quoted (QuoteText), the
// rest of the line. (Format 1 had path raw; Load rewrites such lines.) The
// dumper finds each path from the watch's file handle; a watch it could not
// resolve is an "inotify-unresolved: wd=N ino=N why" line instead, which
// Refusal refuses, so no tree holds one. Format 2 also kept the kernel's
// "inotify wd:..." lines for information; format 3 does not.
type Inotify struct {
	Watches    []InotifyWatch
	Unresolved []string // why a watch has no path, one per such watch
}

// InotifyWatch is one watch of an inotify fd.
type InotifyWatch struct {
	WD   int
	Mask uint32
	Path string
}

const inotifyWatchKey = "inotify-watch:"

// Line formats w as its fdinfo line.
func (w InotifyWatch) Line() string {
	return fmt.Sprintf("%s wd=%d mask=%#x path=%s", inotifyWatchKey, w.WD, w.Mask, QuoteText(w.Path))
}

// Lines renders n as its fdinfo lines.
func (n Inotify) Lines() []string {
	var out []string
	for _, w := range n.Watches {
		out = append(out, w.Line())
	}
	for _, u := range n.Unresolved {
		out = append(out, "inotify-unresolved: "+u)
	}
	return out
}

// ParseInotify reads the inotify state of f; with strict false it skips
// other lines (the kernel's "inotify wd:" lines of format 2).
func ParseInotify(f *FD, strict bool) (Inotify, error) {
	k := fdKindLines(f, []string{"inotify-watch", "inotify-unresolved"}, []string{"inotify-watch", "inotify-unresolved"}, strict)
	var n Inotify
	for _, v := range k.all("inotify-watch") {
		w, err := parseInotifyWatch(v)
		if err != nil {
			return Inotify{}, err
		}
		n.Watches = append(n.Watches, w)
	}
	n.Unresolved = k.all("inotify-unresolved")
	if k.err != nil {
		return Inotify{}, k.err
	}
	sort.Slice(n.Watches, func(i, j int) bool { return n.Watches[i].WD < n.Watches[j].WD })
	for i := 1; i < len(n.Watches); i++ {
		if n.Watches[i].WD == n.Watches[i-1].WD {
			return Inotify{}, fmt.Errorf("inotify watch %d is listed twice", n.Watches[i].WD)
		}
	}
	return n, nil
}

func parseInotifyWatch(v string) (InotifyWatch, error) {
	head, path, ok := strings.Cut(v, " path=")
	var w InotifyWatch
	var err1, err2 error
	if fs := strings.Fields(head); ok && len(fs) == 2 && strings.HasPrefix(fs[0], "wd=") && strings.HasPrefix(fs[1], "mask=") {
		w.WD, err1 = strconv.Atoi(strings.TrimPrefix(fs[0], "wd="))
		var m uint64
		m, err2 = strconv.ParseUint(strings.TrimPrefix(strings.TrimPrefix(fs[1], "mask="), "0x"), 16, 32)
		w.Mask = uint32(m)
	} else {
		ok = false
	}
	if ok {
		path, err2 = UnquoteText(path)
	}
	if !ok || err1 != nil || err2 != nil || w.WD <= 0 || path == "" {
		return w, fmt.Errorf("bad inotify watch line %.80q", inotifyWatchKey+" "+v)
	}
	w.Path = path
	return w, nil
}

// InotifyWatches returns the watches of inotify fd f, in ascending wd
// order.
func InotifyWatches(f *FD) ([]InotifyWatch, error) {
	n, err := ParseInotify(f, false)
	return n.Watches, err
}

func inotifyLines(f *FD, strict bool) ([]string, error) {
	n, err := ParseInotify(f, strict)
	return n.Lines(), err
}

func refuseInotify(f *FD) (string, string) {
	n, _ := ParseInotify(f, false)
	if len(n.Unresolved) > 0 {
		return "an inotify watch without a path", n.Unresolved[0]
	}
	// A restore adds the watches in order, skipping the wds between them
	// with throw-away watches (restorer/kind_inotify.go).
	next := 1
	for _, w := range n.Watches {
		if w.WD < next {
			return "inotify watches out of wd order", fmt.Sprintf("wd %d after wd %d", w.WD, next-1)
		}
		if w.WD-next > MaxInotifyGap {
			return "an inotify watch whose wd is too far beyond the one before to skip to", fmt.Sprintf("wd %d after wd %d", w.WD, next-1)
		}
		next = w.WD + 1
	}
	return "", ""
}

// MaxInotifyGap bounds the wd numbers a restore skips to give a watch its
// number.
const MaxInotifyGap = 1 << 20
