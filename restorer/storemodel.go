package restorer

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/ckptfs/ckptfs/image"
)

// The model of a mounted tree from the store. Loading a tree through the
// mount reads every small file of it (status, info of every vma and fd,
// limits, regs...: some 150 per process) one FUSE request or more at a
// time. When the tree is a ckptfs mount of a local store and its page
// data comes from the store (pagesource.go), the checkpoint is taken from
// the same server instead (dedup.Client.Load: the manifest and page tables
// the store keeps, each checked against the hashes the sealed manifest
// records, on the client side too), rendered in memory as the mount
// renders it (image.Render) and loaded from that rendering by the same
// code and checks as a tree on disk (image.LoadRendered): the model is the
// one image.Load of the mount gives. The tree's info file, read through
// the mount, names the checkpoint and must be byte for byte the rendered
// one; otherwise (another server version, a tree that is not that
// checkpoint) the tree is loaded from its files. A copy is always loaded
// from its files.

// loadTree loads the checkpoint of dir: from sp's store when it serves
// the tree (then sp.tree is set: the rendering, whose pagemaps
// scanStorePages reads), else with image.Load. why says, for the log,
// why a mounted tree was read from its files.
//
// With early, the pages of the small tasks are read from the store
// while the model is rendered and loaded (earlypages.go).
func loadTree(dir string, sp *storePages, early bool) (c *image.Checkpoint, why string, err error) {
	if sp != nil && os.Getenv("CKPTFS_NO_STORE_MODEL") == "" {
		c, why = loadFromStore(dir, sp, early)
		if c != nil {
			return c, "", nil
		}
	}
	c, err = image.Load(dir)
	return c, why, err
}

// loadFromStore is loadTree's store path; nil and why when it does not
// apply.
func loadFromStore(dir string, sp *storePages, early bool) (_ *image.Checkpoint, why string) {
	info, err := readTreeInfo(dir)
	if err != nil {
		return nil, err.Error()
	}
	id, ok := infoID(info)
	if !ok {
		return nil, "its info names no checkpoint id"
	}
	tasks, pages, sized := infoSize(info)
	if sized && !storeModelPays(tasks, pages) {
		return nil, fmt.Sprintf("%d task(s) of %d pages: fewer files than page references", tasks, pages)
	}
	var arena *earlyArena
	if early && sized {
		arena = startEarlyArena(tasks, pages) // faulted in while the server loads
	}
	sc, err := sp.client.Load(id)
	if err != nil {
		return nil, fmt.Sprintf("load %s from store %s: %v", id, sp.store, err)
	}
	if sc.ID != id {
		return nil, fmt.Sprintf("store %s gave checkpoint %q for %q", sp.store, sc.ID, id)
	}
	if early {
		sp.early = startEarlyPages(sp, sc, sp.pf, arena)
		defer func() {
			if why != "" {
				sp.early.drop()
				sp.early = nil
			}
		}()
	}
	d := image.Render(sc, nil)
	mine, err := image.ReadRendered(dir, d, "info")
	if err != nil || !bytes.Equal(mine, info) {
		return nil, "its info is not the store's rendering of " + id
	}
	c, err := image.LoadRendered(dir, d)
	if err != nil {
		// The same checks as image.Load of the mount: what fails here
		// fails there. Let image.Load say it, naming the tree's files.
		return nil, fmt.Sprintf("checkpoint %s from store %s: %v", id, sp.store, err)
	}
	sp.tree = d
	return c, ""
}

// Loading through the mount costs about 10 ms a task (some 150 small
// files); loading from the store costs about 0.8 µs a saved page (the
// page tables come over the socket and are rendered), measured with a
// 101-task tree and a 1 GiB task. The store pays when a checkpoint has
// many tasks for its pages.
const pagesPerTaskFile = 13000 // page references that cost as much as a task's files

// storeModelPays says whether a checkpoint of tasks tasks and pages saved
// pages loads faster from the store than through the mount.
func storeModelPays(tasks, pages int64) bool {
	return tasks*pagesPerTaskFile > pages
}

// infoSize returns the task and page counts an info file gives.
func infoSize(info []byte) (tasks, pages int64, ok bool) {
	var haveT, haveP bool
	for line := range strings.Lines(string(info)) {
		k, v, _ := strings.Cut(strings.TrimSuffix(line, "\n"), ": ")
		n, err := strconv.ParseInt(v, 10, 64)
		switch {
		case err != nil:
		case k == "tasks":
			tasks, haveT = n, true
		case k == "pages_total":
			pages, haveP = n, true
		}
	}
	return tasks, pages, haveT && haveP
}

// readTreeInfo reads dir/info (a regular file, not followed).
func readTreeInfo(dir string) ([]byte, error) {
	f, err := image.OpenTreeFile(filepath.Join(dir, "info"))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, 1<<20))
}

// infoID returns the checkpoint id an info file names ("id: \"...\"").
func infoID(info []byte) (string, bool) {
	for line := range strings.Lines(string(info)) {
		v, ok := strings.CutPrefix(strings.TrimSuffix(line, "\n"), "id: ")
		if !ok {
			continue
		}
		id, err := image.UnquoteText(v)
		return id, err == nil && id != ""
	}
	return "", false
}

// renderedVMAs returns the vmas of task pid as the rendering tree shows
// them, by directory name: their pages are the lines of their pagemaps
// (with the pages other tasks saved of a shared anonymous object).
func renderedVMAs(tree *image.Dir, pid int) (map[string]*image.VMA, error) {
	var n image.Node = tree
	for _, name := range []string{"tasks", strconv.Itoa(pid), "vmas"} {
		d, ok := n.(*image.Dir)
		if ok {
			n = d.Lookup(name)
		}
		if !ok || n == nil {
			return nil, fmt.Errorf("rendered tree: task %d: no vmas", pid)
		}
	}
	vd, ok := n.(*image.Dir)
	if !ok {
		return nil, fmt.Errorf("rendered tree: task %d: no vmas", pid)
	}
	out := make(map[string]*image.VMA, len(vd.Entries))
	for _, e := range vd.Entries {
		if d, ok := e.Node.(*image.Dir); ok {
			if pf, ok := d.Lookup("pages").(*image.PagesFile); ok {
				out[e.Name] = pf.VMA
			}
		}
	}
	return out, nil
}

// renderedRefs returns the pages of vma v from its rendering w, checked
// as readPagemap checks a pagemap file.
func renderedRefs(w, v *image.VMA) ([]image.PageRef, error) {
	if w == nil || w.Start != v.Start || w.End != v.End {
		return nil, fmt.Errorf("rendered tree: no pages for the vma")
	}
	npages := v.Len() / image.PageSize
	for i, r := range w.Pages {
		if uint64(r.Index) >= npages || (i > 0 && r.Index <= w.Pages[i-1].Index) {
			return nil, fmt.Errorf("rendered tree: page %d at index %d out of the vma or of order", i, r.Index)
		}
	}
	return w.Pages, nil
}

// LoadTree loads the checkpoint tree in dir as Restore does: from the
// store a mount of a local store serves (fromStore), else from the tree's
// files with image.Load. VMA.Pages is empty either way.
func LoadTree(dir string) (c *image.Checkpoint, fromStore bool, err error) {
	sp, _ := openStorePages(dir)
	defer sp.close()
	c, _, err = loadTree(dir, sp, false)
	return c, err == nil && sp != nil && sp.tree != nil, err
}
