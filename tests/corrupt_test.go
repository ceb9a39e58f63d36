package tests

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The corruption tests of issue 17, end to end with the ckptfs binary:
// damaged copies of a checkpoint tree and damaged copies of a store. Every
// command runs under a timeout (a hang fails the trial), its output is
// searched for Go panics, and whatever is restored must check its own
// memory good. CKPTFS_CORRUPT_TRIALS sets the number of trials of each
// test (defaults: 16 tree and 4 store trials, 6 and 2 with -short);
// CKPTFS_CORRUPT_SEED replays a run.

const commandTimeout = 20 * time.Second

func trials(t *testing.T, normal, short int) int {
	if s := os.Getenv("CKPTFS_CORRUPT_TRIALS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			t.Fatalf("CKPTFS_CORRUPT_TRIALS=%q", s)
		}
		return n
	}
	if testing.Short() {
		return short
	}
	return normal
}

func corruptRand(t *testing.T) *rand.Rand {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("CKPTFS_CORRUPT_SEED"); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	t.Logf("seed %d (CKPTFS_CORRUPT_SEED)", seed)
	return rand.New(rand.NewPCG(seed, 17))
}

// run runs the ckptfs binary under commandTimeout; it fails the test on a
// hang or a panic and returns stdout, stderr and the error.
func run(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(built(t), "ckptfs"), args...)
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Errorf("ckptfs %s hangs (killed after %v)", strings.Join(args, " "), commandTimeout)
	}
	if strings.Contains(errOut.String(), "panic:") || strings.Contains(errOut.String(), "goroutine ") {
		t.Errorf("ckptfs %s panicked:\n%s", strings.Join(args, " "), errOut.String())
	}
	return out.String(), errOut.String(), err
}

// treeFiles lists the regular files of a tree, relative to it.
func treeFiles(t *testing.T, dir string) []string {
	var files []string
	filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			rel, _ := filepath.Rel(dir, path)
			files = append(files, rel)
		}
		return nil
	})
	if len(files) == 0 {
		t.Fatalf("no files in %s", dir)
	}
	return files
}

func copyTree(t *testing.T, from string) string {
	to := filepath.Join(t.TempDir(), "copy")
	if out, err := exec.Command("cp", "-a", from, to).CombinedOutput(); err != nil {
		t.Fatalf("cp -a: %v\n%s", err, out)
	}
	return to
}

// flipBytes changes n random bytes of path (a byte of a sparse file's
// hole becomes data).
func flipBytes(t *testing.T, r *rand.Rand, path string, n int) string {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	if st.Size() == 0 {
		return "empty"
	}
	var offs []int64
	for range n {
		off := r.Int64N(st.Size())
		b := []byte{0}
		f.ReadAt(b, off)
		b[0] ^= byte(1 + r.IntN(255))
		f.WriteAt(b, off)
		offs = append(offs, off)
	}
	return fmt.Sprint(offs)
}

// waitRestored waits for n new ticks of a restored program; it returns
// false if the program died or stopped ticking.
func waitRestored(p *program, before, n int) bool {
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if len(p.ticks()) >= before+n {
			return true
		}
		if ok, _ := running(p.Pid); !ok {
			return false
		}
	}
	return false
}

// badTicks returns the tick lines after the first before that are not good.
func badTicks(p *program, before int) []string {
	var bad []string
	for _, l := range p.ticks()[before:] {
		if !strings.HasSuffix(l, " ok") {
			bad = append(bad, l)
		}
	}
	return bad
}

// TestTreeCorruption restores damaged `cp -a` copies of a checkpoint:
// random bytes flipped in a pages file, a pagemap or any other file, a
// FIFO in place of a pages file or of cmdline. Restore refuses (a clear
// error, no process left) or restores a program whose memory checks good;
// never a panic or a hang. Page damage is always refused.
func TestTreeCorruption(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root (ptrace, FUSE)")
	}
	p := startProgram(t, "static", 4)
	store := filepath.Join(t.TempDir(), "store")
	m := mountStore(t, store)
	id := lastLine(ckptfs(t, "dump", "-s", store, "--kill", itoa(p.Pid)))
	waitGone(t, p.Pid)
	tree := copyTree(t, filepath.Join(m.mnt, id))
	m.unmount(t)
	files := treeFiles(t, tree)
	var pages, pagemaps, others []string
	for _, f := range files {
		switch filepath.Base(f) {
		case "pages":
			// The vdso unit is the kernel's, not restored from pages.
			info, _ := os.ReadFile(filepath.Join(tree, filepath.Dir(f), "info"))
			if strings.Contains(string(info), "[vdso]") || strings.Contains(string(info), "[vvar") || strings.Contains(string(info), "[vsyscall]") {
				others = append(others, f)
				continue
			}
			pages = append(pages, f)
		case "pagemap":
			pagemaps = append(pagemaps, f)
		default:
			others = append(others, f)
		}
	}
	unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
	defer unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
	r := corruptRand(t)
	outcomes := map[string]int{}
	for trial := range trials(t, 16, 6) {
		c := copyTree(t, tree)
		pick := func(l []string) string { return l[r.IntN(len(l))] }
		var what string
		pageDamage := false
		switch k := r.IntN(9); {
		case k < 4:
			f := pick(pages)
			what = "flip bytes of " + f + " at " + flipBytes(t, r, filepath.Join(c, f), 1+r.IntN(3))
			pageDamage = true
		case k < 6:
			f := pick(pagemaps)
			what = "flip bytes of " + f + " at " + flipBytes(t, r, filepath.Join(c, f), 1)
		case k < 8:
			f := pick(others)
			what = "flip bytes of " + f + " at " + flipBytes(t, r, filepath.Join(c, f), 1)
		default:
			f := pick(pages)
			os.Remove(filepath.Join(c, f))
			if err := unix.Mkfifo(filepath.Join(c, f), 0o644); err != nil {
				t.Fatal(err)
			}
			what = "FIFO in place of " + f
		}
		t.Run(strconv.Itoa(trial), func(t *testing.T) {
			t.Log(what)
			before := len(p.ticks())
			out, errOut, err := run(t, "restore", c)
			if err != nil {
				t.Logf("refused: %s", strings.TrimSpace(errOut))
				if !strings.Contains(errOut, "ckptfs: ") || len(strings.TrimSpace(errOut)) < 20 {
					t.Errorf("refused without a clear error: %q", errOut)
				}
				if ok, _ := running(p.Pid); ok {
					t.Errorf("pid %d runs after a refused restore", p.Pid)
				}
				outcomes["refused"]++
				return
			}
			if pageDamage {
				t.Errorf("damaged pages restored: %s", lastLine(out))
			}
			alive := waitRestored(p, before, 2)
			if bad := badTicks(p, before); len(bad) > 0 {
				t.Errorf("restored with corrupt memory: %q", bad)
			}
			if alive {
				outcomes["restored, memory good"]++
			} else {
				st, _ := running(p.Pid)
				t.Logf("restored, then the program stopped ticking (running %v): the edit broke it", st)
				outcomes["restored, then died"]++
			}
			unix.Kill(p.Pid, unix.SIGKILL)
			waitGone(t, p.Pid)
		})
	}
	t.Logf("outcomes: %v", outcomes)

	// Every file of a tree is read without blocking on a FIFO: cmdline
	// is read by image.Load.
	t.Run("FIFOCmdline", func(t *testing.T) {
		c := copyTree(t, tree)
		f := filepath.Join(c, "tasks", itoa(p.Pid), "cmdline")
		os.Remove(f)
		if err := unix.Mkfifo(f, 0o644); err != nil {
			t.Fatal(err)
		}
		if _, errOut, err := run(t, "restore", c); err == nil {
			t.Errorf("restored with a FIFO for cmdline")
		} else {
			t.Logf("refused: %s", strings.TrimSpace(errOut))
		}
	})
}

// TestStoreCorruptionCLI damages copies of a store holding two
// checkpoints of a running program (a byte of its value log flipped, or
// its Badger MANIFEST removed) and runs ls, verify, mount + read every
// pages file, restore from the mount, then verify --repair: no panic, no
// hang; the damage is reported (a refusal to open, or verify's problems);
// a mount read of a damaged page fails (EIO) while the others read; the
// repaired store verifies clean and its checkpoints restore with good
// memory.
func TestStoreCorruptionCLI(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root (ptrace, FUSE)")
	}
	p := startProgram(t, "static", 4)
	store := filepath.Join(t.TempDir(), "store")
	os.MkdirAll(store, 0o700)
	ckptfs(t, "dump", "-s", store, itoa(p.Pid))
	p.waitTicks(t, 1)
	ckptfs(t, "dump", "-s", store, "--kill", itoa(p.Pid))
	waitGone(t, p.Pid)
	// The program's output is not O_APPEND: a restored program writes at
	// the checkpoint's offset, over what the trials before wrote. Each
	// restore gets the output back as it was at the dump, so that its ticks
	// are new lines.
	atDump, err := os.ReadFile(p.Out)
	if err != nil {
		t.Fatal(err)
	}
	unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
	defer unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
	r := corruptRand(t)
	for trial := range trials(t, 4, 2) {
		t.Run(strconv.Itoa(trial), func(t *testing.T) {
			s := copyTree(t, store)
			os.Remove(filepath.Join(s, "ckptfs.sock"))
			var what string
			if trial%4 == 3 {
				os.Remove(filepath.Join(s, "MANIFEST"))
				what = "MANIFEST removed"
			} else {
				vlogs, _ := filepath.Glob(filepath.Join(s, "*.vlog"))
				var vlog string
				var size int64
				for _, v := range vlogs {
					if fi, _ := os.Stat(v); fi.Size() > size {
						vlog, size = v, fi.Size()
					}
				}
				what = "flip a byte of " + filepath.Base(vlog) + " at " + flipBytes(t, r, vlog, 1)
			}
			t.Log(what)
			_, lsErr, lsFail := run(t, "ls", "-s", s)
			vOut, vErr, vFail := run(t, "verify", "-s", s)
			if vFail == nil {
				t.Errorf("verify passes a damaged store:\n%s", vOut)
			}
			t.Logf("verify: %s%s", lastLine(vOut+"\n-"), strings.TrimSpace(vErr))
			refused := lsFail != nil
			if refused && !strings.Contains(lsErr, "verify --repair") {
				t.Errorf("ls refuses the store without saying what to do: %s", lsErr)
			}
			if !refused {
				readMount(t, s, p)
			}
			rOut, rErr, err := run(t, "verify", "--repair", "-s", s)
			if err != nil {
				t.Fatalf("verify --repair: %v\n%s\n%s", err, rOut, rErr)
			}
			t.Logf("repair:\n%s", rOut)
			if !strings.Contains(rOut, "ok: every page, manifest, page table and reference checked") {
				t.Errorf("the repaired store does not verify clean:\n%s", rOut)
			}
			if what == "MANIFEST removed" && strings.Contains(rOut, "lost:") {
				t.Errorf("a lost MANIFEST cost checkpoints:\n%s", rOut)
			}
			lsOut, _, err := run(t, "ls", "-s", s)
			if err != nil {
				t.Fatalf("ls after repair: %v", err)
			}
			lines := strings.Split(strings.TrimSpace(lsOut), "\n")
			if len(lines) < 2 {
				t.Logf("repair kept no checkpoint")
				return
			}
			// Restore the newest kept checkpoint from a mount.
			id := strings.Fields(lines[len(lines)-1])[0]
			m := mountStore(t, s)
			if err := os.WriteFile(p.Out, atDump, 0o644); err != nil {
				t.Fatal(err)
			}
			before := len(p.ticks())
			if _, errOut, err := run(t, "restore", filepath.Join(m.mnt, id)); err != nil {
				t.Fatalf("restore of a kept checkpoint: %v\n%s", err, errOut)
			}
			if !waitRestored(p, before, 2) {
				t.Errorf("the restored program does not tick")
			}
			if bad := badTicks(p, before); len(bad) > 0 {
				t.Errorf("restored with corrupt memory: %q", bad)
			}
			unix.Kill(p.Pid, unix.SIGKILL)
			waitGone(t, p.Pid)
			m.unmount(t)
		})
	}
}

// readMount mounts a damaged store that opens, reads every pages file of
// every checkpoint (a damaged page gives EIO, nothing hangs) and restores
// each checkpoint from the mount: refused, or good memory.
func readMount(t *testing.T, store string, p *program) {
	t.Helper()
	m := mountStore(t, store)
	defer m.unmount(t)
	pages, _ := filepath.Glob(filepath.Join(m.mnt, "*", "tasks", "*", "vmas", "*", "pages"))
	eio := 0
	for _, f := range pages {
		done := make(chan error, 1)
		go func() { _, err := os.ReadFile(f); done <- err }()
		select {
		case err := <-done:
			if errors.Is(err, unix.EIO) {
				eio++
			} else if err != nil {
				t.Errorf("read %s: %v", f, err)
			}
		case <-time.After(commandTimeout):
			t.Fatalf("read %s hangs", f)
		}
	}
	t.Logf("mount: %d pages files read, %d gave EIO", len(pages), eio)
	ids, _ := os.ReadDir(m.mnt)
	for _, e := range ids {
		if _, err := os.Stat(filepath.Join(m.mnt, e.Name(), "info")); err != nil || e.Name() == "by-name" {
			continue
		}
		before := len(p.ticks())
		_, errOut, err := run(t, "restore", filepath.Join(m.mnt, e.Name()))
		if err != nil {
			t.Logf("restore %s refused: %s", e.Name(), strings.TrimSpace(errOut))
			continue
		}
		waitRestored(p, before, 2)
		if bad := badTicks(p, before); len(bad) > 0 {
			t.Errorf("restored %s from a damaged store with corrupt memory: %q", e.Name(), bad)
		}
		unix.Kill(p.Pid, unix.SIGKILL)
		waitGone(t, p.Pid)
	}
}
