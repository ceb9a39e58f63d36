package fscreds

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"
)

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: taking another uid's file system credentials needs CAP_SETUID and CAP_SETGID")
	}
}

// TestThreadOpensAsUID: a thread with fsuid 65534 cannot open a root-only
// file, creates files owned by 65534, reaches a directory through a
// supplementary group, and the rest of the process stays root.
func TestThreadOpensAsUID(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	// t.TempDir's parent is 0700: let uid 65534 through to dir.
	if err := os.Chmod(filepath.Dir(dir), 0o711); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	secret := filepath.Join(dir, "secret")
	if err := os.WriteFile(secret, []byte("root only"), 0o600); err != nil {
		t.Fatal(err)
	}
	groupDir := filepath.Join(dir, "group")
	if err := os.Mkdir(groupDir, 0o070); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(groupDir, 0, 4242); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(groupDir, 0o070); err != nil {
		t.Fatal(err)
	}

	th, err := Start(Creds{UID: 65534, GID: 65534, Groups: []int{4242}})
	if err != nil {
		t.Fatal(err)
	}
	defer th.Close()
	var got Creds
	err = th.Do(func() error {
		if _, err := unix.Open(secret, unix.O_RDONLY, 0); !errors.Is(err, unix.EACCES) {
			t.Errorf("open root-only file as uid 65534: %v, want EACCES", err)
		}
		fd, err := unix.Open(filepath.Join(dir, "mine"), unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY, 0o600)
		if err != nil {
			return err
		}
		unix.Close(fd)
		fd, err = unix.Open(filepath.Join(groupDir, "g"), unix.O_CREAT|unix.O_WRONLY, 0o600)
		if err != nil {
			t.Errorf("create in a directory of group 4242: %v", err)
		} else {
			unix.Close(fd)
		}
		got, err = Current()
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if got.UID != 65534 || got.GID != 65534 || len(got.Groups) != 1 || got.Groups[0] != 4242 {
		t.Errorf("thread credentials %v", got)
	}
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(dir, "mine"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Uid != 65534 || st.Gid != 65534 {
		t.Errorf("file created by the thread is owned by %d:%d", st.Uid, st.Gid)
	}
	// Every other thread of the process is still root with its groups.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	me, err := Current()
	if err != nil {
		t.Fatal(err)
	}
	if me.UID != 0 || me.GID != 0 {
		t.Errorf("caller's credentials changed: %v", me)
	}
	if b, err := os.ReadFile(secret); err != nil || string(b) != "root only" {
		t.Errorf("root read of the secret: %q %v", b, err)
	}
}

// TestThreadRoot: with fsuid 0 the thread keeps the file system
// capabilities (a task recorded as root opens as root).
func TestThreadRoot(t *testing.T) {
	needRoot(t)
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, nil, 0o000); err != nil {
		t.Fatal(err)
	}
	th, err := Start(Creds{UID: 0, GID: 0})
	if err != nil {
		t.Fatal(err)
	}
	defer th.Close()
	if err := th.Do(func() error {
		fd, err := unix.Open(secret, unix.O_RDWR, 0)
		if err == nil {
			unix.Close(fd)
		}
		return err
	}); err != nil {
		t.Errorf("open a mode 000 file with fsuid 0: %v", err)
	}
}

// TestThreadRootWithoutDACOverride: uid 0 with CAP_DAC_OVERRIDE and
// CAP_DAC_READ_SEARCH out of its effective set cannot open a mode 000
// file; the rest of the process still can.
func TestThreadRootWithoutDACOverride(t *testing.T) {
	needRoot(t)
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, nil, 0o000); err != nil {
		t.Fatal(err)
	}
	eff := ^uint64(0) &^ (1<<unix.CAP_DAC_OVERRIDE | 1<<unix.CAP_DAC_READ_SEARCH)
	th, err := Start(Creds{UID: 0, GID: 0, Effective: &eff})
	if err != nil {
		t.Fatal(err)
	}
	defer th.Close()
	err = th.Do(func() error {
		fd, err := unix.Open(secret, unix.O_RDONLY, 0)
		if err == nil {
			unix.Close(fd)
		}
		return err
	})
	if !errors.Is(err, unix.EACCES) {
		t.Errorf("open a mode 000 file without CAP_DAC_OVERRIDE: %v, want EACCES", err)
	}
	if fd, err := unix.Open(secret, unix.O_RDONLY, 0); err != nil {
		t.Errorf("the process lost CAP_DAC_OVERRIDE: %v", err)
	} else {
		unix.Close(fd)
	}
}

func TestSameSet(t *testing.T) {
	if !sameSet([]int{3, 1, 1}, []int{1, 3}) || sameSet([]int{1}, []int{1, 2}) || !sameSet(nil, []int{}) {
		t.Error("sameSet")
	}
}

// BenchmarkOpenOnThread opens and closes /etc/hostname on a Thread (two
// channel hops more than BenchmarkOpenHere).
func BenchmarkOpenOnThread(b *testing.B) {
	th, err := Start(Creds{UID: os.Getuid(), GID: os.Getgid(), Groups: mustGroups(b)})
	if err != nil {
		b.Fatal(err)
	}
	defer th.Close()
	for b.Loop() {
		if err := th.Do(openClose); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkOpenHere(b *testing.B) {
	for b.Loop() {
		if err := openClose(); err != nil {
			b.Fatal(err)
		}
	}
}

func openClose() error {
	fd, err := unix.Open("/etc/hostname", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err == nil {
		unix.Close(fd)
	}
	return err
}

func mustGroups(b *testing.B) []int {
	g, err := unix.Getgroups()
	if err != nil {
		b.Fatal(err)
	}
	return g
}
