//go:build linux && amd64

package inject

import (
	"bytes"
	"fmt"
	"sync"
)

// VdsoTrampolines finds Syscall trampolines for the processes of one dump.
// Every process of a boot maps the kernel's one vdso image, so the offset
// of its first `syscall` instruction is searched for once: for each further
// process its [vdso] is read (one process_vm_readv) and compared with the
// image the offset was found in; a vdso that differs (another image,
// another size) is searched on its own. No maps file is read: the caller
// gives the [vdso] mapping it has already parsed.
type VdsoTrampolines struct {
	mu     sync.Mutex
	image  []byte // the first vdso searched
	offset uint64 // of its syscall instruction
}

// Find returns the address of a `syscall` instruction in pid's [vdso],
// mapped at [start, end).
func (v *VdsoTrampolines) Find(pid int, start, end uint64) (uint64, error) {
	if end <= start || end-start > 1<<20 {
		return 0, fmt.Errorf("[vdso] of %d at %#x-%#x: bad size", pid, start, end)
	}
	b := make([]byte, end-start)
	if err := ReadMem(pid, start, b); err != nil {
		return 0, fmt.Errorf("[vdso] of %d: %w", pid, err)
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.image != nil && bytes.Equal(b, v.image) {
		return start + v.offset, nil
	}
	i := bytes.Index(b, []byte{0x0f, 0x05})
	if i < 0 {
		return 0, fmt.Errorf("no syscall instruction in [vdso] of %d", pid)
	}
	if v.image == nil {
		v.image, v.offset = b, uint64(i)
	}
	return start + uint64(i), nil
}
