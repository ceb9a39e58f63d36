package main

import (
	"io"
	"os"
	"sync"
	"time"

	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
	"golang.org/x/term"
)

// progress shows how far a long operation is: on a terminal (stderr), one
// bar per phase with bytes, rate and ETA, drawn by mpb, with every log
// line printed above the bars; with --json, a status line on stdout at
// most once a second per phase; otherwise (stderr is a file or a pipe,
// --quiet) nothing.
type progress struct {
	mu       sync.Mutex
	p        *mpb.Progress // nil: no bars
	json     bool
	bars     map[string]*mpb.Bar
	started  map[string]time.Time
	lastJSON map[string]time.Time
	done     map[string]int64
}

// current is the progress display of this process, if one is up: log
// output goes through it.
var (
	currentMu sync.Mutex
	current   *progress
)

// stderrIsTerminal is a variable for tests.
var stderrIsTerminal = func() bool { return term.IsTerminal(int(os.Stderr.Fd())) }

// newProgress starts the display the global flags and stderr allow; it is
// never nil (a display of nothing when there is nothing to show).
func newProgress() *progress {
	u := &progress{bars: map[string]*mpb.Bar{}, started: map[string]time.Time{},
		lastJSON: map[string]time.Time{}, done: map[string]int64{}}
	switch {
	case globals.quiet:
	case globals.json:
		u.json = true
	case stderrIsTerminal():
		u.p = mpb.New(mpb.WithOutput(os.Stderr), mpb.WithWidth(40), mpb.WithRefreshRate(150*time.Millisecond))
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

// update says phase has done of total bytes. Calls may come from several
// goroutines; a count never goes back.
func (u *progress) update(phase string, done, total int64) {
	if u == nil || (u.p == nil && !u.json) {
		return
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if done < u.done[phase] {
		return
	}
	u.done[phase] = done
	now := time.Now()
	start, ok := u.started[phase]
	if !ok {
		start = now
		u.started[phase] = now
	}
	if u.json {
		if now.Sub(u.lastJSON[phase]) < time.Second && done < total {
			return
		}
		u.lastJSON[phase] = now
		m := statusMessage{MessageType: "status", Phase: phase, BytesDone: done, BytesTotal: total,
			SecondsElapsed: now.Sub(start).Seconds()}
		if total > 0 {
			m.PercentDone = float64(done) / float64(total)
			if done > 0 && done < total {
				m.SecondsRemaining = now.Sub(start).Seconds() * float64(total-done) / float64(done)
			}
		}
		writeJSONLine(os.Stdout, m)
		return
	}
	b := u.bars[phase]
	if b == nil {
		b = u.p.New(total, mpb.BarStyle(),
			mpb.PrependDecorators(
				decor.Name(phase, decor.WC{W: 8, C: decor.DindentRight}),
				decor.CountersKibiByte("% .1f / % .1f", decor.WC{W: 22}),
			),
			mpb.AppendDecorators(
				decor.NewAverageSpeed(decor.SizeB1024(0), "% .1f", start, decor.WC{W: 14}),
				decor.OnComplete(decor.Name(" ETA "), "  in "),
				decor.OnComplete(decor.NewAverageETA(decor.ET_STYLE_GO, start, nil), ""),
				decor.OnComplete(decor.Name(""), ""),
			),
		)
		u.bars[phase] = b
	}
	if total > 0 {
		b.SetTotal(total, false)
	}
	b.SetCurrent(done)
	if done >= total {
		b.SetTotal(done, true)
	}
}

// finish ends every bar (complete or not) and takes the display down; log
// lines go straight to stderr again.
func (u *progress) finish() {
	if u == nil || u.p == nil {
		return
	}
	u.mu.Lock()
	for _, b := range u.bars {
		if !b.Completed() {
			b.Abort(false)
		}
	}
	u.mu.Unlock()
	u.p.Wait()
	currentMu.Lock()
	if current == u {
		current = nil
	}
	currentMu.Unlock()
}

// logOutput is where log lines go: above the progress bars while they are
// up, else stderr.
func logOutput() io.Writer {
	return lineWriter{}
}

type lineWriter struct{}

func (lineWriter) Write(b []byte) (int, error) {
	currentMu.Lock()
	u := current
	currentMu.Unlock()
	if u != nil {
		if n, err := u.p.Write(b); err == nil {
			return n, nil
		}
	}
	return os.Stderr.Write(b)
}

// startSpinner shows name with the time elapsed on a terminal while an
// operation with no byte count runs (verify and gc report none); the
// returned func takes it down.
func startSpinner(name string) (stop func()) {
	if globals.quiet || globals.json || !stderrIsTerminal() {
		return func() {}
	}
	u := newProgress()
	b := u.p.New(0, mpb.SpinnerStyle(),
		mpb.PrependDecorators(decor.Name(name, decor.WC{W: 8, C: decor.DindentRight})),
		mpb.AppendDecorators(decor.Elapsed(decor.ET_STYLE_GO)))
	return func() {
		b.SetTotal(1, true)
		u.finish()
	}
}
