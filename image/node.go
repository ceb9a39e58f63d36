package image

import (
	"io"
	"os"
	"sync"
)

// Node is one entry of a rendered checkpoint tree: *Dir, *Symlink or a File.
type Node interface{ isNode() }

// Dir is a directory; entries keep their order.
type Dir struct {
	Entries []Entry
}

// Entry names a node inside a Dir.
type Entry struct {
	Name string
	Node Node
}

// Symlink is a symbolic link to Target (which need not exist).
type Symlink struct {
	Target string
}

// File is a regular read-only file. Size may generate the content (core files).
type File interface {
	Node
	Size() (int64, error)
	io.ReaderAt
}

// SparseFile is a File with holes; NextData and NextHole implement
// SEEK_DATA and SEEK_HOLE: NextData returns the first offset >= off that
// holds data, or ok=false if none does; NextHole the first offset >= off in
// a hole (the file size if the rest is data).
type SparseFile interface {
	File
	NextData(off int64) (int64, bool)
	NextHole(off int64) int64
}

func (*Dir) isNode()     {}
func (*Symlink) isNode() {}

// Add appends an entry and returns d for chaining.
func (d *Dir) Add(name string, n Node) *Dir {
	d.Entries = append(d.Entries, Entry{Name: name, Node: n})
	return d
}

// Lookup returns the entry called name, or nil.
func (d *Dir) Lookup(name string) Node {
	for _, e := range d.Entries {
		if e.Name == name {
			return e.Node
		}
	}
	return nil
}

// Bytes is a File whose content is known.
type Bytes []byte

func (Bytes) isNode() {}

// Size returns the length of b.
func (b Bytes) Size() (int64, error) { return int64(len(b)), nil }

// ReadAt reads from b.
func (b Bytes) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(b)) {
		return 0, io.EOF
	}
	n := copy(p, b[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// PageSource reads stored pages by hash; the store implements it.
type PageSource interface {
	// ReadPage fills buf (PageSize bytes) with the page whose hash is h,
	// checking the content against h.
	ReadPage(h Hash, buf []byte) error
}

// Lazy is a File whose content is generated on first use (a vma's pagemap
// is tens of MiB for a large vma: not worth building for every lookup).
type Lazy struct {
	Gen    func() []byte
	Secret bool // the content is private (see Private)
	once   sync.Once
	b      Bytes
}

func (*Lazy) isNode() {}

func (l *Lazy) bytes() Bytes {
	l.once.Do(func() { l.b = l.Gen() })
	return l.b
}

// Size generates the content if needed and returns its length.
func (l *Lazy) Size() (int64, error) { return l.bytes().Size() }

// ReadAt generates the content if needed and reads from it.
func (l *Lazy) ReadAt(p []byte, off int64) (int, error) { return l.bytes().ReadAt(p, off) }

// Secret is Bytes that hold memory or secrets (environ, auxv, registers,
// pending signals, object data): mode 0400 in the tree, so that a `cp -a`
// of a mount keeps them private to their owner.
type Secret []byte

func (Secret) isNode() {}

// Size returns the length of s.
func (s Secret) Size() (int64, error) { return int64(len(s)), nil }

// ReadAt reads from s.
func (s Secret) ReadAt(p []byte, off int64) (int, error) { return Bytes(s).ReadAt(p, off) }

func (Secret) private() {}

// privateNode is implemented by files that hold memory or secrets.
type privateNode interface{ private() }

func (*PagesFile) private() {}

// Private reports a file that holds memory or secrets: pages, pagemap (the
// hashes confirm guesses of page contents), core, environ, auxv, regs,
// xstate, sigpending, objects/*/data.
func Private(n Node) bool {
	switch n := n.(type) {
	case privateNode:
		return true
	case *Lazy:
		return n.Secret
	}
	return false
}

// Mode is the permission bits of a node in the tree: directories 0555,
// symlinks 0777, private files 0400, other files 0444.
func Mode(n Node) os.FileMode {
	switch n.(type) {
	case *Dir:
		return os.ModeDir | 0o555
	case *Symlink:
		return os.ModeSymlink | 0o777
	}
	if Private(n) {
		return 0o400
	}
	return 0o444
}
