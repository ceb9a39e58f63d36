// gopidfd holds three kinds of pidfd: os/exec's of a running child (Go
// 1.23+ starts, signals and waits children through a pidfd), one of a
// child already reaped, and one of its parent (outside the dumped tree).
// It ticks until the file named by its argument exists, then checks each
// after a restore: the child is signalled and waited through its pidfd,
// the reaped child's and the parent's pidfds read as exited.
package main

import (
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: gopidfd GOFILE")
		os.Exit(2)
	}
	child := exec.Command("sleep", "1000")
	if err := child.Start(); err != nil {
		fail("start sleep: %v", err)
	}
	reaped := -1
	gone := exec.Command("true")
	gone.SysProcAttr = &syscall.SysProcAttr{PidFD: &reaped}
	if err := gone.Run(); err != nil || reaped < 0 {
		fail("run true with a pidfd: %v (pidfd %d)", err, reaped)
	}
	parent, err := unix.PidfdOpen(os.Getppid(), 0)
	if err != nil {
		fail("pidfd_open parent: %v", err)
	}
	for i := 1; ; i++ {
		if _, err := os.Stat(os.Args[1]); err == nil {
			break
		}
		fmt.Printf("gopidfd tick %d ok\n", i)
		time.Sleep(50 * time.Millisecond)
	}
	fmt.Printf("gopidfd reaped %s\n", exited(reaped))
	fmt.Printf("gopidfd parent %s\n", exited(parent))
	if err := child.Process.Signal(syscall.SIGTERM); err != nil {
		fail("signal child: %v", err)
	}
	err = child.Wait()
	fmt.Printf("gopidfd child %v\n", err)
	fmt.Println("gopidfd done")
}

// exited says whether the process of pidfd has exited (poll: readable).
func exited(pidfd int) string {
	fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
	n, err := unix.Poll(fds, 0)
	switch {
	case err != nil:
		return "poll error " + err.Error()
	case n == 1 && fds[0].Revents&unix.POLLIN != 0:
		return "exited"
	}
	return "running"
}

func fail(format string, args ...any) {
	fmt.Printf("gopidfd error: "+format+"\n", args...)
	os.Exit(1)
}
