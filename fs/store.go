package fs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/ckptfs/ckptfs/dedup"
)

// Mount opens the store in storeDir (taking its lock), mounts it at
// mountpoint and serves the store to other processes (dumps, rm, gc) on its
// socket while mounted: their checkpoints appear in, or vanish from, the
// mount at once. Wait or Unmount release the store.
func Mount(storeDir, mountpoint string, opts Options) (*Server, error) {
	store, err := checkStore(storeDir)
	if err != nil {
		return nil, err
	}
	mnt, err := checkMountpoint(mountpoint)
	if err != nil {
		return nil, err
	}
	if within(store, mnt) {
		return nil, fmt.Errorf("store %s is inside the mountpoint %s", storeDir, mountpoint)
	}
	s, err := dedup.Open(store)
	if errors.Is(err, dedup.ErrLocked) {
		return nil, fmt.Errorf("store %s is in use, already mounted or busy: %w", storeDir, err)
	}
	if err != nil {
		return nil, err
	}
	if opts.Logf != nil {
		s.SetLogf(opts.Logf) // refused socket clients
	}
	opts.storeDir = store
	srv, err := MountRepo(s, mnt, opts)
	if err != nil {
		s.Close()
		return nil, err
	}
	// The page index, ahead of the first read (an error shows there);
	// the store closes after it.
	indexed := make(chan struct{})
	go func() { s.LoadIndex(); close(indexed) }()
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- s.Serve(ctx, srv.Notify) }()
	srv.onClose = func() error {
		cancel()
		serr := <-served
		served <- serr // a second receive (see below) must not block
		<-indexed
		return errors.Join(serr, s.Close())
	}
	// Serve creates its socket before it accepts: wait for it, or its error.
	sock := filepath.Join(store, dedup.SocketName)
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		select {
		case err := <-served:
			served <- err
			srv.Unmount()
			return nil, fmt.Errorf("serve store %s: %w", storeDir, err)
		default:
		}
		if time.Now().After(deadline) {
			srv.Unmount()
			return nil, fmt.Errorf("serve store %s: no socket after 5s", storeDir)
		}
	}
	return srv, nil
}

// checkStore returns the absolute, symlink-free store directory or says
// what is wrong with it.
func checkStore(dir string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("store %s: %w", dir, err)
	}
	st, err := os.Stat(abs)
	if errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("store %s does not exist", dir)
	}
	if err != nil {
		return "", fmt.Errorf("store %s: %w", dir, err)
	}
	if !st.IsDir() {
		return "", fmt.Errorf("store %s is not a directory", dir)
	}
	if abs, err = filepath.EvalSymlinks(abs); err != nil {
		return "", fmt.Errorf("store %s: %w", dir, err)
	}
	// Badger keeps a MANIFEST; an empty directory is an empty store.
	if _, err := os.Stat(filepath.Join(abs, "MANIFEST")); err != nil {
		if es, _ := os.ReadDir(abs); len(es) > 0 {
			return "", fmt.Errorf("store %s is not a ckptfs store (no MANIFEST)", dir)
		}
	}
	return abs, nil
}
