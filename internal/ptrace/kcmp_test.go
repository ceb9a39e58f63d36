package ptrace

import (
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
