package image

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// WriteTree writes a rendered tree into dir (created if missing) as plain
// files, keeping sparse files sparse. It is what `cp -a` of a mount gives:
// files that Private reports get mode 0400 (created 0600, never readable by
// others), others 0644.
func WriteTree(dir string, root *Dir) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("write tree: %w", err)
	}
	for _, e := range root.Entries {
		p := filepath.Join(dir, e.Name)
		var err error
		switch n := e.Node.(type) {
		case *Dir:
			err = WriteTree(p, n)
		case *Symlink:
			err = os.Symlink(n.Target, p)
		case SparseFile:
			err = writeSparse(p, n)
		case File:
			err = writeFile(p, n)
		}
		if err == nil && Private(e.Node) {
			err = os.Chmod(p, 0o400)
		}
		if err != nil {
			return fmt.Errorf("write %s: %w", p, err)
		}
	}
	return nil
}

func writeFile(path string, f File) error {
	size, err := f.Size()
	if err != nil {
		return err
	}
	out, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, fileMode(f))
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, io.NewSectionReader(f, 0, size)); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func writeSparse(path string, f SparseFile) error {
	size, err := f.Size()
	if err != nil {
		return err
	}
	out, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, fileMode(f))
	if err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	for off := int64(0); ; {
		start, ok := f.NextData(off)
		if !ok {
			break
		}
		end := f.NextHole(start)
		for o := start; o < end; {
			n := min(int64(len(buf)), end-o)
			if _, err := f.ReadAt(buf[:n], o); err != nil && err != io.EOF {
				out.Close()
				return err
			}
			if _, err := out.WriteAt(buf[:n], o); err != nil {
				out.Close()
				return err
			}
			o += n
		}
		off = end
	}
	if err := out.Truncate(size); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// fileMode is the mode a file is created with: private ones 0600 until
// WriteTree makes them 0400.
func fileMode(f File) os.FileMode {
	if Private(f) {
		return 0o600
	}
	return 0o644
}
