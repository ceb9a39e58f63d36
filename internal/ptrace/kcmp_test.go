//go:build linux && amd64

package ptrace

import (
	"golang.org/x/sys/unix"
	"os"
	"os/exec"
	"testing"
)

func TestSameFiles(t *testing.T) {
	self := os.Getpid()
	if same, err := SameFiles(self, self); err != nil || !same {
		t.Fatalf("SameFiles(self, self) = %v, %v", same, err)
	}
	cmd := exec.Command("sleep", "10")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	if same, err := SameFiles(self, cmd.Process.Pid); err != nil || same {
		t.Fatalf("SameFiles(self, child) = %v, %v", same, err)
	}
}

func TestCompareFiles(t *testing.T) {
	self := os.Getpid()
	var pids []int
	for i := 0; i < 2; i++ {
		cmd := exec.Command("sleep", "10")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { cmd.Process.Kill(); cmd.Wait() }()
		pids = append(pids, cmd.Process.Pid)
	}
	if c, err := CompareFiles(self, self); err != nil || c != 0 {
		t.Fatalf("CompareFiles(self, self) = %d, %v", c, err)
	}
	a, err1 := CompareFiles(pids[0], pids[1])
	b, err2 := CompareFiles(pids[1], pids[0])
	if err1 != nil || err2 != nil || a == 0 || a != -b {
		t.Fatalf("CompareFiles of two children: %d (%v), reversed %d (%v)", a, err1, b, err2)
	}
}

func TestCompareFile(t *testing.T) {
	self := os.Getpid()
	a, err := os.Open("/dev/null")
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := os.Open("/dev/null")
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	fa, fb := int(a.Fd()), int(b.Fd())
	dup, err := unix.Dup(fa)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(dup)
	if c, err := CompareFile(self, fa, self, dup); err != nil || c != 0 {
		t.Fatalf("CompareFile(fd, its dup) = %d, %v", c, err)
	}
	x, err1 := CompareFile(self, fa, self, fb)
	y, err2 := CompareFile(self, fb, self, fa)
	if err1 != nil || err2 != nil || x == 0 || x != -y {
		t.Fatalf("CompareFile of two opens: %d (%v), reversed %d (%v)", x, err1, y, err2)
	}
}
