package image

import "math"

// Pipe is the info of a pipe or FIFO object (objects/pipe-<ino>): its
// inode and capacity; its data are the bytes in flight. A named FIFO is
// one whose fds have its path (kind pipe, path not "pipe:[ino]").
type Pipe struct {
	Ino      uint64
	Capacity int // F_GETPIPE_SZ
}

// Info renders p as its info lines.
func (p *Pipe) Info() []string {
	var w lineWriter
	w.add("ino", "%d", p.Ino)
	w.add("capacity", "%d", p.Capacity)
	return w
}

// Object is the object of pipe p holding data.
func (p *Pipe) Object(data []byte) *Object {
	return &Object{ID: PipeID(p.Ino), Kind: ObjPipe, Info: p.Info(), Data: data}
}

// PipeID names the object of the pipe with inode ino.
func PipeID(ino uint64) string { return "pipe-" + u64(ino) }

// ParsePipe reads the info of pipe object o.
func ParsePipe(o *Object, strict bool) (*Pipe, error) {
	k := readKindLines("object "+o.ID, o.Info, []string{"ino", "capacity"}, nil, strict)
	p := &Pipe{Ino: k.uint("ino", 10, 64), Capacity: int(k.int("capacity", 0, math.MaxInt32))}
	return p, k.err
}

func parsePipeInfo(o *Object, strict bool) ([]string, error) {
	p, err := ParsePipe(o, strict)
	return p.Info(), err
}
