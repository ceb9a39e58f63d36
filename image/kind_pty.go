package image

import (
	"encoding/hex"
	"fmt"
	"math"
	"strconv"
)

// FDPty is a pty master (/dev/ptmx). Its one line is the kernel's
//
//	tty-index: 3              the pair's index: its slave is /dev/pts/3
//
// and it refers to the pair's object pty-<index>. A slave fd (/dev/pts/N,
// kind chr) refers to that object too when the master is in the
// checkpoint; a slave whose master is outside (the user's terminal) has
// none and is restored with --shell-job only.
const FDPty = "pty"

// ObjPty is a pty pair (objects/pty-<index>): Info is Pty; Data the bytes
// queued for the slave to read (ToSlave of them) then those queued for the
// master to read (ToMaster).
const ObjPty = "pty"

// PtyMasterIndex reads the tty-index line of pty master fd f.
func PtyMasterIndex(f *FD, strict bool) (int, error) {
	k := fdKindLines(f, []string{"tty-index"}, nil, strict)
	return int(k.int("tty-index", 0, 1<<20)), k.err
}

func ptyLines(f *FD, strict bool) ([]string, error) {
	n, err := PtyMasterIndex(f, strict)
	var w lineWriter
	w.add("tty-index", "%d", n)
	return w, err
}

// PtyID names the object of the pty pair with index n.
func PtyID(n int) string { return "pty-" + strconv.Itoa(n) }

// Pty is the state of a pty pair, read from its master while the tree is
// frozen:
//
//	index: 3                       /dev/pts/3
//	uid: 1000 / gid: 5 / mode: 0620 the slave's owner and permissions
//	iflag: 0x500 ...               the slave's termios (hex), line
//	cc: 03 1c 7f ...               its control characters (hex)
//	ispeed: 38400 / ospeed: 38400
//	rows: 24 / cols: 80 / xpixel: 0 / ypixel: 0   the window size
//	packet: 0                      the master is in packet mode (TIOCPKT)
//	locked: 0                      the slave is locked (TIOCSPTLCK)
//	to-slave: 0 / to-master: 12    bytes of Data queued in each direction
type Pty struct {
	Index                      int
	UID, GID, Mode             uint32
	Iflag, Oflag, Cflag, Lflag uint32
	Line                       uint8
	CC                         []byte
	Ispeed, Ospeed             uint32
	Rows, Cols, Xpixel, Ypixel uint16
	Packet, Locked             bool
	ToSlave, ToMaster          int
}

var ptyKeys = []string{"index", "uid", "gid", "mode", "iflag", "oflag", "cflag", "lflag", "line", "cc",
	"ispeed", "ospeed", "rows", "cols", "xpixel", "ypixel", "packet", "locked", "to-slave", "to-master"}

// Info renders p as its info lines.
func (p *Pty) Info() []string {
	var w lineWriter
	w.add("index", "%d", p.Index)
	w.add("uid", "%d", p.UID)
	w.add("gid", "%d", p.GID)
	w.add("mode", "%#o", p.Mode)
	w.add("iflag", "%#x", p.Iflag)
	w.add("oflag", "%#x", p.Oflag)
	w.add("cflag", "%#x", p.Cflag)
	w.add("lflag", "%#x", p.Lflag)
	w.add("line", "%d", p.Line)
	w.add("cc", "%s", hex.EncodeToString(p.CC))
	w.add("ispeed", "%d", p.Ispeed)
	w.add("ospeed", "%d", p.Ospeed)
	w.add("rows", "%d", p.Rows)
	w.add("cols", "%d", p.Cols)
	w.add("xpixel", "%d", p.Xpixel)
	w.add("ypixel", "%d", p.Ypixel)
	w.add("packet", "%d", boolInt(p.Packet))
	w.add("locked", "%d", boolInt(p.Locked))
	w.add("to-slave", "%d", p.ToSlave)
	w.add("to-master", "%d", p.ToMaster)
	return w
}

// Object is the object of pty p holding toSlave then toMaster.
func (p *Pty) Object(toSlave, toMaster []byte) *Object {
	p.ToSlave, p.ToMaster = len(toSlave), len(toMaster)
	data := append(append([]byte{}, toSlave...), toMaster...)
	return &Object{ID: PtyID(p.Index), Kind: ObjPty, Info: p.Info(), Data: data}
}

// PtyCCs is the number of control characters a termios has (NCCS).
const PtyCCs = 19

// ParsePty reads the info of pty object o and checks its data against it.
func ParsePty(o *Object, strict bool) (*Pty, error) {
	k := readKindLines("object "+o.ID, o.Info, ptyKeys, nil, strict)
	u32 := func(key string, base int) uint32 { return uint32(k.uint(key, base, 32)) }
	u16 := func(key string) uint16 { return uint16(k.uint(key, 10, 16)) }
	p := &Pty{
		Index: int(k.int("index", 0, 1<<20)),
		UID:   u32("uid", 10), GID: u32("gid", 10), Mode: u32("mode", 0),
		Iflag: u32("iflag", 0), Oflag: u32("oflag", 0), Cflag: u32("cflag", 0), Lflag: u32("lflag", 0),
		Line:   uint8(k.uint("line", 10, 8)),
		Ispeed: u32("ispeed", 10), Ospeed: u32("ospeed", 10),
		Rows: u16("rows"), Cols: u16("cols"), Xpixel: u16("xpixel"), Ypixel: u16("ypixel"),
		Packet: k.flag("packet"), Locked: k.flag("locked"),
		ToSlave:  int(k.int("to-slave", 0, math.MaxInt32)),
		ToMaster: int(k.int("to-master", 0, math.MaxInt32)),
	}
	if k.err != nil {
		return p, k.err
	}
	cc, err := hex.DecodeString(k.str("cc"))
	if err != nil || len(cc) != PtyCCs {
		return p, fmt.Errorf("object %s: cc: want %d hex bytes", o.ID, PtyCCs)
	}
	p.CC = cc
	if p.Mode > 0o7777 {
		return p, fmt.Errorf("object %s: mode %#o is not a permission mode", o.ID, p.Mode)
	}
	if o.ID != PtyID(p.Index) {
		return p, fmt.Errorf("object %s: index %d does not match its name", o.ID, p.Index)
	}
	if p.ToSlave+p.ToMaster != len(o.Data) {
		return p, fmt.Errorf("object %s: to-slave %d + to-master %d bytes, but its data has %d", o.ID, p.ToSlave, p.ToMaster, len(o.Data))
	}
	return p, nil
}

func parsePtyInfo(o *Object, strict bool) ([]string, error) {
	p, err := ParsePty(o, strict)
	if err != nil {
		return nil, err
	}
	return p.Info(), nil
}

// Queued returns the bytes queued for the slave and for the master.
func (p *Pty) Queued(o *Object) (toSlave, toMaster []byte) {
	return o.Data[:p.ToSlave], o.Data[p.ToSlave:]
}
