package dedup

import (
	"bufio"
	"bytes"
	crand "crypto/rand"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ckptfs/ckptfs/image"
	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
)

// pythonHeap returns the non-zero pages of the writable anonymous memory
// of a Python process that built a heap of dicts, lists, strings and ints
// (about 64 MiB), read through /proc/PID/mem.
func pythonHeap(b *testing.B) [][]byte {
	py, err := exec.LookPath("python3")
	if err != nil {
		b.Skip("no python3")
	}
	prog := `
import sys, random
random.seed(1)
words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"]
data = []
for i in range(400000):
    data.append({"id": i, "name": random.choice(words) + str(i), "score": random.random(),
                 "tags": [random.choice(words) for _ in range(3)]})
print("ready", flush=True)
sys.stdin.read()
`
	cmd := exec.Command(py, "-c", prog)
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { stdin.Close(); cmd.Wait() }()
	if line, _ := bufio.NewReader(stdout).ReadString('\n'); line != "ready\n" {
		b.Fatalf("python3 said %q", line)
	}
	maps, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", cmd.Process.Pid))
	if err != nil {
		b.Fatal(err)
	}
	mem, err := os.Open(fmt.Sprintf("/proc/%d/mem", cmd.Process.Pid))
	if err != nil {
		b.Fatal(err)
	}
	defer mem.Close()
	var pages [][]byte
	for _, l := range strings.Split(string(maps), "\n") {
		f := strings.Fields(l)
		if len(f) < 5 || f[1] != "rw-p" || (len(f) > 5 && f[5] != "[heap]") {
			continue
		}
		lo, hi, _ := strings.Cut(f[0], "-")
		start, _ := strconv.ParseUint(lo, 16, 64)
		end, _ := strconv.ParseUint(hi, 16, 64)
		for a := start; a < end; a += image.PageSize {
			p := make([]byte, image.PageSize)
			if _, err := mem.ReadAt(p, int64(a)); err != nil && err != io.EOF {
				break
			}
			if !IsZero(p) {
				pages = append(pages, p)
			}
		}
	}
	if len(pages) < 1000 {
		b.Fatalf("only %d pages of python heap", len(pages))
	}
	return pages
}

func randomPages(n int) [][]byte {
	r := rand.New(rand.NewPCG(3, 4))
	pages := make([][]byte, n)
	for i := range pages {
		pages[i] = make([]byte, image.PageSize)
		for j := 0; j < image.PageSize; j += 8 {
			binary.LittleEndian.PutUint64(pages[i][j:], r.Uint64())
		}
	}
	return pages
}

// BenchmarkCompress compresses and decompresses every page (one page a
// block, as the store does) of a Python heap and of random memory with
// zstd (fastest) and s2, against a memcpy and a BLAKE3 of the same pages
// in the same run: ratio is stored/raw bytes (pages that do not shrink by
// 1/8 count raw), x-memcpy and x-hash the compress time over those.
func BenchmarkCompress(b *testing.B) {
	sets := map[string][][]byte{"python": pythonHeap(b), "random": randomPages(16384)}
	zdec, _ := zstd.NewReader(nil)
	zenc, _ := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1),
		zstd.WithZeroFrames(true), zstd.WithEncoderCRC(false))
	for _, set := range []string{"python", "random"} {
		pages := sets[set]
		for _, alg := range []string{"zstd", "s2"} {
			b.Run(set+"/"+alg, func(b *testing.B) {
				var comp, decomp, mem, hash time.Duration
				var raw, stored int64
				dst := make([]byte, image.PageSize)
				for range b.N {
					raw, stored = 0, 0
					blobs := make([][]byte, len(pages))
					t0 := time.Now()
					for i, p := range pages {
						var c []byte
						if alg == "zstd" {
							c = zenc.EncodeAll(p, make([]byte, 0, image.PageSize))
						} else {
							c = s2.Encode(make([]byte, s2.MaxEncodedLen(len(p))), p)
						}
						if len(c) > image.PageSize-minSaving {
							c = nil
						}
						blobs[i] = c
					}
					comp += time.Since(t0)
					t0 = time.Now()
					for i, c := range blobs {
						var err error
						switch {
						case c == nil:
							copy(dst, pages[i])
						case alg == "zstd":
							_, err = zdec.DecodeAll(c, dst[:0])
						default:
							_, err = s2.Decode(dst, c)
						}
						if err != nil {
							b.Fatal(err)
						}
					}
					decomp += time.Since(t0)
					for i, c := range blobs {
						raw += image.PageSize
						if c == nil {
							stored += image.PageSize
						} else {
							stored += int64(len(c))
							if alg == "s2" {
								d, _ := s2.Decode(nil, c)
								if !bytes.Equal(d, pages[i]) {
									b.Fatal("s2 round trip differs")
								}
							}
						}
					}
					t0 = time.Now()
					for _, p := range pages {
						copy(dst, p)
					}
					mem += time.Since(t0)
					t0 = time.Now()
					for _, p := range pages {
						Sum(p)
					}
					hash += time.Since(t0)
				}
				n := raw * int64(b.N)
				b.ReportMetric(float64(stored)/float64(raw), "ratio")
				b.ReportMetric(mbps(n, comp), "comp-MB/s")
				b.ReportMetric(mbps(n, decomp), "decomp-MB/s")
				b.ReportMetric(comp.Seconds()/mem.Seconds(), "x-memcpy")
				b.ReportMetric(comp.Seconds()/hash.Seconds(), "x-hash")
				b.ReportMetric(float64(len(pages)), "pages")
			})
		}
	}
}

// BenchmarkIndexEntries writes the index entries of 32 packs of 8192
// pages (1 GiB) to a fresh store, as the seals of a first dump do: what
// one Badger key per page costs (cpu-s/op counts Badger's background
// memtable flushes too).
func BenchmarkIndexEntries(b *testing.B) {
	const packs, perPack = 32, packTarget / image.PageSize
	entries := make([][]packEntry, packs)
	for p := range entries {
		entries[p] = make([]packEntry, perPack)
		for i := range entries[p] {
			e := &entries[p][i]
			crand.Read(e.hash[:])
			e.loc = packLoc{pack: packID(p + 1), offset: int64(packHeaderSize + i*image.PageSize), length: image.PageSize}
		}
	}
	b.StopTimer()
	var cpu time.Duration
	for i := 0; i < b.N; i++ {
		s, err := Open(filepath.Join(b.TempDir(), fmt.Sprint(i)))
		if err != nil {
			b.Fatal(err)
		}
		c0 := processCPU()
		b.StartTimer()
		for _, es := range entries {
			if err := s.putPackIndex(es[0].loc.pack, encodePackIndex(es[0].loc.pack, es)); err != nil {
				b.Fatal(err)
			}
		}
		if err := s.db.Sync(); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		cpu += processCPU() - c0
		s.Close()
	}
	b.ReportMetric(cpu.Seconds()/float64(b.N), "cpu-s/op")
}

// processCPU is the CPU time (user + system) the test process used so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
