//go:build linux && amd64

// Package stub generates the restorer's stub: a minimal static x86-64 ELF
// that loops on pause(2) and carries a `syscall; int3` sequence at a known
// address and a minimal pid namespace init (InitEntry), and starts it from a memfd (no compiler or file needed at runtime).
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

// initCode is the init of a pid namespace the restorer creates (InitEntry):
// with r12 = the pid of the namespace's root task, it blocks SIGHUP,
// SIGINT, SIGTERM and SIGCHLD, then waits for them with rt_sigtimedwait:
// SIGCHLD reaps every child that ended (orphans included), the others are
// sent on to the root (kill). When the root is reaped it exits with the
// root's exit code, or 128+n if a signal n killed it (an init cannot die
// of a signal it sends itself). Assembled with GNU as (intel syntax).
var initCode = []byte{
	0x48, 0x81, 0xec, 0x00, 0x02, 0x00, 0x00, //                 sub rsp, 512
	0x48, 0x83, 0xe4, 0xf0, //                                   and rsp, -16
	0x48, 0xc7, 0x04, 0x24, 0x03, 0x40, 0x01, 0x00, //           mov qword [rsp], 0x14003   ; HUP INT TERM CHLD
	0xb8, 0x0e, 0x00, 0x00, 0x00, //                             mov eax, 14 (rt_sigprocmask)
	0x31, 0xff, //                                               xor edi, edi (SIG_BLOCK)
	0x48, 0x89, 0xe6, //                                         mov rsi, rsp
	0x31, 0xd2, //                                               xor edx, edx
	0x41, 0xba, 0x08, 0x00, 0x00, 0x00, //                       mov r10d, 8
	0x0f, 0x05, //                                               syscall
	0xb8, 0x80, 0x00, 0x00, 0x00, //                       wait: mov eax, 128 (rt_sigtimedwait)
	0x48, 0x89, 0xe7, //                                         mov rdi, rsp
	0x48, 0x8d, 0x74, 0x24, 0x10, //                             lea rsi, [rsp+16] (siginfo)
	0x31, 0xd2, //                                               xor edx, edx
	0x41, 0xba, 0x08, 0x00, 0x00, 0x00, //                       mov r10d, 8
	0x0f, 0x05, //                                               syscall
	0x83, 0xf8, 0x11, //                                         cmp eax, 17 (SIGCHLD)
	0x74, 0x12, //                                               je reap
	0x85, 0xc0, //                                               test eax, eax
	0x7e, 0xe0, //                                               jle wait (EINTR)
	0x89, 0xc6, //                                               mov esi, eax
	0x44, 0x89, 0xe7, //                                         mov edi, r12d
	0xb8, 0x3e, 0x00, 0x00, 0x00, //                             mov eax, 62 (kill)
	0x0f, 0x05, //                                               syscall
	0xeb, 0xd2, //                                               jmp wait
	0xb8, 0x3d, 0x00, 0x00, 0x00, //                       reap: mov eax, 61 (wait4)
	0xbf, 0xff, 0xff, 0xff, 0xff, //                             mov edi, -1
	0x48, 0x8d, 0x74, 0x24, 0x08, //                             lea rsi, [rsp+8] (status)
	0xba, 0x01, 0x00, 0x00, 0x40, //                             mov edx, WNOHANG|__WALL
	0x45, 0x31, 0xd2, //                                         xor r10d, r10d
	0x0f, 0x05, //                                               syscall
	0x85, 0xc0, //                                               test eax, eax
	0x7e, 0xb5, //                                               jle wait (none left)
	0x44, 0x39, 0xe0, //                                         cmp eax, r12d
	0x75, 0xde, //                                               jne reap
	0x8b, 0x7c, 0x24, 0x08, //                                   mov edi, [rsp+8]
	0x89, 0xf9, //                                               mov ecx, edi
	0x83, 0xe1, 0x7f, //                                         and ecx, 0x7f
	0x74, 0x08, //                                               jz exited
	0x8d, 0xb9, 0x80, 0x00, 0x00, 0x00, //                       lea edi, [rcx+128]
	0xeb, 0x09, //                                               jmp out
	0xc1, 0xef, 0x08, //                                 exited: shr edi, 8
	0x81, 0xe7, 0xff, 0x00, 0x00, 0x00, //                       and edi, 0xff
	0xb8, 0xe7, 0x00, 0x00, 0x00, //                        out: mov eax, 231 (exit_group)
	0x0f, 0x05, //                                               syscall
	0x0f, 0x0b, //                                               ud2
}

// Entry is the stub's entry point.
const Entry = Base + codeStart

// Trampoline is the address of the stub's `syscall; int3`.
const Trampoline = Entry + 9

// InitEntry is where a copy of the stub becomes a pid namespace's init
// (initCode): point rip here with r12 = the root's pid and a usable stack.
const InitEntry = Trampoline + 3

// ELF returns the stub executable.
func ELF() []byte {
	var b bytes.Buffer
	size := uint64(codeStart + len(code) + len(initCode))
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
	b.Write(initCode)
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
