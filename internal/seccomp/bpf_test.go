package seccomp

import (
	"encoding/binary"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// stmt and jump are BPF_STMT and BPF_JUMP.
func stmt(code uint16, k uint32) []byte { return jump(code, k, 0, 0) }

func jump(code uint16, k uint32, jt, jf uint8) []byte {
	b := make([]byte, 8)
	binary.LittleEndian.PutUint16(b, code)
	b[2], b[3] = jt, jf
	binary.LittleEndian.PutUint32(b[4:], k)
	return b
}

func prog(insns ...[]byte) []byte {
	var p []byte
	for _, i := range insns {
		p = append(p, i...)
	}
	return p
}

const (
	ldAbs  = 0x20 // BPF_LD|BPF_W|BPF_ABS
	jeqK   = 0x15 // BPF_JMP|BPF_JEQ|BPF_K
	retK   = 0x06
	retAcc = 0x16
)

// deny is the filter of tests/progs and restorer/testdata: nr fails with
// errno err, another arch is killed, all else allowed.
func deny(nr int, err unix.Errno) []byte {
	return prog(
		stmt(ldAbs, 4), // arch
		jump(jeqK, unix.AUDIT_ARCH_X86_64, 1, 0),
		stmt(retK, unix.SECCOMP_RET_KILL_PROCESS),
		stmt(ldAbs, 0), // nr
		jump(jeqK, uint32(nr), 0, 1),
		stmt(retK, unix.SECCOMP_RET_ERRNO|uint32(err)),
		stmt(retK, unix.SECCOMP_RET_ALLOW),
	)
}

func call(nr int, args ...uint64) Data {
	d := Data{Nr: int32(nr), Arch: unix.AUDIT_ARCH_X86_64}
	copy(d.Args[:], args)
	return d
}

func TestRunDeny(t *testing.T) {
	f := deny(unix.SYS_GETPPID, unix.EPERM)
	for _, c := range []struct {
		d    Data
		want uint32
	}{
		{call(unix.SYS_GETPPID), unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)},
		{call(unix.SYS_MUNMAP, 0x1000, 0x3000), unix.SECCOMP_RET_ALLOW},
		{Data{Nr: unix.SYS_GETPPID, Arch: 0x40000003}, unix.SECCOMP_RET_KILL_PROCESS},
	} {
		if got, err := Run(f, c.d); err != nil || got != c.want {
			t.Errorf("Run(%+v) = %#x %v, want %#x", c.d, got, err, c.want)
		}
	}
}

// TestActionPrecedence: of a stack, the strictest action wins, whatever
// the order.
func TestActionPrecedence(t *testing.T) {
	kill := prog(stmt(ldAbs, 0), jump(jeqK, unix.SYS_MUNMAP, 0, 1),
		stmt(retK, unix.SECCOMP_RET_KILL_PROCESS), stmt(retK, unix.SECCOMP_RET_LOG))
	errno := deny(unix.SYS_MUNMAP, unix.EPERM)
	for _, stack := range [][][]byte{{kill, errno}, {errno, kill}} {
		if got, _ := Action(stack, call(unix.SYS_MUNMAP)); got != unix.SECCOMP_RET_KILL_PROCESS {
			t.Errorf("munmap: %#x, want KILL_PROCESS", got)
		}
		got, _ := Action(stack, call(unix.SYS_READ))
		if got != unix.SECCOMP_RET_LOG || !Allows(got) {
			t.Errorf("read: %#x, want LOG (allowed)", got)
		}
	}
	// Two errnos for one call: the newest filter's wins.
	older, newer := deny(unix.SYS_MUNMAP, unix.EPERM), deny(unix.SYS_MUNMAP, unix.EACCES)
	if got, _ := Action([][]byte{older, newer}, call(unix.SYS_MUNMAP)); got != unix.SECCOMP_RET_ERRNO|uint32(unix.EACCES) {
		t.Errorf("two errnos: %#x, want the newest filter's EACCES", got)
	}
	if Allows(unix.SECCOMP_RET_ERRNO|1) || Allows(unix.SECCOMP_RET_TRACE) || Allows(unix.SECCOMP_RET_KILL_THREAD) {
		t.Error("Allows lets a denying action through")
	}
}

// TestRunArithmetic: argument checks as libseccomp writes them (64-bit
// args in two 32-bit loads), scratch memory, ALU ops and RET A.
func TestRunArithmetic(t *testing.T) {
	f := prog(
		stmt(ldAbs, 16+4),                  // args[0] high word
		stmt(0x02, 3),                      // ST M[3]
		stmt(ldAbs, 16),                    // args[0] low word
		stmt(0x04|0x50, 0xff),              // A &= 0xff
		stmt(unix.BPF_ALU|unix.BPF_ADD, 1), // A += 1
		stmt(0x07, 0),                      // TAX
		stmt(0x60, 3),                      // A = M[3]
		stmt(unix.BPF_ALU|unix.BPF_ADD|unix.BPF_X, 0), // A += X
		stmt(0x04|0x40, 0x7fff0000),                   // A |= ALLOW
		jump(0x05|0x40, 0x100, 1, 0),                  // JSET 0x100
		stmt(retAcc, 0),
		stmt(retK, unix.SECCOMP_RET_ERRNO|5),
	)
	if got, err := Run(f, call(1, 0x0000000200000041)); err != nil || got != 0x7fff0044 {
		t.Errorf("got %#x %v, want 0x7fff0044", got, err)
	}
	if got, _ := Run(f, call(1, 0x0000010000000000)); got != unix.SECCOMP_RET_ERRNO|5 {
		t.Errorf("got %#x, want ERRNO|5", got)
	}
}

func TestRunBadPrograms(t *testing.T) {
	for _, c := range []struct {
		name string
		p    []byte
		want string
	}{
		{"load past the data", prog(stmt(ldAbs, 64), stmt(retK, 0)), "loads at 64"},
		{"unaligned", prog(stmt(ldAbs, 2), stmt(retK, 0)), "loads at 2"},
		{"no return", prog(stmt(ldAbs, 0)), "past its end"},
		{"odd size", []byte{1, 2, 3}, "3 bytes"},
		{"scratch", prog(stmt(0x60, 16), stmt(retK, 0)), "M[16]"},
	} {
		if _, err := Run(c.p, call(0)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.name, err, c.want)
		}
	}
}
