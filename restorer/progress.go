package restorer

// PhasePages is the phase Options.OnProgress reports: memory written into
// the restored processes, in bytes of the checkpoint's saved pages.
const PhasePages = "pages"

// reportPages counts n more bytes of memory written (per task, as each
// task's memory is filled).
func (r *restorer) reportPages(n int64) {
	if r.opts.OnProgress == nil {
		return
	}
	done := r.pagesDone.Add(n)
	r.opts.OnProgress(PhasePages, done, max(r.c.MemoryBytes(), done))
}
