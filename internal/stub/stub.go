//go:build linux && amd64

// Package stub generates the restorer's stub: a minimal static x86-64 ELF
// that loops on pause(2) and carries a `syscall; int3` sequence at a known
// address, and starts it from a memfd (no compiler or file needed at runtime).
package stub

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"

	"golang.org/x/sys/unix"
)

// Base is the load address of the stub's only segment.
const Base = 0x10000000

const (
	ehdrSize  = 64
	phdrSize  = 56
	numPhdrs  = 2
	codeStart = ehdrSize + phdrSize*numPhdrs
)

// code: loop { pause() }, then a `syscall; int3` trampoline.
var code = []byte{
	0xb8, 0x22, 0x00, 0x00, 0x00, // 0: mov eax, 34 (pause)
	0x0f, 0x05, //                   5: syscall
	0xeb, 0xf7, //                   7: jmp 0
	0x0f, 0x05, //                   9: syscall   <- Trampoline
	0xcc, //                         b: int3
}

// Entry is the stub's entry point.
const Entry = Base + codeStart

// Trampoline is the address of the stub's `syscall; int3`.
const Trampoline = Entry + 9

// ELF returns the stub executable.
func ELF() []byte {
	var b bytes.Buffer
	size := uint64(codeStart + len(code))
	hdr := elf.Header64{
		Type:      uint16(elf.ET_EXEC),
		Machine:   uint16(elf.EM_X86_64),
		Version:   uint32(elf.EV_CURRENT),
		Entry:     Entry,
		Phoff:     ehdrSize,
		Ehsize:    ehdrSize,
		Phentsize: phdrSize,
		Phnum:     numPhdrs,
		Shentsize: 64,
	}
	copy(hdr.Ident[:], elf.ELFMAG)
	hdr.Ident[elf.EI_CLASS] = byte(elf.ELFCLASS64)
	hdr.Ident[elf.EI_DATA] = byte(elf.ELFDATA2LSB)
	hdr.Ident[elf.EI_VERSION] = byte(elf.EV_CURRENT)
	load := elf.Prog64{
		Type: uint32(elf.PT_LOAD), Flags: uint32(elf.PF_R | elf.PF_X),
		Vaddr: Base, Paddr: Base, Filesz: size, Memsz: size, Align: 0x1000,
	}
	stack := elf.Prog64{Type: uint32(elf.PT_GNU_STACK), Flags: uint32(elf.PF_R | elf.PF_W), Align: 16}
	for _, v := range []any{hdr, load, stack} {
		binary.Write(&b, binary.LittleEndian, v) // cannot fail on a bytes.Buffer
	}
	b.Write(code)
	return b.Bytes()
}

// Command returns an exec.Cmd running the stub from a memfd, with the
// caller's stdin, stdout and stderr and extra as fds 3, 4, ... (nil: closed).
// The memfd itself is the fd after them (the stub keeps it open). The caller
// starts it (from its ptrace thread) and must call cleanup after Start.
func Command(extra []*os.File) (cmd *exec.Cmd, cleanup func(), err error) {
	fd, err := unix.MemfdCreate("ckptfs-stub", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, nil, fmt.Errorf("memfd_create: %w", err)
	}
	f := os.NewFile(uintptr(fd), "ckptfs-stub")
	if _, err := f.Write(ELF()); err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("write stub: %w", err)
	}
	if err := unix.Fchmod(fd, 0o755); err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("chmod stub: %w", err)
	}
	// The child sees the memfd at 3+len(extra): exec it from there.
	files := append(append([]*os.File(nil), extra...), f)
	cmd = &exec.Cmd{
		Path:       fmt.Sprintf("/proc/self/fd/%d", 3+len(extra)),
		Args:       []string{"ckptfs-stub"},
		Stdin:      os.Stdin,
		Stdout:     os.Stdout,
		Stderr:     os.Stderr,
		Env:        []string{},
		ExtraFiles: files,
	}
	return cmd, func() { f.Close() }, nil
}
