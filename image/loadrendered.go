package image

import (
	"fmt"
	"io"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// treeReader is what Load reads a tree through: the files below a
// directory (treeRoot) or a rendered tree in memory (renderedRoot).
type treeReader interface {
	readFile(rel string) ([]byte, error)
	lstat(rel string) (uint32, error) // S_IFREG, S_IFDIR, S_IFLNK; 0: missing
	readlink(rel string) (string, error)
	readDir(rel string) ([]string, error)
}

// LoadRendered is Load of the tree that Render(c, nil) lays out, read from
// memory instead of from a mount of it: the model it returns, and every
// check it makes on the way, are those of Load of a mount that renders c
// (dir, the tree's path, is only named in errors). A restorer that has the
// checkpoint from the store a mount serves uses it to skip reading the
// thousands of small files of the mount one by one.
func LoadRendered(dir string, d *Dir) (*Checkpoint, error) {
	l := loader{dir: dir, root: newRenderedRoot(dir, d)}
	c := l.checkpoint()
	if l.err != nil {
		return nil, l.err
	}
	return c, nil
}

// ReadRendered reads the regular file rel (say a vma's pagemap) of the
// rendered tree d, whose path dir is named in errors.
func ReadRendered(dir string, d *Dir, rel string) ([]byte, error) {
	return newRenderedRoot(dir, d).readFile(rel)
}

// renderedRoot reads a rendered tree; directories of many entries get a
// name index on first lookup.
type renderedRoot struct {
	dir  string
	root *Dir

	mu    sync.Mutex
	index map[*Dir]map[string]Node
}

func newRenderedRoot(dir string, d *Dir) *renderedRoot {
	return &renderedRoot{dir: dir, root: d, index: map[*Dir]map[string]Node{}}
}

func (r *renderedRoot) path(rel string) string { return filepath.Join(r.dir, rel) }

// child returns the entry name of d, nil if there is none.
func (r *renderedRoot) child(d *Dir, name string) Node {
	if len(d.Entries) < 16 {
		return d.Lookup(name)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	ix := r.index[d]
	if ix == nil {
		ix = make(map[string]Node, len(d.Entries))
		for _, e := range d.Entries {
			if _, dup := ix[e.Name]; !dup {
				ix[e.Name] = e.Node
			}
		}
		r.index[d] = ix
	}
	return ix[name]
}

// walk finds rel below the root without following symlinks, as treeRoot
// resolves with RESOLVE_NO_SYMLINKS: nil (and no error) if it is missing.
func (r *renderedRoot) walk(rel string) (Node, error) {
	var n Node = r.root
	if !cleanRel(rel) {
		rel = filepath.Clean(rel)
	}
	if rel == "." {
		return n, nil
	}
	if filepath.IsAbs(rel) || rel == ".." || strings.HasPrefix(rel, "../") {
		return nil, fmt.Errorf("checkpoint file %s: outside the tree", r.path(rel))
	}
	for rest, done := rel, 0; ; {
		name, tail, more := strings.Cut(rest, "/")
		switch d := n.(type) {
		case *Dir:
			if n = r.child(d, name); n == nil {
				return nil, nil
			}
		case *Symlink:
			return nil, fmt.Errorf("checkpoint file %s: is or passes through a symlink, which a tree file may not: %w", r.path(rel), unix.ELOOP)
		default:
			return nil, fmt.Errorf("checkpoint file %s: %w", r.path(strings.TrimSuffix(rel[:done], "/")), unix.ENOTDIR)
		}
		if !more {
			return n, nil
		}
		done += len(name) + 1
		rest = tail
	}
}

// cleanRel says whether rel is a relative path that filepath.Clean keeps
// as it is: names between single slashes, none of them "." or "..".
func cleanRel(rel string) bool {
	if rel == "" || rel[0] == '/' {
		return false
	}
	for rest := rel; ; {
		name, tail, more := strings.Cut(rest, "/")
		if name == "" || name == "." || name == ".." {
			return false
		}
		if !more {
			return true
		}
		rest = tail
	}
}

func nodeType(n Node) uint32 {
	switch n.(type) {
	case *Dir:
		return unix.S_IFDIR
	case *Symlink:
		return unix.S_IFLNK
	case File:
		return unix.S_IFREG
	}
	return 0
}

func (r *renderedRoot) missing(rel string) error {
	return fmt.Errorf("checkpoint file %s: open %s: %w", r.path(rel), r.path(rel), unix.ENOENT)
}

func (r *renderedRoot) readFile(rel string) ([]byte, error) {
	n, err := r.walk(rel)
	if err != nil {
		return nil, err
	}
	if n == nil {
		return nil, r.missing(rel)
	}
	switch n := n.(type) {
	case *Symlink:
		return nil, fmt.Errorf("checkpoint file %s: is or passes through a symlink, which a tree file may not: %w", r.path(rel), unix.ELOOP)
	case File:
		size, err := n.Size()
		if err != nil {
			return nil, fmt.Errorf("checkpoint file %s: %w", r.path(rel), err)
		}
		b := make([]byte, size)
		if k, err := n.ReadAt(b, 0); k != len(b) && err != nil && err != io.EOF {
			return nil, fmt.Errorf("checkpoint file %s: %w", r.path(rel), err)
		} else if k != len(b) {
			return nil, fmt.Errorf("checkpoint file %s: short read", r.path(rel))
		}
		return b, nil
	}
	return nil, fmt.Errorf("checkpoint file %s is %s, not a regular file", r.path(rel), fileType(nodeType(n)))
}

func (r *renderedRoot) lstat(rel string) (uint32, error) {
	n, err := r.walk(rel)
	if err != nil || n == nil {
		return 0, err
	}
	return nodeType(n), nil
}

func (r *renderedRoot) readlink(rel string) (string, error) {
	n, err := r.walk(rel)
	if err != nil {
		return "", err
	}
	if n == nil {
		return "", r.missing(rel)
	}
	s, ok := n.(*Symlink)
	if !ok {
		return "", fmt.Errorf("checkpoint file %s is not a symlink", r.path(rel))
	}
	return s.Target, nil
}

func (r *renderedRoot) readDir(rel string) ([]string, error) {
	n, err := r.walk(rel)
	if err != nil {
		return nil, err
	}
	if n == nil {
		return nil, r.missing(rel)
	}
	d, ok := n.(*Dir)
	if !ok {
		return nil, fmt.Errorf("checkpoint dir %s: %w", r.path(rel), unix.ENOTDIR)
	}
	names := make([]string, len(d.Entries))
	for i, e := range d.Entries {
		names[i] = e.Name
	}
	sort.Strings(names)
	return names, nil
}
