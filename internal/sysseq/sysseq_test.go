//go:build linux && amd64

package sysseq_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/internal/inject"
	"github.com/ckptfs/ckptfs/internal/ptrace"
	"github.com/ckptfs/ckptfs/internal/stub"
	"github.com/ckptfs/ckptfs/internal/sysseq"
)

const region = 0x200000000 // where the tests map Code and the area

// tracee is a stopped stub with Code at region and an area after it.
type tracee struct {
	tr  *inject.Tracer
	pid int
}

// startTracee starts the stub on a tracer thread, seizes and stops it,
// blocks every signal and maps Code and a 64 KiB area into it.
func startTracee(t testing.TB) *tracee {
	t.Helper()
	tr := inject.NewTracer()
	t.Cleanup(tr.Close)
	var cmd *exec.Cmd
	err := tr.Do(func() error {
		c, cleanup, err := stub.Command(nil)
		if err != nil {
			return err
		}
		c.Stdin, c.Stdout, c.Stderr = nil, nil, nil
		err = c.Start()
		cleanup()
		if err != nil {
			return err
		}
		cmd = c
		pid := c.Process.Pid
		if err := ptrace.Seize(pid, unix.PTRACE_O_EXITKILL); err != nil {
			return err
		}
		if err := ptrace.Interrupt(pid); err != nil {
			return err
		}
		if _, err := ptrace.Wait(pid); err != nil {
			return err
		}
		if err := ptrace.SetSigMask(pid, inject.AllSignals); err != nil {
			return err
		}
		got, err := inject.SyscallTrap(pid, stub.Trampoline, unix.SYS_MMAP, region, 0x11000,
			unix.PROT_READ|unix.PROT_WRITE|unix.PROT_EXEC, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_FIXED_NOREPLACE, ^uint64(0), 0)
		if err != nil {
			return err
		}
		if got != region {
			return fmt.Errorf("mapped at %#x", got)
		}
		return inject.WriteMem(pid, region, sysseq.Code)
	})
	if err != nil {
		if cmd != nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		tr.Do(func() error { cmd.Wait(); return nil })
	})
	return &tracee{tr: tr, pid: cmd.Process.Pid}
}

// seq returns a sequence over the area (size bytes of it).
func (tc *tracee) seq(size int) *sysseq.Seq {
	return sysseq.New(tc.pid, region, region+0x1000, size)
}

func (tc *tracee) do(t *testing.T, f func() error) {
	t.Helper()
	if err := tc.tr.Do(f); err != nil {
		t.Fatal(err)
	}
}

// fdTarget is what fd n of pid links to ("" if not open).
func fdTarget(pid, n int) string {
	s, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", pid, n))
	return s
}

// TestSeqResults runs plain calls and calls that take an earlier call's
// result, in one stop, and checks every result and what they did.
func TestSeqResults(t *testing.T) {
	tc := startTracee(t)
	tc.do(t, func() error {
		s := tc.seq(0x10000)
		pid := s.Sys(unix.SYS_GETPID)
		addrs, err := s.Put([]byte("sysseq-test\x00"))
		if err != nil {
			return err
		}
		memfd := s.Sys(unix.SYS_MEMFD_CREATE, addrs[0], 0)
		trunc := s.Add(sysseq.Call{Nr: unix.SYS_FTRUNCATE, Args: [6]uint64{0, 12345}, From: memfd, Arg: 0})
		dup := s.Add(sysseq.Call{Nr: unix.SYS_DUP3, Args: [6]uint64{0, 40, unix.O_CLOEXEC}, From: memfd, Arg: 0})
		if s.Pending() != 4 {
			return fmt.Errorf("%d pending, want 4", s.Pending())
		}
		if err := s.Flush(); err != nil {
			return err
		}
		if v, err := s.Value(pid); err != nil || int(v) != tc.pid {
			return fmt.Errorf("getpid gave %d, %v, want %d", v, err, tc.pid)
		}
		fd, _ := s.Value(memfd)
		if got := fdTarget(tc.pid, int(fd)); !strings.HasPrefix(got, "/memfd:sysseq-test") {
			return fmt.Errorf("fd %d of the memfd is %q", fd, got)
		}
		if v, _ := s.Value(trunc); v != 0 {
			return fmt.Errorf("ftruncate gave %d", v)
		}
		if v, _ := s.Value(dup); v != 40 {
			return fmt.Errorf("dup3 gave %d", v)
		}
		var st unix.Stat_t
		if err := unix.Stat(fmt.Sprintf("/proc/%d/fd/40", tc.pid), &st); err != nil || st.Size != 12345 {
			return fmt.Errorf("fd 40: size %d, %v; want 12345 (ftruncate of the memfd's fd)", st.Size, err)
		}
		// A later sequence takes a result of this one: from a
		// constant, since it ran already.
		cl := s.Add(sysseq.Call{Nr: unix.SYS_CLOSE, From: memfd, Arg: 0})
		v, err := s.Value(cl)
		if err != nil || v != 0 {
			return fmt.Errorf("close of the memfd: %d, %v", v, err)
		}
		if got := fdTarget(tc.pid, int(fd)); got != "" {
			return fmt.Errorf("fd %d still open: %q", fd, got)
		}
		return nil
	})
}

// TestSeqResultInMemory gives a call an fd inside the struct it reads
// (To): poll on an eventfd created earlier in the sequence.
func TestSeqResultInMemory(t *testing.T) {
	tc := startTracee(t)
	tc.do(t, func() error {
		s := tc.seq(0x10000)
		efd := s.Sys(unix.SYS_EVENTFD2, 1, unix.EFD_CLOEXEC)
		pfd := make([]byte, 8)
		binary.LittleEndian.PutUint32(pfd, ^uint32(0)) // fd -1: poll ignores it
		binary.LittleEndian.PutUint16(pfd[4:], unix.POLLIN)
		addrs, err := s.Put(pfd)
		if err != nil {
			return err
		}
		poll := s.Add(sysseq.Call{Nr: unix.SYS_POLL, Args: [6]uint64{addrs[0], 1, 0}, From: efd, To: addrs[0]})
		v, err := s.Value(poll)
		if err != nil {
			return err
		}
		if v != 1 {
			return fmt.Errorf("poll gave %d, want 1 (the eventfd, readable)", v)
		}
		return nil
	})
}

// TestSeqErrors: an error stops the sequence where it happened (the
// calls after it do not run), unless the call may fail (GoOn) or its Check
// accepts the error.
func TestSeqErrors(t *testing.T) {
	tc := startTracee(t)
	tc.do(t, func() error {
		s := tc.seq(0x10000)
		before := s.Sys(unix.SYS_DUP3, 0, 41, 0)
		s.Sys(unix.SYS_CLOSE, 9999)
		after := s.Sys(unix.SYS_DUP3, 0, 42, 0)
		err := s.Flush()
		if !errors.Is(err, unix.EBADF) {
			return fmt.Errorf("close of fd 9999 gave %v, want EBADF", err)
		}
		if v, _ := s.Value(before); v != 41 || fdTarget(tc.pid, 41) == "" {
			return fmt.Errorf("the call before the error: %d, fd 41 %q", v, fdTarget(tc.pid, 41))
		}
		if v, _ := s.Value(after); v != 0 || fdTarget(tc.pid, 42) != "" {
			return fmt.Errorf("the call after the error ran: %d, fd 42 %q", v, fdTarget(tc.pid, 42))
		}

		var seen error
		s.Add(sysseq.Call{Nr: unix.SYS_CLOSE, Args: [6]uint64{9999}, GoOn: true, Check: func(_ uint64, err error) error { seen = err; return nil }})
		s.Sys(unix.SYS_DUP3, 0, 43, 0)
		s.Add(sysseq.Call{Nr: unix.SYS_CLOSE, Args: [6]uint64{9998}, Check: func(_ uint64, err error) error {
			if !errors.Is(err, unix.EBADF) {
				return fmt.Errorf("close 9998: %v, want EBADF", err)
			}
			return nil
		}})
		last := s.Sys(unix.SYS_DUP3, 0, 44, 0)
		if err := s.Flush(); err != nil {
			return err
		}
		if !errors.Is(seen, unix.EBADF) {
			return fmt.Errorf("Check of a GoOn call saw %v, want EBADF", seen)
		}
		if v, _ := s.Value(last); v != 44 || fdTarget(tc.pid, 43) == "" || fdTarget(tc.pid, 44) == "" {
			return fmt.Errorf("calls after accepted errors did not run: %d, fd 43 %q, fd 44 %q", v, fdTarget(tc.pid, 43), fdTarget(tc.pid, 44))
		}

		want := errors.New("mapped elsewhere")
		s.Add(sysseq.Call{Nr: unix.SYS_GETPID, Check: func(uint64, error) error { return want }})
		if err := s.Flush(); !errors.Is(err, want) {
			return fmt.Errorf("a Check's error: got %v", err)
		}
		return nil
	})
}

// TestSeqFull: a table larger than its area runs in several stops, with
// results taken across them.
func TestSeqFull(t *testing.T) {
	tc := startTracee(t)
	tc.do(t, func() error {
		s := tc.seq(4 * (sysseq.EntrySize + 8))
		first := s.Sys(unix.SYS_DUP3, 0, 50, 0)
		var rets []sysseq.Ret
		for i := range 10 {
			rets = append(rets, s.Add(sysseq.Call{Nr: unix.SYS_DUP3, Args: [6]uint64{0, uint64(51 + i)}, From: first, Arg: 0}))
		}
		if s.Pending() > 4 {
			return fmt.Errorf("%d pending in an area for 4", s.Pending())
		}
		if _, err := s.Put(make([]byte, 4*sysseq.EntrySize)); err == nil {
			return fmt.Errorf("Put of more than the area: no error")
		}
		if err := s.Flush(); err != nil {
			return err
		}
		for i, r := range rets {
			if v, _ := s.Value(r); v != uint64(51+i) || fdTarget(tc.pid, 51+i) == "" {
				return fmt.Errorf("call %d: %d, fd %d %q", i, v, 51+i, fdTarget(tc.pid, 51+i))
			}
		}
		return nil
	})
}

// TestSeqExited: a thread that ends in its sequence is an error that
// says so.
func TestSeqExited(t *testing.T) {
	tc := startTracee(t)
	tc.do(t, func() error {
		s := tc.seq(0x10000)
		s.Sys(unix.SYS_EXIT_GROUP, 3)
		if err := s.Flush(); !errors.Is(err, sysseq.ErrExited) {
			return fmt.Errorf("exit_group in a sequence: %v, want ErrExited", err)
		}
		return nil
	})
}

// BenchmarkSeq100 makes 100 calls (getppid) in one sequence, against
// BenchmarkTrap100: the same 100 injected one at a time (SyscallTrap).
func BenchmarkSeq100(b *testing.B) {
	tc := startTracee(b)
	tc.tr.Do(func() error {
		for b.Loop() {
			s := tc.seq(0x10000)
			for range 100 {
				s.Sys(unix.SYS_GETPPID)
			}
			if err := s.Flush(); err != nil {
				b.Fatal(err)
			}
		}
		return nil
	})
}

func BenchmarkTrap100(b *testing.B) {
	tc := startTracee(b)
	tc.tr.Do(func() error {
		for b.Loop() {
			for range 100 {
				if _, err := inject.SyscallTrap(tc.pid, stub.Trampoline, unix.SYS_GETPPID); err != nil {
					b.Fatal(err)
				}
			}
		}
		return nil
	})
}
