//go:build linux && amd64

package ptrace

import (
	"os/exec"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestSeizeInspectDetach seizes a sleeping child, reads every register set
// and releases it; the child must keep running.
func TestSeizeInspectDetach(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	pid := cmd.Process.Pid
	time.Sleep(50 * time.Millisecond)
	if err := Seize(pid, 0); err != nil {
		t.Fatal(err)
	}
	if err := Interrupt(pid); err != nil {
		t.Fatal(err)
	}
	ws, err := Wait(pid)
	if err != nil {
		t.Fatal(err)
	}
	if !IsEventStop(ws) {
		t.Fatalf("unexpected wait status %#x", ws)
	}
	regs, err := GetRegs(pid)
	if err != nil {
		t.Fatal(err)
	}
	if regs.Rip == 0 {
		t.Fatal("rip is zero")
	}
	xs, err := GetXState(pid)
	if err != nil {
		t.Fatal(err)
	}
	if len(xs) < 576 {
		t.Fatalf("xstate too short: %d", len(xs))
	}
	if _, err := GetSigMask(pid); err != nil {
		t.Fatal(err)
	}
	if _, err := PeekSiginfo[[SiginfoSize]byte](pid, true); err != nil {
		t.Fatal(err)
	}
	if _, err := GetRseq(pid); err != nil {
		t.Fatal(err)
	}
	if err := SetRegs(pid, regs); err != nil {
		t.Fatal(err)
	}
	if err := SetXState(pid, xs); err != nil {
		t.Fatal(err)
	}
	if err := Detach(pid, 0); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	if err := unix.Kill(pid, 0); err != nil {
		t.Fatalf("child gone after detach: %v", err)
	}
}
