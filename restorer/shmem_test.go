package restorer

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/image"
)

// TestMemfdObject creates a memfd from its object: name, size, mode, the
// pages in its data, and its seals (here F_SEAL_WRITE too, added after the
// data is written since no vma maps it).
func TestMemfdObject(t *testing.T) {
	data := append(bytes.Repeat([]byte{7}, 100), bytes.Repeat([]byte{9}, 4096)...)
	seals := unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_WRITE
	o := &image.Object{ID: "memfd-42", Kind: image.ObjMemfd, Data: data, Info: []string{
		image.TextLine("name", "my buffer"), "size: 20000", "mode: 600", fmt.Sprintf("seals: %#x", seals),
		"dev: 00:01", "ino: 42", "data_ranges: 10-110 8192-12288"}}
	c := &image.Checkpoint{Objects: []*image.Object{o}}
	fs := newFiles(nil)
	defer fs.close()
	fd, err := fs.memfd(c, o)
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := fs.memfd(c, o); again != fd {
		t.Fatalf("second call gave fd %d, first %d", again, fd)
	}
	if link, _ := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd)); link != "/memfd:my buffer (deleted)" {
		t.Fatalf("fd is %q", link)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Size != 20000 || st.Mode&0o7777 != 0o600 {
		t.Fatalf("size %d mode %o (%v)", st.Size, st.Mode&0o7777, err)
	}
	if got, err := unix.FcntlInt(uintptr(fd), unix.F_GET_SEALS, 0); err != nil || got != seals {
		t.Fatalf("seals %#x (%v), want %#x", got, err, seals)
	}
	want := make([]byte, 20000)
	copy(want[10:], data[:100])
	copy(want[8192:], data[100:])
	got := make([]byte, 20000)
	if _, err := unix.Pread(fd, got, 0); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("contents differ (%v)", err)
	}

	if err := writeObjectData(o, []image.DataRange{{Start: 0, End: 5000}}, func([]byte, int64) error { return nil }); err == nil {
		t.Fatal("data ranges longer than the data accepted")
	}
	o.Info[len(o.Info)-1] = "data_ranges: 0-5000"
	if _, err := image.ParseMemfd(o, true); err == nil {
		t.Fatal("data_ranges longer than the data accepted by the schema")
	}
}

// TestSysVSegment creates a segment with a recorded id (shm_next_id), takes
// it over when it exists unattached, and refuses it while attached or when
// the id is another segment's.
func TestSysVSegment(t *testing.T) {
	key := 0x6b720000 | os.Getpid()&0xffff
	// Find a free id: create and remove a segment.
	id, err := unix.SysvShmGet(key, 10000, unix.IPC_CREAT|unix.IPC_EXCL|0o600)
	if err != nil {
		t.Fatal(err)
	}
	unix.SysvShmCtl(id, unix.IPC_RMID, nil)
	o := &image.Object{ID: "sysv-" + strconv.Itoa(id), Kind: image.ObjSysVShm, Info: []string{
		fmt.Sprintf("key: %#08x", key), "shmid: " + strconv.Itoa(id), "size: 10000", "mode: 640", "dest: 0",
		"uid: 0", "gid: 0", "cuid: 0", "cgid: 0", "dev: 00:01", "data_ranges: "}}
	s, err := parseSysV(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := checkShm(&image.Checkpoint{Objects: []*image.Object{o}}); err != nil {
		t.Fatalf("preflight of a free id: %v", err)
	}
	took, err := s.create()
	if err != nil || took {
		t.Fatalf("create: took %v, %v", took, err)
	}
	defer unix.SysvShmCtl(id, unix.IPC_RMID, nil)
	var ds unix.SysvShmDesc
	if _, err := unix.SysvShmCtl(id, unix.IPC_STAT, &ds); err != nil || int(ds.Perm.Key) != key || ds.Segsz != 10000 || ds.Perm.Mode&0o777 != 0o640 {
		t.Fatalf("segment %d: %+v (%v)", id, ds, err)
	}
	if took, err := s.create(); err != nil || !took {
		t.Fatalf("existing unattached segment: took %v, %v", took, err)
	}
	mem, err := unix.SysvShmAttach(id, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.create(); err == nil {
		t.Fatal("attached segment taken over")
	}
	if err := checkShm(&image.Checkpoint{Objects: []*image.Object{o}}); err == nil || !strings.Contains(err.Error(), "1 processes are attached") {
		t.Fatalf("preflight of an attached segment: %v", err)
	}
	unix.SysvShmDetach(mem)
	s.size = 20000
	if _, err := s.create(); err == nil {
		t.Fatal("segment of another size taken over")
	}
	s.size, s.id = 10000, id+1
	if err := s.check(); err == nil || !strings.Contains(err.Error(), "belongs to another segment") {
		t.Fatalf("key of another segment: %v", err)
	}
}

func TestPagesWrittenPending(t *testing.T) {
	const P = image.PageSize
	done := pagesWritten{}
	// A vma at object offset 2 pages saved pages 0-2 (object pages 2-4).
	if got := done.pending(2*P, [][2]int64{{0, 3 * P}}); fmt.Sprint(got) != fmt.Sprint([][2]int64{{0, 3 * P}}) {
		t.Fatalf("first vma: %v", got)
	}
	// A vma at object offset 0 saved pages 1-5: only object pages 1, 5 remain.
	got := done.pending(0, [][2]int64{{1 * P, 6 * P}})
	if want := [][2]int64{{1 * P, 2 * P}, {5 * P, 6 * P}}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("second vma: %v, want %v", got, want)
	}
	if got := done.pending(0, [][2]int64{{0, 6 * P}}); fmt.Sprint(got) != fmt.Sprint([][2]int64{{0, P}}) {
		t.Fatalf("third vma: %v", got)
	}
}
