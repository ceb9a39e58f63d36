package dedup

import (
	"bytes"
	"encoding/gob"
	"fmt"
	"testing"

	"github.com/ckptfs/ckptfs/image"
)

// bigManifest is a checkpoint the size of a busy server: 200 threads, 1000
// fds, 500 vmas (without page references, which live in the page tables).
func bigManifest() *image.Checkpoint {
	t := &image.Task{PID: 100, Comm: "server", Cmdline: []byte("server\x00--flag\x00"), Environ: bytes.Repeat([]byte("K=V\x00"), 100),
		Limits: make([]image.Rlimit, 16), Sigactions: make([]image.Sigaction, 64)}
	for i := 0; i < 200; i++ {
		t.Threads = append(t.Threads, &image.Thread{TID: 100 + i, Comm: "worker", XState: make([]byte, 2696),
			Regs: image.Regs{Rip: uint64(i), Rsp: 0x7ffd0000}, Extras: &image.Extras{}})
	}
	for i := 0; i < 1000; i++ {
		t.FDs = append(t.FDs, &image.FD{Num: i, Kind: image.FDFile, Path: fmt.Sprintf("/var/lib/data/file-%d", i), Flags: 2})
	}
	for i := 0; i < 500; i++ {
		t.VMAs = append(t.VMAs, &image.VMA{Start: uint64(i) << 24, End: uint64(i)<<24 + 1<<20, Perms: "rw-p", Kind: image.VMAAnon,
			Flags: []string{"rd", "wr", "mr", "mw", "me", "ac"}})
	}
	return &image.Checkpoint{ID: "20261201-000000-abcd", RootPID: 100, Tasks: []*image.Task{t}}
}

// BenchmarkManifest compares the format-2 manifest (JSON, sealed) with the
// format-1 one (gob of the model) it replaces: encode and decode.
func BenchmarkManifest(b *testing.B) {
	c := bigManifest()
	key := manifestKey(c.ID)
	b.Run("gob-v1", func(b *testing.B) {
		var size int
		for i := 0; i < b.N; i++ {
			var buf bytes.Buffer
			if err := gob.NewEncoder(&buf).Encode(c); err != nil {
				b.Fatal(err)
			}
			size = buf.Len()
			if err := gob.NewDecoder(&buf).Decode(new(image.Checkpoint)); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(size), "bytes")
	})
	b.Run("json-v2", func(b *testing.B) {
		var size int
		for i := 0; i < b.N; i++ {
			body, _, err := encodeManifest(c)
			if err != nil {
				b.Fatal(err)
			}
			v := seal(kindManifest, key, body)
			size = len(v)
			body, err = unseal(kindManifest, key, v)
			if err != nil {
				b.Fatal(err)
			}
			if _, _, _, err := decodeManifest(body); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(size), "bytes")
	})
}
