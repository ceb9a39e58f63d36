package dumper

import "github.com/ckptfs/ckptfs/image"

// Phases of a dump as Options.OnProgress names them.
const (
	PhaseCopy   = "copy"   // pages read out of the frozen tree
	PhaseStore  = "store"  // pages hashed and the new ones stored
	PhaseCommit = "commit" // page tables and manifest written
)

// report passes progress on to Options.OnProgress.
func (d *dump) report(phase string, done, total int64) {
	if d.opts.OnProgress != nil {
		d.opts.OnProgress(phase, done, total)
	}
}

// reportStored counts a chunk of pages the workers finished storing. The
// copy is over by then (but while a pre-copy pass streams), so m.read is
// the total.
func (m *memCopier) reportStored(pages int) {
	if m.opts.OnProgress == nil {
		return
	}
	done := m.storedB.Add(int64(pages) * image.PageSize)
	m.opts.OnProgress(PhaseStore, done, m.read.Load())
}
