package tests

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// startShm starts tests/progs/shm.c in the given mode, waits for its first
// tick and kills it when the test ends.
func startShm(t *testing.T, args ...string) *program {
	t.Helper()
	return startArgv(t, "shm-"+args[0], append([]string{buildProg(t, "shm")}, args...))
}

// dumpKillRestore dumps the tree of root with --kill into a mounted store,
// runs beforeRestore (if any) on the checkpoint directory, restores it from
// the mount, checks the restored tree and returns the directory (valid
// until the test ends).
func dumpKillRestore(t *testing.T, root int, beforeRestore func(dir string)) string {
	t.Helper()
	dir, pids := dumpKill(t, root)
	if beforeRestore != nil {
		beforeRestore(dir)
	}
	restoreFrom(t, dir, pids)
	if got := treePids(root); fmt.Sprint(got) != fmt.Sprint(pids) {
		t.Fatalf("restored tree %v, want %v", got, pids)
	}
	return dir
}

// objectInfo reads objects/<id>/info of checkpoint dir as a map.
func objectInfo(t *testing.T, dir, id string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "objects", id, "info"))
	if err != nil {
		t.Fatal(err)
	}
	kv := map[string]string{}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok {
			kv[k] = strings.TrimSpace(v)
		}
	}
	return kv
}

// TestRestoreMemfd: a parent and child that both hold a memfd fd and map
// it go on sharing it after dump --kill and restore: the child answers
// through pwrite what the parent writes through the mapping, and the
// parent reads the answer through the mapping and with pread. The memfd
// keeps its name, size, seals, fd offset and the page written only
// through the fd; both fds and both mappings are one inode again.
// memfd-nofd: the same memfd only mapped (fd closed) and sealed
// F_SEAL_FUTURE_WRITE while the writable mappings exist, checked through
// /proc/self/map_files.
func TestRestoreMemfd(t *testing.T) {
	for _, mode := range []string{"memfd", "memfd-nofd"} {
		t.Run(mode, func(t *testing.T) {
			p := startShm(t, mode)
			p.waitTicks(t, 3)
			pids := treePids(p.Pid)
			if len(pids) != 2 {
				t.Fatalf("tree %v, want parent and child", pids)
			}
			dir := dumpKillRestore(t, p.Pid, nil)
			p.waitTicks(t, 5)
			p.checkHealthy(t)

			objs, _ := filepath.Glob(filepath.Join(dir, "objects", "memfd-*"))
			if len(objs) != 1 {
				t.Fatalf("memfd objects %v, want one", objs)
			}
			id := filepath.Base(objs[0])
			if mode == "memfd" {
				b, err := os.ReadFile(filepath.Join(dir, "tasks", itoa(p.Pid), "fdinfo", "3"))
				if err != nil {
					t.Fatal(err)
				}
				if !strings.Contains(string(b), "\nobject: "+id+"\n") {
					t.Fatalf("fdinfo/3 does not name %s:\n%s", id, b)
				}
			}
			info := objectInfo(t, dir, id)
			seals := "0x6" // F_SEAL_SHRINK|F_SEAL_GROW
			if mode == "memfd-nofd" {
				seals = "0x16" // and F_SEAL_FUTURE_WRITE
			}
			if info["name"] != `"ckptfs-shm-test"` || info["size"] != "12288" || info["seals"] != seals || info["data_ranges"] != "8192-12288" {
				t.Fatalf("objects/%s/info: %v", id, info)
			}

			// After the restore: one memfd per tree, named as before, that
			// the fds and mappings all are.
			var inodes []string
			for _, pid := range pids {
				if mode == "memfd" {
					link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/3", pid))
					if err != nil || link != "/memfd:ckptfs-shm-test (deleted)" {
						t.Fatalf("pid %d fd 3 -> %q (%v)", pid, link, err)
					}
					var st unix.Stat_t
					if err := unix.Stat(fmt.Sprintf("/proc/%d/fd/3", pid), &st); err != nil {
						t.Fatal(err)
					}
					inodes = append(inodes, strconv.FormatUint(st.Ino, 10))
				}
				maps, _ := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
				re := regexp.MustCompile(`(?m)^\S+ rw-s 00000000 \S+ (\d+)\s+/memfd:ckptfs-shm-test \(deleted\)$`)
				mm := re.FindStringSubmatch(string(maps))
				if mm == nil {
					t.Fatalf("pid %d maps no memfd:\n%s", pid, maps)
				}
				inodes = append(inodes, mm[1])
			}
			for _, ino := range inodes {
				if ino != inodes[0] {
					t.Fatalf("fds and mappings are different files after restore: inodes %v", inodes)
				}
			}
		})
	}
}

// TestRestoreMemfdPrivate: a memfd mapped MAP_PRIVATE comes back as the
// same memfd as the process' fd on it: pages the process wrote are its
// private copies, the others still show what is written to the file.
func TestRestoreMemfdPrivate(t *testing.T) {
	p := startShm(t, "memfd-private")
	p.waitTicks(t, 3)
	dumpKillRestore(t, p.Pid, nil)
	p.waitTicks(t, 5)
	p.checkHealthy(t)
	var st unix.Stat_t
	if err := unix.Stat(fmt.Sprintf("/proc/%d/fd/3", p.Pid), &st); err != nil {
		t.Fatal(err)
	}
	maps, _ := os.ReadFile(fmt.Sprintf("/proc/%d/maps", p.Pid))
	re := regexp.MustCompile(fmt.Sprintf(`(?m)^\S+ rw-p 00000000 \S+ %d\s+/memfd:ckptfs-shm-private \(deleted\)$`, st.Ino))
	if !re.Match(maps) {
		t.Fatalf("maps show no private mapping of fd 3 (inode %d):\n%s", st.Ino, maps)
	}
}

// sysvLine returns the /proc/sysvipc/shm fields of segment shmid, nil if
// there is none.
func sysvLine(shmid int) []string {
	b, _ := os.ReadFile("/proc/sysvipc/shm")
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 6 && f[1] == itoa(shmid) {
			return f
		}
	}
	return nil
}

// TestRestoreSysVShm: a parent and child attached to a SysV segment go on
// sharing it after dump --kill and restore. The segment keeps its id, key,
// size and mode (the program checks shmctl(IPC_STAT) on its shmid every
// tick, 2 attaches). sysv: the segment left behind by the kill, scribbled
// on, is taken over with the checkpoint's contents (its zero page too); sysv-gone: it was
// removed, and is created again with the same id; sysv-busy: while
// another process is attached to it the restore is refused (then it goes
// as sysv); sysv-rm: a segment marked IPC_RMID is recreated, attached and
// marked again.
func TestRestoreSysVShm(t *testing.T) {
	for i, mode := range []string{"sysv", "sysv-gone", "sysv-busy", "sysv-rm"} {
		t.Run(mode, func(t *testing.T) {
			key := 0x6b700000 | os.Getpid()&0xfff0 | i
			prog := mode
			if mode != "sysv-rm" {
				prog = "sysv"
			}
			p := startShm(t, prog, fmt.Sprintf("%#x", key))
			b, _ := os.ReadFile(p.Out)
			m := regexp.MustCompile(`(?m)^shmid (\d+) ok$`).FindStringSubmatch(string(b))
			if m == nil {
				t.Fatalf("no shmid line:\n%s", b)
			}
			shmid, _ := strconv.Atoi(m[1])
			t.Cleanup(func() {
				// Still ours (same key): removed now if unattached, else
				// when its last process is killed.
				if f := sysvLine(shmid); f != nil && f[0] == strconv.Itoa(int(int32(uint32(key)))) {
					exec.Command("ipcrm", "-m", itoa(shmid)).Run()
				}
			})
			p.waitTicks(t, 3)
			pids := treePids(p.Pid)
			before := sysvLine(shmid)
			dir := dumpKillRestore(t, p.Pid, func(dir string) {
				switch mode {
				case "sysv":
					mem, err := unix.SysvShmAttach(shmid, 0, 0)
					if err != nil {
						t.Fatal(err)
					}
					for i := range mem {
						mem[i] = 0xee
					}
					unix.SysvShmDetach(mem)
				case "sysv-busy":
					// Another process is attached: the restore is refused,
					// and leaves nothing behind.
					mem, err := unix.SysvShmAttach(shmid, 0, 0)
					if err != nil {
						t.Fatal(err)
					}
					_, errOut, err := ckptfsErr(t, "restore", dir)
					unix.SysvShmDetach(mem)
					if err == nil || !strings.Contains(errOut, fmt.Sprintf("SysV segment %d", shmid)) || !strings.Contains(errOut, "1 processes are attached to it") {
						t.Fatalf("restore with the segment attached elsewhere: %v\n%s", err, errOut)
					}
					t.Logf("refused: %s", strings.TrimSpace(errOut))
					for _, pid := range pids {
						waitGone(t, pid)
					}
				case "sysv-gone":
					if out, err := exec.Command("ipcrm", "-m", itoa(shmid)).CombinedOutput(); err != nil {
						t.Fatalf("ipcrm: %v %s", err, out)
					}
				}
			})
			p.waitTicks(t, 5)
			p.checkHealthy(t)

			info := objectInfo(t, dir, "sysv-"+itoa(shmid))
			wantKey := fmt.Sprintf("%#08x", key)
			if mode == "sysv-rm" {
				wantKey = "0x00000000"
			}
			if info["shmid"] != itoa(shmid) || info["key"] != wantKey || info["size"] != "12388" || info["mode"] != "640" {
				t.Fatalf("objects/sysv-%d/info: %v", shmid, info)
			}
			after := sysvLine(shmid)
			// key shmid perms size ... nattch
			if after == nil || fmt.Sprint(after[:4]) != fmt.Sprint(before[:4]) || after[6] != "2" {
				t.Fatalf("segment after restore %v, before %v", after, before)
			}
			// ipcs -m: key shmid owner perms bytes nattch status
			out, err := exec.Command("ipcs", "-m").CombinedOutput()
			if err != nil {
				t.Fatalf("ipcs -m: %v\n%s", err, out)
			}
			want := fmt.Sprintf("%s %d root 640 12388 2", wantKey, shmid)
			if mode == "sysv-rm" {
				want += " dest"
			}
			found := false
			for _, l := range strings.Split(string(out), "\n") {
				found = found || strings.Join(strings.Fields(l), " ") == want
			}
			if !found {
				t.Fatalf("ipcs -m shows no %q:\n%s", want, out)
			}
			for _, pid := range treePids(p.Pid) {
				maps, _ := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
				re := regexp.MustCompile(fmt.Sprintf(`(?m)^\S+ rw-s 00000000 \S+ %d\s+/SYSV%08x \(deleted\)$`, shmid, key))
				if !re.Match(maps) {
					t.Fatalf("pid %d maps no attach of segment %d (/SYSV%08x):\n%s", pid, shmid, key, maps)
				}
			}
		})
	}
}
