package image

import (
	"fmt"
	"strconv"
	"strings"
)

// Timerfd is the state of a timerfd:
//
//	clockid: 1                CLOCK_MONOTONIC
//	ticks: 3                  expirations not read yet, all of them (the dumper counts missed periods)
//	settime_flags: 0x1        TFD_TIMER_ABSTIME, TFD_TIMER_CANCEL_ON_SET as set (recorded, not restored)
//	it_value: 0.499996183     time left to the next expiration, seconds
//	it_interval: 1.000000000  the period, 0 for a one-shot timer
//
// The kernel prints "settime flags: 01" (octal) and "it_value: (0,
// 499996183)"; format 2 kept those lines, format 3 has the ones above.
type Timerfd struct {
	Clock        int
	Ticks        uint64
	SettimeFlags uint32
	Value        Timespec
	Interval     Timespec
}

// Timespec is a duration in seconds and nanoseconds.
type Timespec struct {
	Sec, Nsec uint64
}

func (t Timespec) String() string { return fmt.Sprintf("%d.%09d", t.Sec, t.Nsec) }

// Zero reports a zero duration.
func (t Timespec) Zero() bool { return t.Sec == 0 && t.Nsec == 0 }

// Lines renders t as its fdinfo lines.
func (t Timerfd) Lines() []string {
	var w lineWriter
	w.add("clockid", "%d", t.Clock)
	w.add("ticks", "%d", t.Ticks)
	w.add("settime_flags", "%#x", t.SettimeFlags)
	w.add("it_value", "%s", t.Value)
	w.add("it_interval", "%s", t.Interval)
	return w
}

// ParseTimerfd reads the timerfd state of f; with strict false it also
// reads the kernel's spelling (and format-2 trees).
func ParseTimerfd(f *FD, strict bool) (Timerfd, error) {
	keys := []string{"clockid", "ticks", "settime_flags", "it_value", "it_interval"}
	if !strict {
		keys = append(keys, "settime flags")
	}
	k := fdKindLines(f, keys, nil, strict)
	t := Timerfd{Clock: int(k.int("clockid", 0, 15)), Ticks: k.uint("ticks", 10, 64)}
	switch {
	case k.has("settime_flags"):
		t.SettimeFlags = uint32(k.uint("settime_flags", 16, 32))
	case k.has("settime flags"):
		t.SettimeFlags = uint32(k.uint("settime flags", 8, 32))
	case strict:
		k.str("settime_flags")
	}
	for _, x := range []struct {
		key string
		to  *Timespec
	}{{"it_value", &t.Value}, {"it_interval", &t.Interval}} {
		v := k.str(x.key)
		if k.err != nil {
			break
		}
		ts, ok := parseTimespec(v, !strict)
		if !ok {
			k.fail("%s: bad time %.40q", x.key, v)
		}
		*x.to = ts
	}
	return t, k.err
}

// parseTimespec reads "s.nnnnnnnnn", or with kernel true also the
// kernel's "(s, ns)".
func parseTimespec(v string, kernel bool) (Timespec, bool) {
	var a, b string
	var ok bool
	if kernel && strings.HasPrefix(v, "(") {
		a, b, ok = strings.Cut(strings.Trim(v, "() "), ",")
	} else {
		a, b, ok = strings.Cut(v, ".")
		ok = ok && len(b) == 9
	}
	s, err1 := strconv.ParseUint(strings.TrimSpace(a), 10, 64)
	ns, err2 := strconv.ParseUint(strings.TrimSpace(b), 10, 64)
	if !ok || err1 != nil || err2 != nil || ns >= 1e9 {
		return Timespec{}, false
	}
	return Timespec{s, ns}, true
}

func timerfdLines(f *FD, strict bool) ([]string, error) {
	t, err := ParseTimerfd(f, strict)
	return t.Lines(), err
}
