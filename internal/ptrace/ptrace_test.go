//go:build linux && amd64

package ptrace

import (
	"bytes"
	"encoding/binary"
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

func TestFitXState(t *testing.T) {
	area := func(n int, bv uint64, fill byte) []byte {
		b := bytes.Repeat([]byte{fill}, n)
		binary.LittleEndian.PutUint64(b[512:], bv)
		binary.LittleEndian.PutUint64(b[520:], 0)
		return b
	}
	cur := area(2432, 0xe7, 0xcc)
	t.Run("same size", func(t *testing.T) {
		rec := area(2432, 0xe7, 0x11)
		got, err := FitXState(rec, cur)
		if err != nil || !bytes.Equal(got, rec) {
			t.Fatalf("got %d bytes, %v; want the recorded area", len(got), err)
		}
	})
	t.Run("smaller, fixed components only", func(t *testing.T) {
		rec := area(832, 0x7, 0x11)
		got, err := FitXState(rec, cur)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(cur) || !bytes.Equal(got[:832], rec) || !bytes.Equal(got[832:], cur[832:]) {
			t.Fatalf("not the recorded area over this CPU's: %d bytes", len(got))
		}
		if bv := binary.LittleEndian.Uint64(got[512:]); bv != 0x7 {
			t.Fatalf("XSTATE_BV %#x, want 0x7 (the rest in its initial state)", bv)
		}
	})
	t.Run("larger, fixed components only", func(t *testing.T) {
		rec := area(2696, 0x3, 0x11)
		got, err := FitXState(rec, cur)
		if err != nil || len(got) != len(cur) || !bytes.Equal(got[:832], rec[:832]) {
			t.Fatalf("got %d bytes, %v", len(got), err)
		}
	})
	t.Run("other layout", func(t *testing.T) {
		if _, err := FitXState(area(2696, 0xe7, 0x11), cur); err == nil {
			t.Fatal("AVX-512 state of another size was fitted, want a refusal")
		}
	})
	t.Run("too short", func(t *testing.T) {
		if _, err := FitXState(make([]byte, 512), cur); err == nil {
			t.Fatal("a 512-byte area was fitted, want a refusal")
		}
	})
}
