// Package fscreds runs file system calls with another task's file system
// credentials: its fsuid, fsgid and supplementary groups, set on an OS
// thread of its own with the raw setgroups, setfsgid and setfsuid system
// calls. Those calls act on the calling thread only (the libc and Go
// wrappers of setgroups and setuid broadcast to every thread; these do not),
// so the rest of the process keeps its credentials.
//
// A non-zero fsuid also clears the file system capabilities
// (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER, CAP_CHOWN, CAP_FSETID,
// CAP_MKNOD, ...) from the thread's effective set, so a root caller opens,
// creates, binds and unlinks exactly what that uid could.
//
// The thread also has a file system context of its own (unshare(CLONE_FS)):
// a chdir or umask there affects nobody else. It is never given back to the
// Go scheduler: when the Thread is closed its goroutine ends still locked,
// and the runtime ends the OS thread with it.
package fscreds

import (
	"fmt"
	"runtime"
	"slices"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Creds are file system credentials.
type Creds struct {
	UID, GID int
	Groups   []int
	// Effective, when set, limits the thread's effective capabilities to
	// these (bit n = capability n): a task of uid 0 that dropped
	// CAP_DAC_OVERRIDE opens files without it. With a non-zero UID the
	// file system capabilities are gone anyway.
	Effective *uint64
}

func (c Creds) String() string {
	s := fmt.Sprintf("uid %d gid %d groups %v", c.UID, c.GID, c.Groups)
	if c.Effective != nil {
		s += fmt.Sprintf(" caps %#x", *c.Effective)
	}
	return s
}

// Thread is an OS thread whose file system credentials are Creds.
type Thread struct {
	Creds Creds
	work  chan func()
	done  chan struct{}
}

// Start starts a thread with creds c. It fails if the caller may not take
// them (setgroups needs CAP_SETGID unless the groups are the caller's own;
// setfsuid to an id other than the real, effective or saved one needs
// CAP_SETUID).
func Start(c Creds) (*Thread, error) {
	th := &Thread{Creds: Creds{UID: c.UID, GID: c.GID, Groups: slices.Clone(c.Groups), Effective: c.Effective},
		work: make(chan func()), done: make(chan struct{})}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// Never unlocked: the thread ends with this goroutine.
		defer close(th.done)
		if err := th.become(); err != nil {
			errc <- err
			return
		}
		errc <- nil
		for fn := range th.work {
			fn()
		}
	}()
	if err := <-errc; err != nil {
		return nil, fmt.Errorf("take file system credentials %s: %w", c, err)
	}
	return th, nil
}

func (th *Thread) become() error {
	if err := unix.Unshare(unix.CLONE_FS); err != nil {
		return fmt.Errorf("unshare CLONE_FS: %w", err)
	}
	c := th.Creds
	have, err := unix.Getgroups()
	if err != nil {
		return fmt.Errorf("getgroups: %w", err)
	}
	if !sameSet(have, c.Groups) {
		if err := setgroups(c.Groups); err != nil {
			return err
		}
	}
	// Groups and fsgid before fsuid: with CAP_SETUID/CAP_SETGID either
	// order works, and without them each is checked on its own.
	if got := setfsgid(c.GID); got != c.GID {
		return fmt.Errorf("setfsgid %d: fsgid is %d (not permitted)", c.GID, got)
	}
	if got := setfsuid(c.UID); got != c.UID {
		return fmt.Errorf("setfsuid %d: fsuid is %d (not permitted)", c.UID, got)
	}
	if c.Effective != nil {
		return limitEffective(*c.Effective)
	}
	return nil
}

// limitEffective keeps in the calling thread's effective capability set
// only those in eff (capset acts on the calling thread).
func limitEffective(eff uint64) error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("capget: %w", err)
	}
	data[0].Effective &= uint32(eff)
	data[1].Effective &= uint32(eff >> 32)
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		return fmt.Errorf("capset: %w", err)
	}
	return nil
}

// Do runs fn on the thread and returns its error.
func (th *Thread) Do(fn func() error) error {
	errc := make(chan error, 1)
	th.work <- func() { errc <- fn() }
	return <-errc
}

// Close ends the thread.
func (th *Thread) Close() {
	close(th.work)
	<-th.done
}

// Current returns the calling thread's file system credentials.
func Current() (Creds, error) {
	g, err := unix.Getgroups()
	if err != nil {
		return Creds{}, err
	}
	return Creds{UID: setfsuid(-1), GID: setfsgid(-1), Groups: g}, nil
}

// setfsuid sets the thread's fsuid and returns the new one: the syscall
// returns the previous fsuid whether or not it changed it, so a second
// call with an invalid id (-1, changing nothing) reads the result.
func setfsuid(uid int) int {
	unix.RawSyscall(unix.SYS_SETFSUID, uintptr(uid), 0, 0)
	r, _, _ := unix.RawSyscall(unix.SYS_SETFSUID, ^uintptr(0), 0, 0)
	return int(int32(r))
}

func setfsgid(gid int) int {
	unix.RawSyscall(unix.SYS_SETFSGID, uintptr(gid), 0, 0)
	r, _, _ := unix.RawSyscall(unix.SYS_SETFSGID, ^uintptr(0), 0, 0)
	return int(int32(r))
}

// setgroups sets the supplementary groups of the calling thread only.
func setgroups(groups []int) error {
	g := make([]uint32, len(groups))
	for i, v := range groups {
		g[i] = uint32(v)
	}
	var p unsafe.Pointer
	if len(g) > 0 {
		p = unsafe.Pointer(&g[0])
	}
	_, _, e := unix.RawSyscall(unix.SYS_SETGROUPS, uintptr(len(g)), uintptr(p), 0)
	runtime.KeepAlive(g)
	if e != 0 {
		return fmt.Errorf("setgroups %v: %w", groups, e)
	}
	return nil
}

func sameSet(a, b []int) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(slices.Compact(a), slices.Compact(b))
}
