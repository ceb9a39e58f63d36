package dedup

// ProgressFunc is told how far a long operation of a store is: its phase
// and the bytes done of total (page bytes, 4 KiB a page). Calls come from
// one goroutine at a time, and a phase's count never goes back.
type ProgressFunc func(phase string, done, total int64)

// Phases Verify and GC report, in order.
const (
	PhaseVerifyPages = "verify"  // every stored page re-hashed, pack by pack
	PhaseVerifyRefs  = "refs"    // every checkpoint's page references checked (its memory bytes)
	PhaseGCMark      = "mark"    // every checkpoint's page tables walked (its memory bytes)
	PhaseGCSweep     = "sweep"   // the index walked: dead pages found (reported at its end)
	PhaseGCRewrite   = "rewrite" // the live pages of mostly dead packs copied to new ones
	PhaseGCReclaim   = "reclaim" // the database gives its space back (no byte count: 0 of 1, then 1 of 1)
)

// SetProgress makes Verify and GC of s report their progress to f (nil:
// no reports). Call it before they run, not while one does.
func (s *Store) SetProgress(f ProgressFunc) { s.progress = f }

// report tells the progress function, if any.
func (s *Store) report(phase string, done, total int64) {
	if s.progress != nil {
		s.progress(phase, done, total)
	}
}
