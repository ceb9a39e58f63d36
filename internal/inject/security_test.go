package inject_test

import (
	"os/exec"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/internal/inject"
	"github.com/ckptfs/ckptfs/internal/ptrace"
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
		if x, err = inject.ReadExtras(pid, tramp); err != nil {
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
