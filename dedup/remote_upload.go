package dedup

import (
	"fmt"
	"sync"
)

// A full pack of a remote store is uploaded in the background while the
// dump fills the next one: at most remoteUploads packs at a time (a
// dump that outruns the network waits in PutPages). Their pages are read
// from memory until the upload is done. Commit, Close, GC and Verify wait
// for every upload (flushLocked). A failed upload is the error of every
// later flush, so no checkpoint is committed over pages that are absent.
const remoteUploads = 2

type remoteUploader struct {
	sem  chan struct{}
	wg   sync.WaitGroup
	mu   sync.Mutex
	busy map[packID][]byte // packs being uploaded: their bytes
	err  error             // the first failed upload
}

func newRemoteUploader() *remoteUploader {
	return &remoteUploader{sem: make(chan struct{}, remoteUploads), busy: make(map[packID][]byte)}
}

// failed is the error of the first failed upload.
func (u *remoteUploader) failed() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.err
}

// blob returns the bytes at loc if its pack is being uploaded.
func (u *remoteUploader) blob(loc packLoc) ([]byte, bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	data, ok := u.busy[loc.pack]
	if !ok || loc.offset+int64(loc.length) > int64(len(data)) {
		return nil, false
	}
	return data[loc.offset : loc.offset+int64(loc.length)], true
}

// wait waits for every upload started and returns the first failure.
func (u *remoteUploader) wait() error {
	u.wg.Wait()
	return u.failed()
}

// startUploadLocked starts the upload of the open pack, then of its index
// object (r.mu held; the upload itself does not take it).
func (r *RemoteStore) startUploadLocked() error {
	if err := r.up.failed(); err != nil {
		return err
	}
	p := r.open
	if p == nil {
		return nil
	}
	r.open = nil
	data := append(p.buf, encodeTrailer(p.entries)...)
	ib := encodeRemoteIndex(int64(len(data)), data[len(p.buf):])
	r.sizes[p.id] = int64(len(data))
	r.packs[p.id] = &remotePack{size: int64(len(data)), entries: p.entries}
	u := r.up
	u.mu.Lock()
	u.busy[p.id] = data
	u.mu.Unlock()
	u.sem <- struct{}{}
	u.wg.Add(1)
	go func() {
		defer u.wg.Done()
		err := r.obj.Put(r.ctx, remotePacks+p.id.String(), data)
		if err != nil {
			err = fmt.Errorf("upload pack %s: %w", p.id, err)
		} else if err = r.obj.Put(r.ctx, remoteIndex+p.id.String(), ib); err != nil {
			err = fmt.Errorf("upload index of pack %s: %w", p.id, err)
		}
		<-u.sem
		if err == nil {
			r.cache.keepIndex(p.id, ib)
		}
		u.mu.Lock()
		delete(u.busy, p.id)
		if err != nil && u.err == nil {
			u.err = err
		}
		u.mu.Unlock()
	}()
	return nil
}
