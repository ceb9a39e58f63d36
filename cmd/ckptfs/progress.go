package main

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
	"golang.org/x/term"

	"github.com/ckptfs/ckptfs/dedup"
	"github.com/ckptfs/ckptfs/internal/human"
)

// progress shows how far a long operation is: on a terminal (stderr), one
// bar per phase with bytes, rate and ETA, drawn by mpb, with every log
// line printed above the bars (never into them); with --json, a status
// line on stdout at most once a second per phase and at its end;
// otherwise (stderr is a file or a pipe, --quiet) nothing.
//
// The bars live in an mpb container that is taken down once all of them
// are complete and a log line comes (mpb draws no more then): the line
// goes below the finished bars, and the next phase gets a new container.
type progress struct {
	mu       sync.Mutex
	tty      bool          // draw bars
	p        *mpb.Progress // the container of the bars on screen, nil: none
	json     bool
	bars     map[string]*mpb.Bar // of p
	lastJSON map[string]time.Time
	done     map[string]int64

	statMu  sync.Mutex // guards started and last, read by the decorators
	started map[string]time.Time
	last    map[string]time.Time
}

// current is the progress display of this process, if one draws: log
// output goes through it.
var (
	currentMu sync.Mutex
	current   *progress
)

// stderrIsTerminal reports whether stderr is a terminal with a size
// (bars need its rows and columns).
func stderrIsTerminal() bool {
	fd := int(os.Stderr.Fd())
	if !term.IsTerminal(fd) {
		return false
	}
	w, h, err := term.GetSize(fd)
	return err == nil && w > 0 && h > 0
}

// newProgress starts the display the global flags and stderr allow; it is
// never nil (a display of nothing when there is nothing to show).
func newProgress() *progress {
	u := &progress{bars: map[string]*mpb.Bar{}, started: map[string]time.Time{},
		lastJSON: map[string]time.Time{}, done: map[string]int64{}, last: map[string]time.Time{}}
	switch {
	case globals.quiet:
	case globals.json:
		u.json = true
	case stderrIsTerminal():
		u.tty = true
		currentMu.Lock()
		current = u
		currentMu.Unlock()
	}
	return u
}

// statusMessage is a --json progress line.
type statusMessage struct {
	MessageType      string  `json:"message_type"` // "status"
	Phase            string  `json:"phase"`
	BytesDone        int64   `json:"bytes_done"`
	BytesTotal       int64   `json:"bytes_total"`
	PercentDone      float64 `json:"percent_done"`
	SecondsElapsed   float64 `json:"seconds_elapsed"`
	SecondsRemaining float64 `json:"seconds_remaining,omitempty"`
}

// Phases whose bars differ: the copy's total grows as tasks are read; the
// commit and gc's reclaim have no byte count (spinners).
const (
	phaseCopy   = "copy"
	phaseCommit = "commit"
)

// spinnerPhase says whether phase has no byte count: its bar is a spinner
// with its time, complete when done reaches total.
func spinnerPhase(phase string) bool { return phase == phaseCommit || phase == dedup.PhaseGCReclaim }

// update says phase has done of total bytes. Calls may come from several
// goroutines; a count never goes back.
func (u *progress) update(phase string, done, total int64) {
	if u == nil || (!u.tty && !u.json) {
		return
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if done < u.done[phase] {
		return
	}
	u.done[phase] = done
	now := time.Now()
	u.statMu.Lock()
	start, ok := u.started[phase]
	if !ok {
		start = now
		u.started[phase] = now
	}
	u.last[phase] = now
	u.statMu.Unlock()
	if done == 0 && total == 0 && !spinnerPhase(phase) {
		return // started, nothing to show yet (a restore's verify may have nothing to do)
	}
	if u.json {
		u.status(phase, done, total, now, start)
		return
	}
	if u.p == nil {
		u.p = mpb.New(mpb.WithOutput(os.Stderr), mpb.WithWidth(40), mpb.WithRefreshRate(150*time.Millisecond))
	}
	b := u.bars[phase]
	if b == nil {
		// A new phase: the ones before it are over.
		for _, prev := range u.bars {
			prev.SetTotal(-1, true)
		}
		b = u.newBar(phase, total)
		u.bars[phase] = b
	}
	if spinnerPhase(phase) {
		if done >= total {
			b.SetTotal(1, true)
		}
		return
	}
	b.SetTotal(max(total, done), false)
	b.SetCurrent(done)
	// The copy's total grows task by task: it ends when the store starts.
	if total > 0 && done >= total && phase != phaseCopy {
		b.SetTotal(-1, true)
	}
}

// status prints a --json status line, at most once a second per phase
// and at its end.
func (u *progress) status(phase string, done, total int64, now, start time.Time) {
	if now.Sub(u.lastJSON[phase]) < time.Second && done < total {
		return
	}
	u.lastJSON[phase] = now
	m := statusMessage{MessageType: "status", Phase: phase, BytesDone: done, BytesTotal: max(total, done),
		SecondsElapsed: now.Sub(start).Seconds()}
	if m.BytesTotal > 0 {
		m.PercentDone = float64(done) / float64(m.BytesTotal)
		if done > 0 && done < total {
			m.SecondsRemaining = now.Sub(start).Seconds() * float64(total-done) / float64(done)
		}
	}
	writeJSONLine(os.Stdout, m)
}

// newBar makes the bar of a phase: bytes done of total, rate and ETA,
// "done in" its time once complete; the commit is a spinner with its time.
func (u *progress) newBar(phase string, total int64) *mpb.Bar {
	name := decor.Name(phase, decor.WC{W: 8, C: decor.DindentRight})
	if spinnerPhase(phase) {
		return u.p.New(0, mpb.SpinnerStyle(), mpb.PrependDecorators(name),
			mpb.AppendDecorators(decor.Any(func(decor.Statistics) string { return human.Duration(u.elapsed(phase)) })))
	}
	return u.p.New(total, mpb.BarStyle(),
		mpb.PrependDecorators(name, decor.CountersKibiByte("% .1f / % .1f", decor.WC{W: 22})),
		mpb.AppendDecorators(decor.Any(func(st decor.Statistics) string {
			d := u.elapsed(phase)
			rate := human.Rate(st.Current, d)
			if st.Completed || st.Aborted {
				return fmt.Sprintf("%12s  done in %s", rate, human.Duration(d))
			}
			eta := "?"
			if st.Current > 0 && d > 0 {
				eta = human.Duration(time.Duration(float64(d) * float64(st.Total-st.Current) / float64(st.Current)))
			}
			return fmt.Sprintf("%12s  ETA %s", rate, eta)
		})))
}

// elapsed is the time from the first to the last update of a phase: it
// stops when the phase does.
func (u *progress) elapsed(phase string) time.Duration {
	u.statMu.Lock()
	defer u.statMu.Unlock()
	return u.last[phase].Sub(u.started[phase])
}

// closeBars takes the container down (under mu): incomplete bars stay as
// they are.
func (u *progress) closeBars() {
	if u.p == nil {
		return
	}
	for _, b := range u.bars {
		if !b.Completed() {
			b.Abort(false)
		}
	}
	u.p.Wait()
	u.p, u.bars = nil, map[string]*mpb.Bar{}
}

// writeLine prints a log line above the bars, or below finished ones.
func (u *progress) writeLine(b []byte) (int, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.p != nil {
		complete := true
		for _, bar := range u.bars {
			complete = complete && bar.Completed()
		}
		if !complete {
			if n, err := u.p.Write(b); err == nil {
				return n, nil
			}
		}
		u.closeBars()
	}
	return os.Stderr.Write(b)
}

// finish ends every bar (complete or not) and the display; log lines go
// straight to stderr again.
func (u *progress) finish() {
	if u == nil || !u.tty {
		return
	}
	u.mu.Lock()
	u.closeBars()
	u.mu.Unlock()
	currentMu.Lock()
	if current == u {
		current = nil
	}
	currentMu.Unlock()
}

// logOutput is where log lines go: above the progress bars while they are
// up, else stderr.
func logOutput() io.Writer { return lineWriter{} }

type lineWriter struct{}

func (lineWriter) Write(b []byte) (int, error) {
	currentMu.Lock()
	u := current
	currentMu.Unlock()
	if u != nil {
		return u.writeLine(b)
	}
	return os.Stderr.Write(b)
}

// storeProgress shows the progress of a store's Verify or GC (name) and
// returns the func that ends it: bars (or --json status lines, if
// statusLines) for a local store, which reports its phases; a spinner with
// the time elapsed for one reached through its mount or a remote one,
// which report none.
func storeProgress(r dedup.Repo, name string, statusLines bool) (stop func()) {
	pr, ok := r.(interface{ SetProgress(dedup.ProgressFunc) })
	if !ok {
		return startSpinner(name)
	}
	if globals.json && !statusLines {
		return func() {}
	}
	ui := newProgress()
	pr.SetProgress(ui.update)
	return func() {
		pr.SetProgress(nil)
		ui.finish()
	}
}

// startSpinner shows name with the time elapsed on a terminal while an
// operation with no byte count runs; the returned func takes it down.
func startSpinner(name string) (stop func()) {
	if globals.quiet || globals.json || !stderrIsTerminal() {
		return func() {}
	}
	start := time.Now()
	p := mpb.New(mpb.WithOutput(os.Stderr), mpb.WithWidth(40))
	b := p.New(0, mpb.SpinnerStyle(),
		mpb.PrependDecorators(decor.Name(name, decor.WC{W: 8, C: decor.DindentRight})),
		mpb.AppendDecorators(decor.Any(func(decor.Statistics) string { return human.Duration(time.Since(start)) })))
	return func() {
		b.SetTotal(1, true)
		p.Wait()
	}
}
