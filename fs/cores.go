package fs

import (
	"context"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/ckptfs/ckptfs/image"
)

// Core files live beside the checkpoints, not in them:
//
//	MNT/cores/<id>/<pid>/core          the task as an ELF core file (generated on read)
//	MNT/<id>/tasks/<pid>/core -> ../../../cores/<id>/<pid>/core
//
// A core is as large as the task's memory, so with it inside <id> a
// `cp -a MNT/<id>` held the memory twice. The symlink keeps `gdb exe
// MNT/<id>/tasks/<pid>/core` working in the mount and costs nothing in a
// copy (where it dangles: restore never reads it).

// coresName is the top-level directory of the core files.
const coresName = "cores"

// coreName is the name of a task's core file.
const coreName = "core"

// splitCores moves every tasks/<pid>/core of a rendered checkpoint d into
// a directory <pid>/core it returns, leaving a symlink in its place.
func splitCores(id string, d *image.Dir) *image.Dir {
	cores := &image.Dir{}
	for _, e := range d.Entries {
		tasks, ok := e.Node.(*image.Dir)
		if e.Name != "tasks" || !ok {
			continue
		}
		for _, te := range tasks.Entries {
			td, ok := te.Node.(*image.Dir)
			if !ok {
				continue
			}
			for i, f := range td.Entries {
				if f.Name != coreName {
					continue
				}
				if _, ok := f.Node.(image.File); !ok {
					continue
				}
				one := &image.Dir{}
				one.Add(coreName, f.Node)
				cores.Add(te.Name, one)
				td.Entries[i].Node = &image.Symlink{Target: "../../../" + coresName + "/" + id + "/" + te.Name + "/" + coreName}
			}
		}
	}
	return cores
}

// coresNode is MNT/cores/: one directory per checkpoint id.
type coresNode struct {
	gofs.Inode
	r *root
}

var (
	_ gofs.NodeGetattrer = (*coresNode)(nil)
	_ gofs.NodeLookuper  = (*coresNode)(nil)
	_ gofs.NodeReaddirer = (*coresNode)(nil)
)

func (c *coresNode) fillAttr(a *fuse.Attr) {
	a.Ino = inoCores
	a.Mode = modeDir
	a.Nlink = 2
	a.Owner = c.r.m.owner
}

func (c *coresNode) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.SetTimeout(topTimeout)
	c.fillAttr(&out.Attr)
	return 0
}

func (c *coresNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	rd, err := c.r.renderedOf(name)
	if rd == nil && err == nil {
		c.r.refresh(false)
		rd, err = c.r.renderedOf(name)
	}
	if err != nil {
		c.r.m.logf("%v", err)
		return nil, syscall.EIO
	}
	if rd == nil {
		return nil, syscall.ENOENT
	}
	return newChild(ctx, c.EmbeddedInode(), rd.cores, c.r.m, out)
}

func (c *coresNode) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	c.r.refresh(false)
	c.r.mu.Lock()
	defer c.r.mu.Unlock()
	list := make([]fuse.DirEntry, 0, len(c.r.list))
	for _, s := range c.r.list {
		list = append(list, fuse.DirEntry{Name: s.ID, Mode: syscall.S_IFDIR, Ino: coresIno(c.r.seq[s.ID])})
	}
	return gofs.NewListDirStream(list), 0
}

// coresIno is the inode number of cores/<id> for the checkpoint numbered
// seq: its nodes are numbered from there, above those of <id>/.
func coresIno(seq uint64) uint64 { return seq<<32 | 1<<31 }
