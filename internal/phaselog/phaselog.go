// Package phaselog writes one line per phase of a long operation (dump,
// restore) with the phase's duration and the total so far, for -v.
package phaselog

import (
	"fmt"
	"io"
	"time"
)

// Log times phases from its start. The zero value of W discards.
type Log struct {
	W      io.Writer
	Prefix string // "dump", "restore"
	Start  time.Time
	last   time.Time
}

// New starts a log at start.
func New(w io.Writer, prefix string, start time.Time) *Log {
	return &Log{W: w, Prefix: prefix, Start: start}
}

// Printf ends a phase: its name, how long since the previous phase ended
// and since the start.
func (l *Log) Printf(format string, args ...any) {
	if l == nil || l.W == nil {
		return
	}
	now := time.Now()
	if l.last.IsZero() {
		l.last = l.Start
	}
	fmt.Fprintf(l.W, "%s: %-40s %8.2f ms (total %8.2f ms)\n", l.Prefix, fmt.Sprintf(format, args...),
		ms(now.Sub(l.last)), ms(now.Sub(l.Start)))
	l.last = now
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
