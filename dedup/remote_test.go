package dedup

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"github.com/ckptfs/ckptfs/image"
)

var _ Repo = (*RemoteStore)(nil)

// The tests run a real S3 server, gofakes3 over an in-memory backend, in
// process on a loopback listener (httptest); the store talks to it with
// minio-go over HTTP as to any S3 service. A middleware accepts only the
// access key testKey, so that bad credentials are refused as S3 does.
const (
	testBucket = "ckpt"
	testKey    = "testkey"
)

type s3Server struct {
	url  string
	gets sync.Map // object key → GET count (tests of on-demand reads)
}

func startS3(t *testing.T) *s3Server {
	t.Helper()
	backend := s3mem.New()
	if err := backend.CreateBucket(testBucket); err != nil {
		t.Fatal(err)
	}
	faker := gofakes3.New(backend)
	srv := &s3Server{}
	h := faker.Server()
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.Contains(r.Header.Get("Authorization"), "Credential="+testKey+"/") {
			w.WriteHeader(http.StatusForbidden)
			w.Write([]byte(`<?xml version="1.0" encoding="UTF-8"?><Error><Code>InvalidAccessKeyId</Code><Message>The AWS Access Key Id you provided does not exist in our records.</Message></Error>`))
			return
		}
		if r.Method == http.MethodGet {
			n, _ := srv.gets.LoadOrStore(r.URL.Path, new(int))
			*n.(*int)++
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(hs.Close)
	srv.url = hs.URL
	return srv
}

func (s *s3Server) config() S3Config {
	return S3Config{Endpoint: s.url, Region: "us-east-1", AccessKey: testKey, SecretKey: "secret"}
}

// openRemoteT opens s3://ckpt/prefix as host, with a cache of its own.
func openRemoteT(t *testing.T, s *s3Server, prefix, host string) *RemoteStore {
	t.Helper()
	obj, err := NewS3Objects("s3://"+testBucket+"/"+prefix, s.config())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(host, "+cache") {
		RemoteCacheDir = t.TempDir()
	}
	RemoteHost = host
	r, err := OpenRemote(context.Background(), obj, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func verifyClean(t *testing.T, r Repo) {
	t.Helper()
	problems, err := r.Verify()
	if err != nil {
		t.Fatal(err)
	}
	if len(problems) > 0 {
		t.Fatalf("verify: %q", problems)
	}
}

// TestCopyLocalS3Local copies a checkpoint local → S3 → local: the copy
// loads as the original (same manifest and page tables) and every page
// reads back right; a second copy of a checkpoint that shares most pages
// sends only the pages that changed.
func TestCopyLocalS3Local(t *testing.T) {
	srv := startS3(t)
	a := openT(t)
	v1 := []fakeVMA{{seed: 1, first: 0, n: 600}, {seed: 2, first: 0, n: 50}}
	v2 := []fakeVMA{{seed: 1, first: 10, n: 600}, {seed: 2, first: 0, n: 50}} // 10 pages new
	c1 := dump(t, a, "one", v1)
	c2 := dump(t, a, "two", v2)

	remote := openRemoteT(t, srv, "copy", "a")
	res, err := Copy(a, remote, []string{c1.ID}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res[0].Sent != 650 {
		t.Fatalf("first copy sent %d pages, want 650", res[0].Sent)
	}
	res, err = Copy(a, remote, []string{"two"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res[0].Sent != 10 || res[0].Pages != 650 {
		t.Fatalf("second copy sent %d of %d pages, want 10 of 650", res[0].Sent, res[0].Pages)
	}
	t.Logf("copy of a checkpoint the destination mostly has: %d of %d bytes sent (%.3f)",
		res[0].BytesSent, res[0].BytesTotal, float64(res[0].BytesSent)/float64(res[0].BytesTotal))
	if res, err := Copy(a, remote, []string{c1.ID}, nil); err != nil || !res[0].Skipped {
		t.Fatalf("copy again: %+v, %v", res, err)
	}
	verifyClean(t, remote)

	b := openT(t)
	if _, err := Copy(remote, b, []string{c1.ID, c2.ID}, nil); err != nil {
		t.Fatal(err)
	}
	for _, pair := range []struct {
		c    *image.Checkpoint
		vmas []fakeVMA
	}{{c1, v1}, {c2, v2}} {
		got, err := b.Load(pair.c.ID)
		if err != nil {
			t.Fatal(err)
		}
		mOrig, _, _ := encodeManifest(pair.c)
		loaded, _ := a.Load(pair.c.ID)
		mWant, _, _ := encodeManifest(loaded)
		mGot, _, _ := encodeManifest(got)
		if len(mOrig) == 0 || !sameExceptStats(loaded, got) {
			t.Fatalf("%s: copied manifest differs:\n%s\n%s", pair.c.ID, mWant, mGot)
		}
		checkReadable(t, b, got, pair.vmas)
	}
	verifyClean(t, b)
}

// sameExceptStats says whether two checkpoints are equal but for the
// stats (a copy records what it added to its store).
func sameExceptStats(a, b *image.Checkpoint) bool {
	x, y := *a, *b
	x.Stats, y.Stats = image.Stats{}, image.Stats{}
	mx, _, err1 := encodeManifest(&x)
	my, _, err2 := encodeManifest(&y)
	return err1 == nil && err2 == nil && string(mx) == string(my)
}

// TestRemoteConcurrentDumps has two hosts dump into one bucket at once:
// both checkpoints are there, whole, and verify is clean.
func TestRemoteConcurrentDumps(t *testing.T) {
	srv := startS3(t)
	ra := openRemoteT(t, srv, "shared", "host-a")
	rb := openRemoteT(t, srv, "shared", "host-b")
	va := []fakeVMA{{seed: 7, first: 0, n: 900}}
	vb := []fakeVMA{{seed: 7, first: 300, n: 900}} // overlaps a's pages
	var wg sync.WaitGroup
	var ca, cb *image.Checkpoint
	wg.Add(2)
	go func() { defer wg.Done(); ca = dump(t, ra, "a", va) }()
	go func() { defer wg.Done(); cb = dump(t, rb, "b", vb) }()
	wg.Wait()
	rc := openRemoteT(t, srv, "shared", "host-c")
	list, err := rc.List()
	if err != nil || len(list) != 2 {
		t.Fatalf("list: %v, %v", list, err)
	}
	for _, p := range []struct {
		c    *image.Checkpoint
		vmas []fakeVMA
	}{{ca, va}, {cb, vb}} {
		got, err := rc.Load(p.c.ID)
		if err != nil {
			t.Fatal(err)
		}
		checkReadable(t, rc, got, p.vmas)
	}
	verifyClean(t, rc)
}

// TestRemoteGCRefusesLock: gc refuses while another host holds a lock,
// and runs once it is released, keeping every live page.
func TestRemoteGCRefusesLock(t *testing.T) {
	srv := startS3(t)
	ra := openRemoteT(t, srv, "gc", "host-a")
	v := []fakeVMA{{seed: 3, n: 100}}
	c := dump(t, ra, "keep", v)
	dead := dump(t, ra, "dead", []fakeVMA{{seed: 4, n: 100}})
	rb := openRemoteT(t, srv, "gc", "host-b")
	if err := rb.Remove(dead.ID); err != nil {
		t.Fatal(err)
	}
	_, err := rb.GC()
	if !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), "host-a") {
		t.Fatalf("gc with host-a's lock: %v, want ErrBusy naming host-a", err)
	}
	t.Logf("gc refused: %v", err)
	if err := ra.Close(); err != nil {
		t.Fatal(err)
	}
	res, err := rb.GC()
	if err != nil {
		t.Fatal(err)
	}
	if res.PacksDropped != 1 || res.Pages != 100 {
		t.Fatalf("gc: %+v, want the dead checkpoint's pack and 100 pages dropped", res)
	}
	got, err := rb.Load(c.ID)
	if err != nil {
		t.Fatal(err)
	}
	checkReadable(t, rb, got, v)
	verifyClean(t, rb)
}

// TestRemoteReadsOnDemand: a store opened afresh reads a page with one
// range GET of the segment around it (its neighbours come free) and reads
// the next remoteReadAhead segments ahead, never the whole pack.
func TestRemoteReadsOnDemand(t *testing.T) {
	srv := startS3(t)
	rw := openRemoteT(t, srv, "lazy", "a")
	v := []fakeVMA{{seed: 9, n: 2048}} // 8 MiB: one pack, 8 segments
	c := dump(t, rw, "big", v)
	rw.Close()
	r := openRemoteT(t, srv, "lazy", "b")
	got, err := r.Load(c.ID)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, image.PageSize)
	for _, i := range []int{0, 1, 2, 100, 200} { // all in the first MiB
		if err := r.ReadPage(got.Tasks[0].VMAs[0].Pages[i].Hash, buf); err != nil {
			t.Fatal(err)
		}
	}
	r.reads.ahead.Wait()
	if n := r.RangeGets(); n != 1+remoteReadAhead {
		t.Fatalf("5 pages of one segment: %d range GETs, want 1 and %d ahead", n, remoteReadAhead)
	}
	// Page 2000 is in segment 7 of 9: segment 8 is read ahead.
	if err := r.ReadPage(got.Tasks[0].VMAs[0].Pages[2000].Hash, buf); err != nil {
		t.Fatal(err)
	}
	r.reads.ahead.Wait()
	if n := r.RangeGets(); n != 3+remoteReadAhead {
		t.Fatalf("a page of another segment: %d range GETs in all, want %d", n, 3+remoteReadAhead)
	}
	checkReadable(t, r, got, v)
	if n := r.RangeGets(); n != 9 { // 8 MiB of pages and the header: 9 segments
		t.Fatalf("whole checkpoint: %d range GETs, want 9", n)
	}
}

// TestRemoteErrors: bad credentials and an unreachable endpoint give
// clear errors; a store not made yet is ErrNotStore.
func TestRemoteErrors(t *testing.T) {
	srv := startS3(t)
	ctx := context.Background()
	bad := srv.config()
	bad.AccessKey = "wrong"
	obj, _ := NewS3Objects("s3://"+testBucket+"/x", bad)
	_, err := OpenRemote(ctx, obj, true)
	if !errors.Is(err, ErrRemoteAccess) || !strings.Contains(err.Error(), "AWS_ACCESS_KEY_ID") {
		t.Fatalf("bad key: %v", err)
	}
	t.Logf("bad key: %v", err)

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	gone := srv.config()
	gone.Endpoint = "http://" + addr
	obj, _ = NewS3Objects("s3://"+testBucket+"/x", gone)
	_, err = OpenRemote(ctx, obj, true)
	if err == nil || !strings.Contains(err.Error(), "cannot reach") {
		t.Fatalf("unreachable: %v", err)
	}
	t.Logf("unreachable: %v", err)

	obj, _ = NewS3Objects("s3://"+testBucket+"/none", srv.config())
	if _, err = OpenRemote(ctx, obj, false); !errors.Is(err, ErrNotStore) {
		t.Fatalf("absent store: %v", err)
	}
	obj, _ = NewS3Objects("s3://nobucket/x", srv.config())
	if _, err = OpenRemote(ctx, obj, true); !errors.Is(err, ErrNotStore) {
		t.Fatalf("absent bucket: %v", err)
	}
}

// TestRemoteIndexCache: a store opened again with the same local cache
// lists the bucket's index but fetches no index object and no summary it
// fetched before; a new pack's index is fetched, once.
func TestRemoteIndexCache(t *testing.T) {
	srv := startS3(t)
	gets := func(kind string) int {
		n := 0
		srv.gets.Range(func(k, v any) bool {
			if strings.Contains(k.(string), "/"+kind+"/") {
				n += *v.(*int)
			}
			return true
		})
		return n
	}
	w := openRemoteT(t, srv, "cache", "writer")
	dump(t, w, "one", []fakeVMA{{seed: 5, n: 300}})
	w.Close()
	readerCache := t.TempDir()
	RemoteCacheDir = readerCache
	r := openRemoteT(t, srv, "cache", "reader+cache")
	if _, err := r.List(); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Missing(nil); err != nil {
		t.Fatal(err)
	}
	r.Close()
	idx, sums := gets("index"), gets("summaries")
	if idx != 1 || sums != 1 {
		t.Fatalf("first open: %d index and %d summary GETs, want 1 and 1", idx, sums)
	}
	w = openRemoteT(t, srv, "cache", "writer")
	dump(t, w, "two", []fakeVMA{{seed: 6, n: 300}})
	w.Close()
	idx, sums = gets("index"), gets("summaries") // the writer's own cache is new
	RemoteCacheDir = readerCache
	r = openRemoteT(t, srv, "cache", "reader+cache")
	if list, err := r.List(); err != nil || len(list) != 2 {
		t.Fatalf("list: %v %v", list, err)
	}
	if _, err := r.Missing(nil); err != nil {
		t.Fatal(err)
	}
	if d1, d2 := gets("index")-idx, gets("summaries")-sums; d1 != 1 || d2 != 1 {
		t.Fatalf("second open: %d index and %d summary GETs, want 1 and 1 (the new ones only)", d1, d2)
	}
}

// TestRemoteUntrustedBucket: a byte changed in a pack or a manifest in
// the bucket is caught (ErrPageCorrupt, ErrCorrupt), never served.
func TestRemoteUntrustedBucket(t *testing.T) {
	srv := startS3(t)
	ctx := context.Background()
	w := openRemoteT(t, srv, "evil", "a")
	c := dump(t, w, "x", []fakeVMA{{seed: 8, n: 20}})
	w.Close()
	obj := w.Objects()
	packs, err := obj.List(ctx, remotePacks)
	if err != nil || len(packs) != 1 {
		t.Fatalf("packs: %v %v", packs, err)
	}
	b, _ := obj.Get(ctx, packs[0].Name)
	b[packHeaderSize+100] ^= 1 // in the first page
	obj.Put(ctx, packs[0].Name, b)
	r := openRemoteT(t, srv, "evil", "b")
	got, err := r.Load(c.ID)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, image.PageSize)
	if err := r.ReadPage(got.Tasks[0].VMAs[0].Pages[0].Hash, buf); !errors.Is(err, ErrPageCorrupt) {
		t.Fatalf("read of a changed page: %v, want ErrPageCorrupt", err)
	}
	if problems, err := r.Verify(); err != nil || len(problems) != 1 {
		t.Fatalf("verify: %q %v, want one problem", problems, err)
	}
	m, _ := obj.Get(ctx, remoteManifests+c.ID)
	m[len(m)-5] ^= 1
	obj.Put(ctx, remoteManifests+c.ID, m)
	if _, err := r.Load(c.ID); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("load of a changed manifest: %v, want ErrCorrupt", err)
	}
}

// TestCopyLocalLocal copies between two local stores: a checkpoint whose
// pages the destination mostly has costs only the changed pages.
func TestCopyLocalLocal(t *testing.T) {
	a, b := openT(t), openT(t)
	base := []fakeVMA{{seed: 11, n: 1000}}
	next := []fakeVMA{{seed: 11, first: 20, n: 1000}} // 20 pages new
	c1 := dump(t, a, "base", base)
	c2 := dump(t, a, "next", next)
	if _, err := Copy(a, b, []string{c1.ID}, nil); err != nil {
		t.Fatal(err)
	}
	var calls int
	res, err := Copy(a, b, []string{c2.ID}, func(id string, done, total int64) { calls++ })
	if err != nil {
		t.Fatal(err)
	}
	if r := res[0]; r.Sent != 20 || r.Pages != 1000 || calls == 0 {
		t.Fatalf("copy: %+v, %d progress calls; want 20 of 1000 pages sent", r, calls)
	}
	t.Logf("local copy of a checkpoint the destination mostly has: %d of %d bytes sent (%.3f)",
		res[0].BytesSent, res[0].BytesTotal, float64(res[0].BytesSent)/float64(res[0].BytesTotal))
	got, err := b.Load(c2.ID)
	if err != nil {
		t.Fatal(err)
	}
	checkReadable(t, b, got, next)
	verifyClean(t, b)
}

// TestRemoteStaleLock: a lock not refreshed for remoteLockStale (its
// process died) does not stop gc.
func TestRemoteStaleLock(t *testing.T) {
	srv := startS3(t)
	r := openRemoteT(t, srv, "stale", "a")
	dump(t, r, "x", []fakeVMA{{seed: 12, n: 10}})
	old := lockInfo{Time: time.Now().Add(-remoteLockStale - time.Minute), Exclusive: true, Host: "dead", PID: 1}
	b, _ := json.Marshal(old)
	if err := r.Objects().Put(context.Background(), remoteLocks+"00000000000000aa", b); err != nil {
		t.Fatal(err)
	}
	if _, err := r.GC(); err != nil {
		t.Fatalf("gc with only a stale lock of another host: %v", err)
	}
	fresh := old
	fresh.Time = time.Now()
	b, _ = json.Marshal(fresh)
	r.Objects().Put(context.Background(), remoteLocks+"00000000000000bb", b)
	if _, err := r.GC(); !errors.Is(err, ErrBusy) {
		t.Fatalf("gc with a live exclusive lock: %v, want ErrBusy", err)
	}
	// The store is usable after a refused gc: its shared lock is back.
	dump(t, r, "y", []fakeVMA{{seed: 13, n: 10}})
}
