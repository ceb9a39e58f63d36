// Package seccomp evaluates seccomp filters (classic BPF over struct
// seccomp_data) the way the kernel does, so that the restorer can tell
// whether a filter it installs would let its own later calls through.
package seccomp

import (
	"encoding/binary"
	"fmt"

	"golang.org/x/sys/unix"
)

// Data is struct seccomp_data: what a filter sees of a system call.
type Data struct {
	Nr   int32
	Arch uint32
	IP   uint64
	Args [6]uint64
}

const dataSize = 64 // sizeof(struct seccomp_data)

func (d *Data) bytes() []byte {
	b := make([]byte, dataSize)
	le := binary.LittleEndian
	le.PutUint32(b[0:], uint32(d.Nr))
	le.PutUint32(b[4:], d.Arch)
	le.PutUint64(b[8:], d.IP)
	for i, a := range d.Args {
		le.PutUint64(b[16+8*i:], a)
	}
	return b
}

// Classic BPF opcode parts (linux/bpf_common.h).
const (
	clsLD, clsLDX, clsST, clsSTX, clsALU, clsJMP, clsRET, clsMISC = 0, 1, 2, 3, 4, 5, 6, 7
	modeIMM, modeABS, modeMEM, modeLEN                            = 0x00, 0x20, 0x60, 0x80
	srcX                                                          = 0x08
	retA                                                          = 0x10
	miscTXA                                                       = 0x80
	memWords                                                      = 16 // BPF_MEMWORDS
	insnSize                                                      = 8
)

// Run runs one filter program (raw struct sock_filter array) on d and
// returns its SECCOMP_RET_* value.
func Run(prog []byte, d Data) (uint32, error) {
	if len(prog) == 0 || len(prog)%insnSize != 0 {
		return 0, fmt.Errorf("seccomp filter of %d bytes", len(prog))
	}
	data := d.bytes()
	n := len(prog) / insnSize
	var a, x uint32
	var mem [memWords]uint32
	le := binary.LittleEndian
	for pc := 0; pc < n; pc++ {
		in := prog[pc*insnSize:]
		code, jt, jf, k := le.Uint16(in), int(in[2]), int(in[3]), le.Uint32(in[4:])
		switch code & 7 {
		case clsLD, clsLDX:
			var v uint32
			switch code & 0xe0 {
			case modeIMM:
				v = k
			case modeABS:
				if k%4 != 0 || k+4 > dataSize {
					return 0, fmt.Errorf("seccomp filter instruction %d loads at %d", pc, k)
				}
				v = le.Uint32(data[k:])
			case modeMEM:
				if k >= memWords {
					return 0, fmt.Errorf("seccomp filter instruction %d reads M[%d]", pc, k)
				}
				v = mem[k]
			case modeLEN:
				v = dataSize
			default:
				return 0, fmt.Errorf("seccomp filter instruction %d: opcode %#x", pc, code)
			}
			if code&7 == clsLD {
				a = v
			} else {
				x = v
			}
		case clsST, clsSTX:
			if k >= memWords {
				return 0, fmt.Errorf("seccomp filter instruction %d writes M[%d]", pc, k)
			}
			if code&7 == clsST {
				mem[k] = a
			} else {
				mem[k] = x
			}
		case clsALU:
			v := k
			if code&srcX != 0 {
				v = x
			}
			var ok bool
			if a, ok = alu(code&0xf0, a, v); !ok {
				return 0, nil // division by zero: the kernel's filter returns 0
			}
		case clsJMP:
			v := k
			if code&srcX != 0 {
				v = x
			}
			var taken bool
			switch code & 0xf0 {
			case 0x00: // JA
				pc += int(k)
				continue
			case 0x10:
				taken = a == v
			case 0x20:
				taken = a > v
			case 0x30:
				taken = a >= v
			case 0x40:
				taken = a&v != 0
			default:
				return 0, fmt.Errorf("seccomp filter instruction %d: opcode %#x", pc, code)
			}
			if taken {
				pc += jt
			} else {
				pc += jf
			}
		case clsRET:
			if code&retA != 0 {
				return a, nil
			}
			return k, nil
		case clsMISC:
			if code&miscTXA != 0 {
				a = x
			} else {
				x = a
			}
		}
	}
	return 0, fmt.Errorf("seccomp filter runs past its end")
}

func alu(op uint16, a, v uint32) (uint32, bool) {
	switch op {
	case 0x00:
		return a + v, true
	case 0x10:
		return a - v, true
	case 0x20:
		return a * v, true
	case 0x30:
		if v == 0 {
			return 0, false
		}
		return a / v, true
	case 0x40:
		return a | v, true
	case 0x50:
		return a & v, true
	case 0x60:
		return a << (v & 31), true
	case 0x70:
		return a >> (v & 31), true
	case 0x80:
		return -a, true
	case 0x90:
		if v == 0 {
			return 0, false
		}
		return a % v, true
	case 0xa0:
		return a ^ v, true
	}
	return a, true
}

// Action runs a thread's whole filter stack (oldest first) on d, as the
// kernel does: every filter runs, newest first, and the action with the
// highest precedence (the lowest as a signed 32-bit action: KILL_PROCESS
// first, ALLOW last) wins; of equal actions, the newest filter's (its
// errno, say).
func Action(filters [][]byte, d Data) (uint32, error) {
	ret := uint32(unix.SECCOMP_RET_ALLOW)
	for i := len(filters) - 1; i >= 0; i-- {
		r, err := Run(filters[i], d)
		if err != nil {
			return 0, err
		}
		if int32(r&unix.SECCOMP_RET_ACTION_FULL) < int32(ret&unix.SECCOMP_RET_ACTION_FULL) {
			ret = r
		}
	}
	return ret, nil
}

// Allows reports whether an action lets the call run (ALLOW or LOG).
func Allows(action uint32) bool {
	a := action & unix.SECCOMP_RET_ACTION_FULL
	return a == unix.SECCOMP_RET_ALLOW || a == unix.SECCOMP_RET_LOG
}
