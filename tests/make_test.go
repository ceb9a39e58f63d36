package tests

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// writeMakeProject writes a small C project: n units, each summing a
// different series, a main printing their results, and a Makefile whose
// gate rule waits for the file "go" (so a dump catches make -j2 mid-build,
// its jobserver pipe shared by the jobs) unless it exists, and one unit,
// big.c, that takes gcc a few seconds, built beside the gate.
func writeMakeProject(t *testing.T, dir string, n int) {
	t.Helper()
	var objs, decls, calls strings.Builder
	for i := 0; i < n; i++ {
		src := fmt.Sprintf("long unit%d(void) { long s = 0; for (long k = 0; k < %d; k++) s += k * k %% %d; return s; }\n", i, 1000+i*37, 7+i)
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("u%d.c", i)), []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&objs, " u%d.o", i)
		fmt.Fprintf(&decls, "long unit%d(void);\n", i)
		fmt.Fprintf(&calls, "\tprintf(\"unit%d %%ld\\n\", unit%d());\n", i, i)
	}
	// big.c takes gcc a few seconds: the dump catches cc1 at work.
	var big strings.Builder
	for i := 0; i < 600; i++ {
		fmt.Fprintf(&big, "long big%d(long x) { long s = x; for (int k = 0; k < %d; k++) s = s * 31 + k %% 7; return s; }\n", i, i%13+3)
	}
	big.WriteString("long big(void) { return big0(1) + big599(2); }\n")
	if err := os.WriteFile(filepath.Join(dir, "big.c"), []byte(big.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	objs.WriteString(" big.o")
	decls.WriteString("long big(void);\n")
	calls.WriteString("\tprintf(\"big %ld\\n\", big());\n")
	main := "#include <stdio.h>\n" + decls.String() + "int main(void) {\n" + calls.String() + "\treturn 0;\n}\n"
	mk := "all: prog\n" +
		"prog: gate big.o main.o" + objs.String() + "\n\tgcc -o $@ main.o" + objs.String() + "\n" +
		"gate:\n\twhile [ ! -e go ]; do sleep 0.05; done; echo gate passed > gate\n" +
		"%.o: %.c\n\tgcc -O2 -c -o $@ $<\n"
	for name, body := range map[string]string{"main.c": main, "Makefile": mk} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestRestoreMakeJ2: make -j2 of a small C project, dumped with --kill
// while one job waits and gcc compiles beside it, is restored and finishes;
// the program it built prints what a build never checkpointed prints, and
// the binary is byte-identical to that build's.
func TestRestoreMakeJ2(t *testing.T) {
	for _, tool := range []string{"make", "gcc"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("no %s", tool)
		}
	}
	ref := t.TempDir()
	writeMakeProject(t, ref, 40)
	if err := os.WriteFile(filepath.Join(ref, "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("make", "-C", ref, "-j2").CombinedOutput(); err != nil {
		t.Fatalf("reference build: %v\n%s", err, out)
	}
	want, err := exec.Command(filepath.Join(ref, "prog")).Output()
	if err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	writeMakeProject(t, dir, 40)
	log := filepath.Join(dir, "make.log")
	cmd := startBuild(t, exec.Command("make", "-C", dir, "-j2"), log) // gobuild_test.go
	pid := cmd.Process.Pid
	// Wait until make runs the gate and a compile beside it.
	waitComm(t, pid, "cc1", 20*time.Second, "make -j2 did not start two jobs")
	m := mountStore(t, filepath.Join(t.TempDir(), "store"))
	id, tasks := dumpBuildKill(t, m, cmd)
	t.Logf("dumped %d processes of make -j2", tasks)
	unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
	t.Cleanup(func() { unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0) })
	ckptfs(t, "restore", filepath.Join(m.mnt, id))
	if err := os.WriteFile(filepath.Join(dir, "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	var ws unix.WaitStatus
	if _, err := unix.Wait4(pid, &ws, 0, nil); err != nil {
		t.Fatalf("wait for restored make %d: %v", pid, err)
	}
	b, _ := os.ReadFile(log)
	if !ws.Exited() || ws.ExitStatus() != 0 {
		t.Fatalf("restored make: status %v\n%s", ws, b)
	}
	got, err := exec.Command(filepath.Join(dir, "prog")).Output()
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("built program printed %q (%v), want %q\nmake log:\n%s", got, err, want, b)
	}
	refBin, _ := os.ReadFile(filepath.Join(ref, "prog"))
	bin, _ := os.ReadFile(filepath.Join(dir, "prog"))
	if !bytes.Equal(refBin, bin) {
		t.Errorf("binary differs from the reference build's (%d vs %d bytes)", len(bin), len(refBin))
	}
}
