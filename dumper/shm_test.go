package dumper

import (
	"bytes"
	"fmt"
	"os"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/image"
)

// TestUnmappedData: the pages of a memfd that no vma of the checkpoint has
// in its page tables are its object data; zero pages are left out, and a
// page this process maps (and touched) is left to the vma's pages.
func TestUnmappedData(t *testing.T) {
	fd, err := unix.MemfdCreate("shm-test", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	file := os.NewFile(uintptr(fd), "memfd")
	defer file.Close()
	const size = 4 * image.PageSize
	if err := unix.Ftruncate(fd, size); err != nil {
		t.Fatal(err)
	}
	page := func(b byte) []byte { return bytes.Repeat([]byte{b}, image.PageSize) }
	for i, b := range []byte{1, 0, 3} { // page 1 allocated but zero, page 3 a hole
		if _, err := unix.Pwrite(fd, page(b), int64(i)*image.PageSize); err != nil {
			t.Fatal(err)
		}
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		t.Fatal(err)
	}
	dev := mapsDev(st.Dev)

	rs, data, err := unmappedData(&image.Checkpoint{}, dev, st.Ino, file, size)
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(rs); got != "[{0 4096} {8192 12288}]" || !bytes.Equal(data, append(page(1), page(3)...)) {
		t.Fatalf("no mapping: ranges %q, %d bytes of data", got, len(data))
	}

	// This process maps the first page and touches it.
	m, err := unix.Mmap(fd, 0, image.PageSize, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	if m[0] != 1 { // fault it in
		t.Fatalf("mapped page reads %d", m[0])
	}
	start := uint64(uintptr(unsafe.Pointer(&m[0])))
	c := &image.Checkpoint{Tasks: []*image.Task{{PID: os.Getpid(), VMAs: []*image.VMA{{
		Start: start, End: start + image.PageSize, Perms: "r--s", Dev: dev, Inode: st.Ino,
		Name: "/memfd:shm-test (deleted)", Kind: image.VMAShmem}}}}}
	rs, data, err = unmappedData(c, dev, st.Ino, file, size)
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(rs); got != "[{8192 12288}]" || !bytes.Equal(data, page(3)) {
		t.Fatalf("first page mapped: ranges %q, %d bytes of data", got, len(data))
	}
}

// TestReadSysV finds a segment of ours in /proc/sysvipc/shm with its key,
// size, mode and owner.
func TestReadSysV(t *testing.T) {
	key := 0x6b710000 | os.Getpid()&0xffff
	id, err := unix.SysvShmGet(key, 5000, unix.IPC_CREAT|unix.IPC_EXCL|0o604)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.SysvShmCtl(id, unix.IPC_RMID, nil)
	segs, err := readSysV()
	if err != nil {
		t.Fatal(err)
	}
	s, ok := segs[id]
	want := sysvSeg{key: int32(key), id: id, mode: 0o604, size: 5000, uid: uint32(os.Getuid()), gid: uint32(os.Getgid()),
		cuid: uint32(os.Getuid()), cgid: uint32(os.Getgid())}
	if !ok || s != want {
		t.Fatalf("segment %d: %+v, want %+v", id, s, want)
	}
	if _, err := unix.SysvShmCtl(id, unix.IPC_RMID, nil); err != nil {
		t.Fatal(err)
	}
	segs, _ = readSysV()
	if _, ok := segs[id]; ok {
		t.Fatalf("segment %d still listed after IPC_RMID", id)
	}
}
