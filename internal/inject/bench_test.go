//go:build linux && amd64

package inject_test

import (
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/internal/inject"
	"github.com/ckptfs/ckptfs/internal/stub"
)

// BenchmarkInject compares one injected getpid with PTRACE_SYSCALL (two
// stops: entry and exit) and at a `syscall; int3` trampoline with
// PTRACE_CONT (one stop), in the same stub.
func BenchmarkInject(b *testing.B) {
	for _, c := range []struct {
		name string
		call func(int, uint64, uintptr, ...uint64) (uint64, error)
	}{{"syscall-stops", inject.Syscall}, {"int3-stop", inject.SyscallTrap}} {
		b.Run(c.name, func(b *testing.B) {
			tr := inject.NewTracer()
			b.Cleanup(tr.Close) // after the stub's cleanup, which needs it
			pid := startStub(b, tr)
			err := tr.Do(func() error {
				for i := 0; i < b.N; i++ {
					if _, err := c.call(pid, stub.Trampoline, unix.SYS_GETPID); err != nil {
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
