package dedup

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/ckptfs/ckptfs/image"
)

// heldPuts is an Objects whose uploads of packs wait for release and
// then fail.
type heldPuts struct {
	Objects
	started chan struct{}
	release chan struct{}
}

func (h *heldPuts) Put(ctx context.Context, name string, data []byte) error {
	if strings.HasPrefix(name, remotePacks) {
		h.started <- struct{}{}
		<-h.release
		return errors.New("connection reset (injected)")
	}
	return h.Objects.Put(ctx, name, data)
}

// TestRemoteUploadInBackground: a full pack is uploaded while PutPages
// returns; its pages read from memory meanwhile. The upload fails: the
// commit says so and writes no manifest.
func TestRemoteUploadInBackground(t *testing.T) {
	srv := startS3(t)
	obj, err := NewS3Objects("s3://"+testBucket+"/held", srv.config())
	if err != nil {
		t.Fatal(err)
	}
	RemoteCacheDir = t.TempDir()
	held := &heldPuts{Objects: obj, started: make(chan struct{}, 1), release: make(chan struct{})}
	r, err := OpenRemote(context.Background(), held, true)
	if err != nil {
		t.Fatal(err)
	}
	n := remotePackTarget/image.PageSize + 10 // one full pack and a few pages
	hashes, pages := make([]image.Hash, n), make([][]byte, n)
	for i := range pages {
		pages[i] = make([]byte, image.PageSize)
		copy(pages[i], "page "+strconv.Itoa(i))
		hashes[i] = Sum(pages[i])
	}
	if _, err := r.PutPages(hashes, pages); err != nil {
		t.Fatal(err)
	}
	<-held.started // the full pack's upload runs, PutPages has returned
	buf := make([]byte, image.PageSize)
	if err := r.ReadPage(hashes[0], buf); err != nil {
		t.Fatalf("a page of the pack being uploaded: %v", err)
	}
	close(held.release)
	c := &image.Checkpoint{Host: "h", Kernel: "6.18", RootPID: 1}
	if err := r.Commit(c); err == nil || !strings.Contains(err.Error(), "injected") {
		t.Fatalf("commit over a failed upload: %v, want the upload's error", err)
	}
	if objs, err := obj.List(context.Background(), remoteManifests); err != nil || len(objs) != 0 {
		t.Fatalf("manifests after the failed commit: %v %v", objs, err)
	}
	if err := r.Close(); err == nil {
		t.Fatal("close after a failed upload: no error")
	}
}
