package image

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Epoll is the state of an epoll instance: its watches, one line each in
// fd order,
//
//	tfd: 5 events: 0x19 data: 0x7
//
// tfd the watched fd (decimal), events the EPOLL* mask and data the user
// data (hex). The kernel's tfd lines (numbers hex without 0x) also carry
// the watched file's pos, ino and sdev; format 2 kept them verbatim and the
// restore skipped what it did not know, from format 3 the dumper parses
// them and a line with anything else is refused.
type Epoll struct {
	Watches []EpollWatch
}

// EpollWatch is one registered fd of an epoll instance.
type EpollWatch struct {
	TFD    int
	Events uint32
	Data   uint64
}

// Lines renders e as its fdinfo lines.
func (e Epoll) Lines() []string {
	var w lineWriter
	for _, x := range e.Watches {
		w.add("tfd", "%d events: %#x data: %#x", x.TFD, x.Events, x.Data)
	}
	return w
}

// ParseEpoll reads the epoll state of f; with strict false it reads the
// kernel's fdinfo lines (and format-2 trees), skipping the fields after
// data.
func ParseEpoll(f *FD, strict bool) (Epoll, error) {
	k := fdKindLines(f, []string{"tfd"}, []string{"tfd"}, strict)
	var e Epoll
	for _, v := range k.all("tfd") {
		fs := strings.Fields(v)
		bad := len(fs) < 5 || fs[1] != "events:" || fs[3] != "data:" || strict && len(fs) != 5
		var w EpollWatch
		if !bad {
			tfd, err1 := strconv.Atoi(fs[0])
			ev, err2 := strconv.ParseUint(strings.TrimPrefix(fs[2], "0x"), 16, 32)
			data, err3 := strconv.ParseUint(strings.TrimPrefix(fs[4], "0x"), 16, 64)
			w = EpollWatch{TFD: tfd, Events: uint32(ev), Data: data}
			bad = err1 != nil || err2 != nil || err3 != nil || tfd < 0 || tfd > math.MaxInt32
		}
		if bad {
			k.fail("bad watch line %.80q", "tfd: "+v)
			break
		}
		e.Watches = append(e.Watches, w)
	}
	if k.err != nil {
		return Epoll{}, fmt.Errorf("%w", k.err)
	}
	return e, nil
}

func epollLines(f *FD, strict bool) ([]string, error) {
	e, err := ParseEpoll(f, strict)
	return e.Lines(), err
}
