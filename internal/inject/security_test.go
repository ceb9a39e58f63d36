//go:build linux && amd64

package inject_test

import (
	"os/exec"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/internal/inject"
	"github.com/ckptfs/ckptfs/internal/ptrace"
	"github.com/ckptfs/ckptfs/internal/stub"
)

// TestGetPrctls reads securebits, pdeathsig and dumpable of a sleep
// started with a parent-death signal, through ReadExtras' batch, and
// checks the thread is left as it was (it keeps sleeping).
func TestGetPrctls(t *testing.T) {
	tr := inject.NewTracer()
	defer tr.Close()
	var cmd *exec.Cmd
	err := tr.Do(func() error {
		// Started from the tracer thread: a pdeathsig fires when the
		// thread that forked the child exits.
		cmd = exec.Command("sleep", "100")
		cmd.SysProcAttr = &unix.SysProcAttr{Pdeathsig: unix.SIGUSR2}
		return cmd.Start()
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	pid := cmd.Process.Pid
	time.Sleep(100 * time.Millisecond)
	var x inject.Extras
	err = tr.Do(func() error {
		if err := ptrace.Seize(pid, 0); err != nil {
			return err
		}
		if err := ptrace.Interrupt(pid); err != nil {
			return err
		}
		if _, err := ptrace.Wait(pid); err != nil {
			return err
		}
		tramp, err := inject.FindSyscallInsn(pid)
		if err != nil {
			return err
		}
		if x, err = inject.ReadExtras(pid, tramp, true); err != nil {
			return err
		}
		return ptrace.Detach(pid, 0)
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := (inject.Prctls{PDeathSig: int(unix.SIGUSR2), Dumpable: 1}); x.Prctls != want {
		t.Errorf("prctls %+v, want %+v", x.Prctls, want)
	}
	time.Sleep(50 * time.Millisecond)
	var ws unix.WaitStatus
	if wp, _ := unix.Wait4(pid, &ws, unix.WNOHANG, nil); wp != 0 {
		t.Errorf("sleep died after the prctls were read: %#x", uint32(ws))
	}
}

// BenchmarkReadExtrasPrctls measures what the prctls add to a thread's
// injection batch: the batch as it was (sigaltstack, PR_GET_TID_ADDRESS),
// ReadExtras for a thread (+ securebits, pdeathsig) and for a main thread
// (+ dumpable), in the same stub.
func BenchmarkReadExtrasPrctls(b *testing.B) {
	before := func(tid int, tramp uint64) error {
		st, err := inject.Save(tid)
		if err != nil {
			return err
		}
		scratch := (st.Regs.Rsp - 128 - 64) &^ 15
		if _, err := inject.GetAltStack(tid, tramp, scratch); err != nil {
			return err
		}
		if _, err := inject.GetTIDAddress(tid, tramp, scratch); err != nil {
			return err
		}
		return st.Restop(tid)
	}
	for _, c := range []struct {
		name string
		read func(int, uint64) error
	}{
		{"batch-before", before},
		{"thread", func(tid int, tramp uint64) error { _, err := inject.ReadExtras(tid, tramp, false); return err }},
		{"main-thread", func(tid int, tramp uint64) error { _, err := inject.ReadExtras(tid, tramp, true); return err }},
	} {
		b.Run(c.name, func(b *testing.B) {
			tr := inject.NewTracer()
			b.Cleanup(tr.Close)
			pid := startStub(b, tr)
			err := tr.Do(func() error {
				for i := 0; i < b.N; i++ {
					if err := c.read(pid, stub.Trampoline); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				b.Fatal(err)
			}
		})
	}
}
