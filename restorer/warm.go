package restorer

import (
	"io"
	"os"
	"path/filepath"
	"sync"

	"github.com/ckptfs/ckptfs/image"
)

// warmTree reads every small file of a mounted checkpoint tree dir (all
// but the vmas' pages and the core files) from several goroutines and
// throws the bytes away, so that image.Load and the page scans, which read
// them one at a time, find entries, attributes and contents in the
// kernel's caches: the mount keeps them (fs/doc.go), and through FUSE each
// file read cold is a few round trips to the mount's process (a 101-task
// tree is some 5000 files). Errors are ignored: Load reports them.
func warmTree(dir string) {
	var dirs []string
	if ents, err := os.ReadDir(filepath.Join(dir, "tasks")); err == nil {
		for _, e := range ents {
			if e.IsDir() {
				dirs = append(dirs, filepath.Join(dir, "tasks", e.Name()))
			}
		}
	}
	if ents, err := os.ReadDir(filepath.Join(dir, "objects")); err == nil {
		for _, e := range ents {
			if e.IsDir() {
				dirs = append(dirs, filepath.Join(dir, "objects", e.Name()))
			}
		}
	}
	work := make(chan string)
	var wg sync.WaitGroup
	for range warmParallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 64<<10)
			for d := range work {
				warmDir(d, buf)
			}
		}()
	}
	for _, d := range dirs {
		work <- d
	}
	close(work)
	wg.Wait()
}

// warmParallel is how many goroutines warmTree reads with: enough requests
// in flight to keep the mount's process busy on every CPU.
const warmParallel = 8

// warmDir reads every regular file below d but pages and core files
// (buf: a read buffer; io.Discard's ReaderFrom would take its own).
func warmDir(d string, buf []byte) {
	filepath.WalkDir(d, func(p string, e os.DirEntry, err error) error {
		if err != nil || !e.Type().IsRegular() {
			return nil
		}
		switch e.Name() {
		case "pages", "core":
			return nil
		}
		f, err := image.OpenTreeFile(p)
		if err != nil {
			return nil
		}
		io.CopyBuffer(struct{ io.Writer }{io.Discard}, f, buf)
		f.Close()
		return nil
	})
}
