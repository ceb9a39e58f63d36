package tests

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/dedup"
	"github.com/ckptfs/ckptfs/image"
)

// The mount tests dump real programs into a real store, mount it with
// `ckptfs mount --daemon` and look at the checkpoints with ordinary tools
// (ls -R, cmp, lseek SEEK_DATA/SEEK_HOLE) and with image.Load.

// mountedStore is a store mounted by a `ckptfs mount --daemon` process.
type mountedStore struct {
	store, mnt string
	daemon     int
	done       bool
}

// mountStore mounts store (created if missing) on a fresh directory and
// unmounts it, waiting for the daemon to exit, when the test ends.
func mountStore(t testing.TB, store string) *mountedStore {
	t.Helper()
	if err := os.MkdirAll(store, 0o700); err != nil {
		t.Fatal(err)
	}
	mnt, err := os.MkdirTemp("", "ckptfs-mnt-")
	if err != nil {
		t.Fatal(err)
	}
	_, errOut, err := ckptfsErr(t, "mount", "--daemon", store, mnt)
	if err != nil {
		os.Remove(mnt)
		t.Fatalf("mount --daemon %s %s: %v\n%s", store, mnt, err, errOut)
	}
	m := &mountedStore{store: store, mnt: mnt}
	if _, err := fmt.Sscanf(strings.TrimSpace(errOut), "ckptfs: mounted (daemon pid %d)", &m.daemon); err != nil {
		t.Errorf("mount --daemon said %q", errOut)
	}
	t.Cleanup(func() { m.unmount(t) })
	return m
}

// unmount unmounts (once) and waits until the daemon has released the
// store and exited.
func (m *mountedStore) unmount(t testing.TB) {
	t.Helper()
	if m.done {
		return
	}
	m.done = true
	var err error
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if err = unix.Unmount(m.mnt, 0); err == nil || !errors.Is(err, unix.EBUSY) || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		t.Errorf("umount %s: %v", m.mnt, err)
		unix.Unmount(m.mnt, unix.MNT_DETACH)
	}
	for deadline := time.Now().Add(10 * time.Second); m.daemon > 0 && processAlive(m.daemon); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Errorf("mount daemon %d still running 10s after umount", m.daemon)
			unix.Kill(m.daemon, unix.SIGKILL)
			break
		}
	}
	os.Remove(m.mnt)
}

// waitVisible waits up to a second for path to exist and returns how long
// it took.
func waitVisible(t testing.TB, path string) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		if _, err := os.Lstat(path); err == nil {
			return time.Since(start)
		}
		if time.Since(start) > time.Second {
			t.Fatalf("%s did not appear within 1s", path)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// counterPattern is the memory counter.c fills for a region of n bytes:
// xorshift64 words, little-endian, with a zeroed MiB at n/2.
func counterPattern(n int) []byte {
	b := make([]byte, n)
	s := uint64(0x9e3779b97f4a7c15)
	for i := 0; i+8 <= n; i += 8 {
		s ^= s << 13
		s ^= s >> 7
		s ^= s << 17
		binary.LittleEndian.PutUint64(b[i:], s)
	}
	clear(b[n/2 : n/2+1<<20])
	return b
}

// lsR runs `ls -R dir` and returns the entries of every directory it
// listed, keyed by the path relative to dir ("." for dir).
func lsR(t testing.TB, dir string) map[string]map[string]bool {
	t.Helper()
	var out, errOut bytes.Buffer
	cmd := exec.Command("ls", "-R", dir)
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil || errOut.Len() > 0 {
		t.Fatalf("ls -R %s: %v\n%s", dir, err, errOut.String())
	}
	tree := map[string]map[string]bool{}
	var cur map[string]bool
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			cur = nil
		case cur == nil && strings.HasSuffix(line, ":"):
			rel, err := filepath.Rel(dir, strings.TrimSuffix(line, ":"))
			if err != nil {
				t.Fatal(err)
			}
			cur = map[string]bool{}
			tree[rel] = cur
		case cur != nil:
			cur[line] = true
		}
	}
	return tree
}

// procTIDs returns the thread ids of pid.
func procTIDs(t testing.TB, pid int) []int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		t.Fatal(err)
	}
	var tids []int
	for _, e := range ents {
		n, _ := strconv.Atoi(e.Name())
		tids = append(tids, n)
	}
	sort.Ints(tids)
	return tids
}

// TestMountLsR: `ls -R` of a mounted store shows every file of the tree
// format for a checkpoint of a threaded program, and latest and
// by-name/<name> resolve to it.
func TestMountLsR(t *testing.T) {
	p := startProgram(t, "pthreads", 8)
	tids := procTIDs(t, p.Pid)
	if len(tids) != 4 {
		t.Fatalf("pthreads counter has threads %v, want 4", tids)
	}
	proc := func(name string) string { s, _ := os.Readlink(fmt.Sprintf("/proc/%d/%s", p.Pid, name)); return s }
	exe, cwd, root := proc("exe"), proc("cwd"), proc("root")
	store := filepath.Join(t.TempDir(), "store")
	id := lastLine(ckptfs(t, "dump", "-s", store, "--name", "lsr", itoa(p.Pid)))
	m := mountStore(t, store)

	tree := lsR(t, m.mnt)
	has := func(dir string, names ...string) {
		t.Helper()
		ents, ok := tree[dir]
		if !ok {
			t.Errorf("ls -R did not list %s", dir)
			return
		}
		for _, n := range names {
			if !ents[n] {
				t.Errorf("ls -R: %s lacks %s (has %v)", dir, n, keys(ents))
			}
		}
	}
	has(".", id, "latest", "by-name")
	has("by-name", "lsr")
	has(id, "info", "tree", "tasks")
	task := filepath.Join(id, "tasks", itoa(p.Pid))
	has(filepath.Join(id, "tasks"), itoa(p.Pid))
	has(task, "status", "cmdline", "environ", "auxv", "exe", "cwd", "root", "mm", "limits", "maps",
		"sigactions", "threads", "fds", "fdinfo", "vmas", "core")
	for _, tid := range tids {
		has(filepath.Join(task, "threads", itoa(tid)), "regs", "xstate", "sigmask", "sigpending")
	}
	if n := len(tree[filepath.Join(task, "threads")]); n != len(tids) {
		t.Errorf("threads/ has %d entries, want %d", n, len(tids))
	}
	has(filepath.Join(task, "fds"), "0", "1", "2")
	has(filepath.Join(task, "fdinfo"), "0", "1", "2")
	// One vmas/<start>-<end>/ per line of the checkpoint's maps, each with
	// info and pages.
	maps, err := os.ReadFile(filepath.Join(m.mnt, task, "maps"))
	if err != nil {
		t.Fatal(err)
	}
	var ranges []string
	for _, line := range strings.Split(strings.TrimSpace(string(maps)), "\n") {
		r := strings.Fields(line)[0]
		ranges = append(ranges, r)
		has(filepath.Join(task, "vmas", r), "info", "pages")
	}
	if n := len(tree[filepath.Join(task, "vmas")]); n != len(ranges) {
		t.Errorf("vmas/ has %d entries, maps %d lines", n, len(ranges))
	}
	t.Logf("ls -R: %d directories, task %d: %d threads, %d vmas", len(tree), p.Pid, len(tids), len(ranges))

	// Symlinks: exe, cwd, root and fds as /proc showed them.
	for name, want := range map[string]string{"exe": exe, "cwd": cwd, "root": root, "fds/1": p.Out} {
		if got, err := os.Readlink(filepath.Join(m.mnt, task, name)); err != nil || got != want {
			t.Errorf("readlink %s = %q, %v; want %q", name, got, err, want)
		}
	}
	// latest and by-name/lsr resolve to the checkpoint.
	if got, err := os.Readlink(filepath.Join(m.mnt, "latest")); err != nil || got != id {
		t.Errorf("latest -> %q, %v; want %s", got, err, id)
	}
	if got, err := os.Readlink(filepath.Join(m.mnt, "by-name", "lsr")); err != nil || got != "../"+id {
		t.Errorf("by-name/lsr -> %q, %v; want ../%s", got, err, id)
	}
	for _, via := range []string{"latest", "by-name/lsr"} {
		info, err := os.ReadFile(filepath.Join(m.mnt, via, "info"))
		if err != nil || !strings.Contains(string(info), "id: \""+id+"\"\n") {
			t.Errorf("%s/info: %v\n%s", via, err, info)
		}
		st, err := os.Stat(filepath.Join(m.mnt, via, "tasks", itoa(p.Pid), "status"))
		if err != nil || !st.Mode().IsRegular() {
			t.Errorf("%s/tasks/%d/status: %v", via, p.Pid, err)
		}
	}
	status, _ := os.ReadFile(filepath.Join(m.mnt, task, "status"))
	if !strings.Contains(string(status), "Threads: 4\n") || !strings.Contains(string(status), "Pid: "+itoa(p.Pid)+"\n") {
		t.Errorf("status:\n%s", status)
	}
	p.checkHealthy(t)
}

func keys(m map[string]bool) []string {
	var s []string
	for k := range m {
		s = append(s, k)
	}
	sort.Strings(s)
	return s
}

// TestMountMapsAndHeap: the maps file of a checkpoint of the static counter
// is byte for byte what /proc/<pid>/maps showed at dump time, and its heap
// vma's pages file holds the counter's pattern, the zeroed MiB in the
// middle a hole.
func TestMountMapsAndHeap(t *testing.T) {
	const mib = 32
	p := startProgram(t, "static", mib)
	store := filepath.Join(t.TempDir(), "store")
	procMaps := func() string {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", p.Pid))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	var id, maps string
	for try := 1; ; try++ {
		before := procMaps()
		id = lastLine(ckptfs(t, "dump", "-s", store, itoa(p.Pid)))
		after := procMaps()
		if before == after {
			maps = before
			break
		}
		if try == 3 {
			t.Fatalf("maps changed across 3 dumps; last before:\n%s\nafter:\n%s", before, after)
		}
		t.Logf("maps changed across dump %d, again", try)
	}
	m := mountStore(t, store)
	task := filepath.Join(m.mnt, id, "tasks", itoa(p.Pid))
	got, err := os.ReadFile(filepath.Join(task, "maps"))
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != maps {
		t.Errorf("maps differ from /proc/%d/maps at dump time:\nmount:\n%s\n/proc:\n%s", p.Pid, got, maps)
	}
	// A `cat` sees the same bytes (a read(2) loop with cat's own sizes).
	if out, err := exec.Command("cat", filepath.Join(task, "maps")).Output(); err != nil || string(out) != maps {
		t.Errorf("cat maps: %v, %d bytes, want %d", err, len(out), len(maps))
	}

	// The region is the one vma at least as large as it.
	size := mib << 20
	var start, end uint64
	for _, line := range strings.Split(strings.TrimSpace(maps), "\n") {
		var s, e uint64
		fmt.Sscanf(strings.Fields(line)[0], "%x-%x", &s, &e)
		if e-s >= uint64(size) {
			if start != 0 {
				t.Fatalf("two vmas of %d MiB or more in\n%s", mib, maps)
			}
			start, end = s, e
		}
	}
	if start == 0 {
		t.Fatalf("no vma of %d MiB in\n%s", mib, maps)
	}
	pagesPath := filepath.Join(task, "vmas", fmt.Sprintf("%x-%x", start, end), "pages")
	pages, err := os.ReadFile(pagesPath)
	if err != nil {
		t.Fatal(err)
	}
	if uint64(len(pages)) != end-start {
		t.Fatalf("pages file is %d bytes, vma %d", len(pages), end-start)
	}
	want := counterPattern(size)
	off := bytes.Index(pages, want[:8])
	if off < 0 || off+size > len(pages) {
		t.Fatalf("pattern start at %d in %d bytes of pages", off, len(pages))
	}
	t.Logf("heap vma %x-%x (%d bytes), region at +%d", start, end, end-start, off)
	// cmp(1) of the mount's file, from the region start, with the pattern.
	wantPath := filepath.Join(t.TempDir(), "want")
	if err := os.WriteFile(wantPath, want, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("cmp", "-i", fmt.Sprintf("%d:0", off), "-n", itoa(size), pagesPath, wantPath).CombinedOutput(); err != nil {
		t.Errorf("cmp pages (from +%d) with the pattern: %v\n%s", off, err, out)
	}
	if !bytes.Equal(pages[off:off+size], want) {
		t.Errorf("pages differ from the pattern")
	}
	if tail := pages[off+size:]; !bytes.Equal(tail, make([]byte, len(tail))) {
		t.Errorf("%d bytes after the region are not zero", len(tail))
	}
	// The whole pages of the zeroed MiB are one hole; everything else of the
	// vma is data.
	zero := int64(off + size/2)
	holeStart := (zero + image.PageSize - 1) &^ (image.PageSize - 1)
	holeEnd := (zero + 1<<20) &^ (image.PageSize - 1)
	f, err := os.Open(pagesPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fd := int(f.Fd())
	seek := func(off int64, whence int) int64 {
		t.Helper()
		n, err := unix.Seek(fd, off, whence)
		if err != nil {
			t.Fatalf("lseek(%d, %d): %v", off, whence, err)
		}
		return n
	}
	if d := seek(0, unix.SEEK_DATA); d != 0 {
		t.Errorf("SEEK_DATA 0 = %d, want 0", d)
	}
	if h := seek(0, unix.SEEK_HOLE); h != holeStart {
		t.Errorf("SEEK_HOLE 0 = %#x, want %#x (the zeroed MiB)", h, holeStart)
	}
	if d := seek(holeStart, unix.SEEK_DATA); d != holeEnd {
		t.Errorf("SEEK_DATA %#x = %#x, want %#x (end of the zeroed MiB)", holeStart, d, holeEnd)
	}
	if h := seek(holeEnd, unix.SEEK_HOLE); h != int64(end-start) {
		t.Errorf("SEEK_HOLE %#x = %#x, want the end %#x", holeEnd, h, end-start)
	}
	if _, err := unix.Seek(fd, int64(end-start), unix.SEEK_DATA); !errors.Is(err, unix.ENXIO) {
		t.Errorf("SEEK_DATA at the end: %v, want ENXIO", err)
	}
	info, _ := os.ReadFile(filepath.Join(filepath.Dir(pagesPath), "info"))
	saved := (end-start)/image.PageSize - uint64(holeEnd-holeStart)/image.PageSize
	if !strings.Contains(string(info), fmt.Sprintf("pages_saved: %d\n", saved)) {
		t.Errorf("vma info does not say pages_saved: %d:\n%s", saved, info)
	}
	p.checkHealthy(t)
}

// TestMountRoundTrip: image.Load of a mounted checkpoint gives the model the
// store holds, field by field; every vma's pages file has data exactly
// where the store has pages, with their content.
func TestMountRoundTrip(t *testing.T) {
	for _, kind := range []string{"pthreads", "go"} {
		t.Run(kind, func(t *testing.T) {
			p := startProgram(t, kind, 16)
			store := filepath.Join(t.TempDir(), "store")
			m := mountStore(t, store)
			id := lastLine(ckptfs(t, "dump", "-s", store, itoa(p.Pid)))
			dir := filepath.Join(m.mnt, id)
			waitVisible(t, dir)
			got, err := image.Load(dir)
			if err != nil {
				t.Fatalf("image.Load(%s): %v", dir, err)
			}
			repo, err := dedup.OpenRepo(store)
			if err != nil {
				t.Fatal(err)
			}
			defer repo.Close()
			if _, ok := repo.(*dedup.Client); !ok {
				t.Fatalf("OpenRepo of a mounted store gave a %T, want a *dedup.Client", repo)
			}
			want, err := repo.Load(id)
			if err != nil {
				t.Fatal(err)
			}
			var diffs []string
			diffModel("Checkpoint", reflect.ValueOf(got).Elem(), reflect.ValueOf(want).Elem(), &diffs)
			for i, d := range diffs {
				if i == 20 {
					t.Errorf("... and %d more differences", len(diffs)-20)
					break
				}
				t.Errorf("mount vs store: %s", d)
			}
			nvma, npages := 0, 0
			for _, task := range want.Tasks {
				for _, v := range task.VMAs {
					npages += checkPagesFile(t, repo, image.PagesPath(dir, task.PID, v), v)
					nvma++
				}
			}
			t.Logf("%s: %d tasks, %d threads in the root task, %d vmas, %d pages compared",
				kind, len(want.Tasks), len(want.Tasks[0].Threads), nvma, npages)
			if npages < 15<<20/image.PageSize {
				t.Errorf("only %d pages compared, want the program's 16 MiB at least", npages)
			}
			p.checkHealthy(t)
		})
	}
}

// diffModel appends the differences between a (loaded from the mount) and b
// (the store's model) as "path: a vs b". VMA.Pages is skipped; nil and empty
// slices are equal (a file cannot tell them apart).
func diffModel(path string, a, b reflect.Value, out *[]string) {
	if a.Type() == reflect.TypeOf(time.Time{}) {
		if ta, tb := a.Interface().(time.Time), b.Interface().(time.Time); !ta.Equal(tb) {
			*out = append(*out, fmt.Sprintf("%s: %v vs %v", path, ta, tb))
		}
		return
	}
	switch a.Kind() {
	case reflect.Pointer:
		if a.IsNil() || b.IsNil() {
			if a.IsNil() != b.IsNil() {
				*out = append(*out, fmt.Sprintf("%s: nil %v vs nil %v", path, a.IsNil(), b.IsNil()))
			}
			return
		}
		diffModel(path, a.Elem(), b.Elem(), out)
	case reflect.Struct:
		for i := 0; i < a.NumField(); i++ {
			f := a.Type().Field(i)
			if !f.IsExported() || (a.Type() == reflect.TypeOf(image.VMA{}) && f.Name == "Pages") {
				continue
			}
			diffModel(path+"."+f.Name, a.Field(i), b.Field(i), out)
		}
	case reflect.Slice:
		if a.Type().Elem().Kind() == reflect.Uint8 {
			if !bytes.Equal(a.Bytes(), b.Bytes()) {
				*out = append(*out, fmt.Sprintf("%s: %d bytes vs %d bytes, differ", path, a.Len(), b.Len()))
			}
			return
		}
		if a.Len() != b.Len() {
			*out = append(*out, fmt.Sprintf("%s: len %d vs %d", path, a.Len(), b.Len()))
			return
		}
		for i := 0; i < a.Len(); i++ {
			diffModel(fmt.Sprintf("%s[%d]", path, i), a.Index(i), b.Index(i), out)
		}
	case reflect.Array:
		for i := 0; i < a.Len(); i++ {
			diffModel(fmt.Sprintf("%s[%d]", path, i), a.Index(i), b.Index(i), out)
		}
	default:
		if !reflect.DeepEqual(a.Interface(), b.Interface()) {
			*out = append(*out, fmt.Sprintf("%s: %#v vs %#v", path, a.Interface(), b.Interface()))
		}
	}
}

// dataRanges lists the [start, end) data ranges of an open file with
// SEEK_DATA and SEEK_HOLE.
func dataRanges(t testing.TB, f *os.File, size int64) [][2]int64 {
	t.Helper()
	var out [][2]int64
	for off := int64(0); off < size; {
		d, err := unix.Seek(int(f.Fd()), off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break
		}
		if err != nil {
			t.Fatalf("%s: SEEK_DATA %d: %v", f.Name(), off, err)
		}
		h, err := unix.Seek(int(f.Fd()), d, unix.SEEK_HOLE)
		if err != nil || h <= d {
			t.Fatalf("%s: SEEK_HOLE %d = %d, %v", f.Name(), d, h, err)
		}
		out = append(out, [2]int64{d, h})
		off = h
	}
	return out
}

// checkPagesFile checks that the pages file at path is as long as v, has
// data exactly at v's saved pages, and that these read as the store's
// pages (through repo.ReadPage). It returns the number of pages compared.
func checkPagesFile(t *testing.T, repo dedup.Repo, path string, v *image.VMA) int {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Errorf("vma %s: %v", v.DirName(), err)
		return 0
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || st.Size() != int64(v.Len()) {
		t.Errorf("vma %s: pages file size %v (%v), want %d", v.DirName(), st.Size(), err, v.Len())
		return 0
	}
	var want [][2]int64
	for _, pg := range v.Pages {
		s := int64(pg.Index) * image.PageSize
		if n := len(want); n > 0 && want[n-1][1] == s {
			want[n-1][1] += image.PageSize
		} else {
			want = append(want, [2]int64{s, s + image.PageSize})
		}
	}
	if got := dataRanges(t, f, st.Size()); !reflect.DeepEqual(got, want) && !(len(got) == 0 && len(want) == 0) {
		t.Errorf("vma %s (%s): data ranges %v, store has pages at %v", v.DirName(), v.Name, got, want)
		return 0
	}
	page := make([]byte, image.PageSize)
	buf := make([]byte, 1<<20)
	i := 0
	for _, r := range want {
		for off := r[0]; off < r[1]; off += int64(len(buf)) {
			n := min(int64(len(buf)), r[1]-off)
			if _, err := f.ReadAt(buf[:n], off); err != nil {
				t.Errorf("vma %s: read at %d: %v", v.DirName(), off, err)
				return i
			}
			for k := int64(0); k < n; k += image.PageSize {
				pg := v.Pages[i]
				if int64(pg.Index)*image.PageSize != off+k {
					t.Fatalf("vma %s: page %d at %d, expected at %d", v.DirName(), i, int64(pg.Index)*image.PageSize, off+k)
				}
				if err := repo.ReadPage(pg.Hash, page); err != nil {
					t.Errorf("vma %s: store page %s: %v", v.DirName(), pg.Hash, err)
					return i
				}
				if !bytes.Equal(buf[k:k+image.PageSize], page) {
					t.Errorf("vma %s: page %d (at +%#x) differs from the store's %s", v.DirName(), pg.Index, off+k, pg.Hash)
					return i
				}
				i++
			}
		}
	}
	return i
}

// TestMountLiveDumpRmGC: with the store mounted, a dump appears in the
// mount within a second (latest and by-name follow), rm makes it vanish at
// once, gc runs, and the older checkpoint still reads right.
func TestMountLiveDumpRmGC(t *testing.T) {
	const mib = 8
	p := startProgram(t, "static", mib)
	store := filepath.Join(t.TempDir(), "store")
	idA := lastLine(ckptfs(t, "dump", "-s", store, "--name", "before", itoa(p.Pid)))
	m := mountStore(t, store)
	if _, err := os.Stat(filepath.Join(m.mnt, idA, "info")); err != nil {
		t.Fatalf("checkpoint dumped before the mount: %v", err)
	}
	p.waitTicks(t, 1)

	idB := lastLine(ckptfs(t, "dump", "-s", store, "--name", "live", itoa(p.Pid)))
	took := waitVisible(t, filepath.Join(m.mnt, idB, "info"))
	t.Logf("dump while mounted visible %v after the dump returned", took)
	link := func(name string) string { s, _ := os.Readlink(filepath.Join(m.mnt, name)); return s }
	if got := link("latest"); got != idB {
		t.Errorf("latest -> %q, want the new %s", got, idB)
	}
	if got := link("by-name/live"); got != "../"+idB {
		t.Errorf("by-name/live -> %q, want ../%s", got, idB)
	}
	ents, _ := os.ReadDir(m.mnt)
	if !dirHas(ents, idB) || !dirHas(ents, idA) {
		t.Errorf("mount lists %v, want %s and %s", ents, idA, idB)
	}
	// Read something of the new checkpoint so the kernel holds its inodes.
	if _, err := os.ReadFile(filepath.Join(m.mnt, idB, "tasks", itoa(p.Pid), "maps")); err != nil {
		t.Fatal(err)
	}

	out := ckptfs(t, "rm", "-s", store, idB)
	t.Logf("rm: %s", strings.TrimSpace(out))
	start := time.Now()
	for {
		_, err := os.Lstat(filepath.Join(m.mnt, idB))
		ents, _ := os.ReadDir(m.mnt)
		if errors.Is(err, os.ErrNotExist) && !dirHas(ents, idB) {
			t.Logf("removed checkpoint gone from the mount %v after rm returned", time.Since(start))
			break
		}
		if time.Since(start) > time.Second {
			t.Fatalf("%s still in the mount 1s after rm (lstat: %v)", idB, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if got := link("latest"); got != idA {
		t.Errorf("latest -> %q after rm, want %s", got, idA)
	}
	if _, err := os.Lstat(filepath.Join(m.mnt, "by-name", "live")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("by-name/live after rm: %v, want it gone", err)
	}
	out = ckptfs(t, "gc", "-s", store)
	t.Logf("gc: %s", strings.TrimSpace(out))
	if !strings.HasPrefix(out, "freed ") {
		t.Errorf("gc said %q", out)
	}
	if out := ckptfs(t, "verify", "-s", store); !strings.Contains(out, "ok") {
		t.Errorf("verify after gc: %q", out)
	}
	// The first checkpoint still reads right after gc: its region (not read
	// through the mount before, so not in the page cache) is the pattern.
	ls := ckptfs(t, "ls", "-s", store)
	if strings.Contains(ls, idB) || !strings.Contains(ls, idA) {
		t.Errorf("ls after rm:\n%s", ls)
	}
	maps, err := os.ReadFile(filepath.Join(m.mnt, idA, "tasks", itoa(p.Pid), "maps"))
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, line := range strings.Split(strings.TrimSpace(string(maps)), "\n") {
		var s, e uint64
		fmt.Sscanf(strings.Fields(line)[0], "%x-%x", &s, &e)
		if e-s < mib<<20 {
			continue
		}
		pages, err := os.ReadFile(filepath.Join(m.mnt, idA, "tasks", itoa(p.Pid), "vmas", fmt.Sprintf("%x-%x", s, e), "pages"))
		if err != nil {
			t.Fatal(err)
		}
		want := counterPattern(mib << 20)
		off := bytes.Index(pages, want[:8])
		if off < 0 || off+len(want) > len(pages) || !bytes.Equal(pages[off:off+len(want)], want) {
			t.Errorf("checkpoint %s after gc: region is not the pattern (start %d)", idA, off)
		}
		found = true
	}
	if !found {
		t.Errorf("no %d MiB vma in\n%s", mib, maps)
	}

	// A name given again points to the newer checkpoint, and back to the
	// older one when the newer is removed.
	if got := link("by-name/before"); got != "../"+idA {
		t.Fatalf("by-name/before -> %q, want ../%s", got, idA)
	}
	idC := lastLine(ckptfs(t, "dump", "-s", store, "--name", "before", itoa(p.Pid)))
	waitVisible(t, filepath.Join(m.mnt, idC))
	if got := link("by-name/before"); got != "../"+idC {
		t.Errorf("by-name/before -> %q after a newer dump of that name, want ../%s", got, idC)
	}
	if _, err := os.Stat(filepath.Join(m.mnt, "by-name", "before", "info")); err != nil {
		t.Errorf("by-name/before/info: %v", err)
	}
	ckptfs(t, "rm", "-s", store, idC)
	if got := link("by-name/before"); got != "../"+idA {
		t.Errorf("by-name/before -> %q right after rm of %s, want ../%s", got, idC, idA)
	}
	p.checkHealthy(t)
}

func dirHas(ents []os.DirEntry, name string) bool {
	for _, e := range ents {
		if e.Name() == name {
			return true
		}
	}
	return false
}

// TestMountRseq: the threads of a glibc program registered rseq with
// glibc's signature (RSEQ_SIG, 0x53053053 on x86) and no flags; the
// checkpoint's threads/<tid>/rseq says so. (The restorer registers rseq
// again with the recorded signature: a wrong one makes the kernel kill the
// thread on its first rseq abort.)
func TestMountRseq(t *testing.T) {
	p := startProgram(t, "pthreads", 4)
	tids := procTIDs(t, p.Pid)
	store := filepath.Join(t.TempDir(), "store")
	m := mountStore(t, store)
	id := lastLine(ckptfs(t, "dump", "-s", store, itoa(p.Pid)))
	for _, tid := range tids {
		path := filepath.Join(m.mnt, id, "tasks", itoa(p.Pid), "threads", itoa(tid), "rseq")
		b, err := os.ReadFile(path)
		if err != nil {
			t.Errorf("thread %d: %v (glibc registers rseq for every thread)", tid, err)
			continue
		}
		if s := string(b); !strings.Contains(s, "sig: 0x53053053\n") || !strings.Contains(s, "flags: 0x0\n") {
			t.Errorf("thread %d: rseq is\n%swant sig: 0x53053053 and flags: 0x0", tid, s)
		}
	}
}
