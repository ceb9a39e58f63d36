package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The tests of this package run the real ckptfs binary, built once into a
// temporary directory that TestMain removes.

var binDir string

func TestMain(m *testing.M) {
	// Fds inherited from whoever started the tests (a pipe at fd 251 on
	// the shared machines) must not reach the programs the tests dump.
	if ents, err := os.ReadDir("/proc/self/fd"); err == nil {
		for _, e := range ents {
			if fd, err := strconv.Atoi(e.Name()); err == nil && fd > 2 {
				unix.CloseOnExec(fd)
			}
		}
	}
	code := func() int {
		var err error
		if binDir, err = os.MkdirTemp("", "ckptfs-cli-test-"); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(binDir)
		build := exec.Command("go", "build", "-o", filepath.Join(binDir, "ckptfs"), ".")
		if out, err := build.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "build ckptfs: %v\n%s", err, out)
			return 1
		}
		return m.Run()
	}()
	os.Exit(code)
}

// result is one run of the binary.
type result struct {
	stdout, stderr string
	code           int
}

// ckptfs runs the binary with args (CKPTFS_STORE unset) and returns what
// it printed and its exit status.
func ckptfs(t testing.TB, args ...string) result {
	t.Helper()
	return ckptfsEnv(t, nil, args...)
}

// mustCkptfsEnv is mustCkptfs with env added to the environment.
func mustCkptfsEnv(t testing.TB, env []string, args ...string) result {
	t.Helper()
	r := ckptfsEnv(t, env, args...)
	if r.code != 0 {
		t.Fatalf("ckptfs %s: exit %d\n%s", strings.Join(args, " "), r.code, r.stderr)
	}
	return r
}

// ckptfsEnv is ckptfs with env added to the environment.
func ckptfsEnv(t testing.TB, env []string, args ...string) result {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "ckptfs"), args...)
	cmd.Env = append(withoutStoreEnv(), env...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	r := result{out.String(), errOut.String(), 0}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		t.Fatalf("ckptfs %s: %v", strings.Join(args, " "), err)
	}
	return r
}

// mustCkptfs is ckptfs that fails the test unless the exit status is 0.
func mustCkptfs(t testing.TB, args ...string) result {
	t.Helper()
	r := ckptfs(t, args...)
	if r.code != 0 {
		t.Fatalf("ckptfs %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r
}

func withoutStoreEnv() []string {
	var env []string
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "CKPTFS_STORE=") {
			env = append(env, e)
		}
	}
	return env
}

// startSleeper starts a process to dump (sleep, fds 0-2 on /dev/null,
// extra fds at 3...) and kills it when the test ends.
func startSleeper(t testing.TB, extra ...*os.File) int {
	return startSleeperCmd(t, extra...).Process.Pid
}

// killChild kills a child the test started and reaps it.
func killChild(cmd *exec.Cmd) {
	cmd.Process.Kill()
	cmd.Wait()
}

func startSleeperCmd(t testing.TB, extra ...*os.File) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("sleep", "1000")
	cmd.ExtraFiles = extra
	cmd.SysProcAttr = &unix.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	// Wait until it is sleep, not the forked test binary on its way to exec.
	for i := 0; ; i++ {
		if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); strings.TrimSpace(string(comm)) == "sleep" {
			break
		}
		if i > 2000 {
			t.Fatalf("pid %d never became sleep", pid)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return cmd
}

// needRoot skips tests that ptrace processes or mount FUSE.
func needRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: ptrace of any process, FUSE, clone3 set_tid")
	}
	if testing.Short() {
		t.Skip("-short: dumps and restores real processes")
	}
}

// waitGone waits until pid no longer exists (or is a zombie nobody reaps
// yet: PID 1 reaps orphans only every few seconds).
func waitGone(t testing.TB, pid int) {
	t.Helper()
	for i := 0; ; i++ {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return
		}
		if f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:])); len(f) > 0 && f[0] == "Z" {
			if i > 3000 {
				t.Fatalf("pid %d stays a zombie", pid)
			}
		} else if i > 3000 {
			t.Fatalf("pid %d does not go away", pid)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
