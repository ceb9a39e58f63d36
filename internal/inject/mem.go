//go:build linux && amd64

package inject

import (
	"bytes"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/internal/proc"
)

// WriteMem writes b at addr in pid with process_vm_writev; the pages must be
// writable in the tracee.
func WriteMem(pid int, addr uint64, b []byte) error {
	for len(b) > 0 {
		local := []unix.Iovec{{Base: &b[0]}}
		local[0].SetLen(len(b))
		remote := []unix.RemoteIovec{{Base: uintptr(addr), Len: len(b)}}
		n, err := unix.ProcessVMWritev(pid, local, remote, 0)
		if err != nil {
			return fmt.Errorf("write %d bytes at %#x in %d: %w", len(b), addr, pid, err)
		}
		if n == 0 {
			return fmt.Errorf("write %d bytes at %#x in %d: short write", len(b), addr, pid)
		}
		b = b[n:]
		addr += uint64(n)
	}
	return nil
}

// PokeMem writes b at addr in pid through /proc/<pid>/mem, which also
// writes pages the tracee cannot write (code, read-only data).
func PokeMem(pid int, addr uint64, b []byte) error {
	f, err := os.OpenFile(proc.Path(pid, "mem"), os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.WriteAt(b, int64(addr)); err != nil {
		return fmt.Errorf("poke %d bytes at %#x in %d: %w", len(b), addr, pid, err)
	}
	return nil
}

// ReadMem reads len(b) bytes at addr in pid: with one process_vm_readv
// (no file to open: the injected calls read their results this way, many
// times a thread), else, for pages the tracee itself cannot read, through
// /proc/<pid>/mem.
func ReadMem(pid int, addr uint64, b []byte) error {
	if len(b) == 0 {
		return nil
	}
	local := []unix.Iovec{{Base: &b[0]}}
	local[0].SetLen(len(b))
	remote := []unix.RemoteIovec{{Base: uintptr(addr), Len: len(b)}}
	if n, err := unix.ProcessVMReadv(pid, local, remote, 0); err == nil && n == len(b) {
		return nil
	}
	return peekMem(pid, addr, b)
}

// peekMem reads len(b) bytes at addr in pid through /proc/<pid>/mem.
func peekMem(pid int, addr uint64, b []byte) error {
	f, err := os.Open(proc.Path(pid, "mem"))
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.ReadAt(b, int64(addr)); err != nil {
		return fmt.Errorf("read %d bytes at %#x in %d: %w", len(b), addr, pid, err)
	}
	return nil
}

// FindSyscallInsn returns the address of a `syscall` instruction (0f 05)
// in pid's [vdso], usable as Syscall's trampoline.
func FindSyscallInsn(pid int) (uint64, error) {
	b, err := proc.Read(pid, "maps")
	if err != nil {
		return 0, err
	}
	maps, err := proc.ParseMaps(b) // no smaps: only the [vdso] line matters
	if err != nil {
		return 0, err
	}
	for _, m := range maps {
		if m.Name != "[vdso]" {
			continue
		}
		b := make([]byte, m.End-m.Start)
		if err := ReadMem(pid, m.Start, b); err != nil {
			return 0, err
		}
		if i := bytes.Index(b, []byte{0x0f, 0x05}); i >= 0 {
			return m.Start + uint64(i), nil
		}
		return 0, fmt.Errorf("no syscall instruction in [vdso] of %d", pid)
	}
	return 0, fmt.Errorf("process %d has no [vdso]", pid)
}
