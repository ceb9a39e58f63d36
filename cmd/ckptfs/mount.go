package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/ckptfs/ckptfs/dedup"
	"github.com/ckptfs/ckptfs/fs"
)

// readyFDEnv names the fd on which a daemonized mount reports "ok" or its error.
const readyFDEnv = "CKPTFS_MOUNT_READY_FD"

func init() {
	var (
		store         string
		daemon, debug bool
	)
	cmd := &cobra.Command{
		Use:   "mount [--daemon] [--debug] [-s STORE] [STORE] MOUNTPOINT",
		Short: "Show the checkpoints of a store as a read-only file tree",
		Long: `Mount the store read-only at MOUNTPOINT (an empty directory): one directory
per checkpoint id (info, tree, tasks/<pid>/{status,maps,regs,...,vmas/*/pages,
core}), latest -> the newest checkpoint, by-name/<name> -> ../<id>.

While mounted, the mount owns the store and serves it to other ckptfs commands
over <STORE>/ckptfs.sock: ckptfs dump, rm and gc keep working, and their
checkpoints appear in (or vanish from) the mount at once.

The mount is for the calling user only. It stays in the foreground until
SIGINT/SIGTERM (Ctrl-C) or 'umount MOUNTPOINT'; --daemon returns once the
mount is up and leaves it running in the background.

The store is STORE, or -s/--store, or $CKPTFS_STORE.`,
		Example: `  ckptfs mount /var/lib/ckptfs /mnt/ckpt
  ckptfs mount --daemon -s /var/lib/ckptfs /mnt/ckpt && gdb $(readlink /mnt/ckpt/latest/tasks/1234/exe) /mnt/ckpt/latest/tasks/1234/core
  umount /mnt/ckpt`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			var err error
			if store, err = mountArgs(store, args); err != nil {
				return usageErr(err)
			}
			mnt := args[len(args)-1]
			privateUmask()
			// The daemon child is started with the same arguments (every
			// spelling of --daemon included) and knows itself by the
			// ready-pipe variable, not by its flags.
			if daemon && !isDaemonChild() {
				return mountDaemon()
			}
			return runMount(store, mnt, debug)
		},
	}
	addStoreFlag(cmd, &store)
	cmd.Flags().BoolVarP(&daemon, "daemon", "d", false, "run in the background once mounted")
	cmd.Flags().BoolVar(&debug, "debug", false, "log every FUSE request")
	rootCmd.AddCommand(cmd)
}

// runMount mounts and serves until a signal or an outside umount.
func runMount(store, mnt string, debug bool) error {
	// Signals from here on: one arriving while mounting unmounts right after.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	logf := func(format string, args ...any) { fmt.Fprintf(os.Stderr, "ckptfs: "+format+"\n", args...) }
	srv, closeStore, err := mountStore(store, mnt, fs.Options{Debug: debug, Logf: logf})
	ready := readyPipe()
	if err != nil {
		if ready != nil {
			fmt.Fprintln(ready, err)
			ready.Close()
		}
		return err
	}
	defer closeStore()
	if ready != nil {
		fmt.Fprintln(ready, "ok")
		ready.Close()
	} else {
		fmt.Fprintf(os.Stderr, "ckptfs: %s mounted at %s (Ctrl-C or 'umount %s' to stop)\n", store, srv.Mountpoint(), srv.Mountpoint())
	}
	go func() {
		s := <-sigs
		fmt.Fprintf(os.Stderr, "ckptfs: %v: unmounting %s\n", s, srv.Mountpoint())
		go func() {
			// A busy mount is detached and served until its last user
			// lets go; a second signal gives up on them (or on a store
			// that does not close).
			s := <-sigs
			fmt.Fprintf(os.Stderr, "ckptfs: %v again: exiting now; open files in %s fail from here on\n", s, srv.Mountpoint())
			os.Exit(1)
		}()
		if err := srv.Unmount(); errors.Is(err, fs.ErrBusy) {
			fmt.Fprintf(os.Stderr, "ckptfs: %v (Ctrl-C again to exit now)\n", err)
		} else if err != nil {
			fmt.Fprintf(os.Stderr, "ckptfs: %v\n", err)
		}
	}()
	return srv.Wait()
}

// readyPipe returns the pipe to the parent of a daemonized mount, or nil.
func readyPipe() *os.File {
	fd := os.Getenv(readyFDEnv)
	if fd == "" {
		return nil
	}
	os.Unsetenv(readyFDEnv)
	var n int
	if _, err := fmt.Sscan(fd, &n); err != nil {
		return nil
	}
	return os.NewFile(uintptr(n), "ready")
}

// isDaemonChild reports whether this process is the background mount that
// mountDaemon started (whatever its flags say).
func isDaemonChild() bool { return os.Getenv(readyFDEnv) != "" }

// mountDaemon starts this command again, with the same arguments, in a new
// session, marked as the daemon child by readyFDEnv, and returns once it
// reports the mount up (or its error). (Until this was so, the arguments
// were filtered for "-d", "--daemon" and "--daemon=true", and any other
// spelling — "-ds", "--daemon=1" — made every child start another.)
func mountDaemon() error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("daemon: %w", err)
	}
	args := os.Args[1:] // unchanged: the child knows it is one by readyFDEnv
	r, w, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("daemon: %w", err)
	}
	null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("daemon: %w", err)
	}
	defer null.Close()
	c := exec.Command(exe, args...)
	c.Env = append(os.Environ(), readyFDEnv+"=3")
	c.Stdin, c.Stdout, c.Stderr = null, null, null
	c.ExtraFiles = []*os.File{w}
	c.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := c.Start(); err != nil {
		return fmt.Errorf("daemon: %w", err)
	}
	w.Close()
	line, _ := bufio.NewReader(r).ReadString('\n')
	r.Close()
	line = strings.TrimSpace(line)
	if line != "ok" {
		c.Wait()
		if line == "" {
			return errors.New("mount daemon exited without mounting")
		}
		return errors.New(line)
	}
	fmt.Fprintf(os.Stderr, "ckptfs: mounted (daemon pid %d)\n", c.Process.Pid)
	c.Process.Release()
	return nil
}

// mountArgs checks mount's arguments, [STORE] MOUNTPOINT, with store from
// -s or $CKPTFS_STORE, and returns the store. A store given as the mount
// point, or the two swapped, is caught here with the command to type.
func mountArgs(store string, args []string) (string, error) {
	if len(args) == 2 {
		store = args[0]
		if ok, _ := dedup.IsStore(args[1]); ok {
			if isStore, _ := dedup.IsStore(args[0]); !isStore {
				return "", fmt.Errorf("mount: %s is a store and %s is not: the order is 'ckptfs mount STORE MOUNTPOINT'", args[1], args[0])
			}
		}
	}
	if store == "" {
		if ok, _ := dedup.IsStore(args[0]); ok {
			return "", fmt.Errorf("mount: %s is a store; give the mount point too: 'ckptfs mount %s MOUNTPOINT'", args[0], args[0])
		}
		return "", fmt.Errorf("mount: no store: 'ckptfs mount STORE MOUNTPOINT', or -s STORE, or $CKPTFS_STORE")
	}
	return store, nil
}
