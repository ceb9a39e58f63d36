package tests

import (
	"bufio"
	"io"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/dedup"
	"github.com/ckptfs/ckptfs/dumper"
	"github.com/ckptfs/ckptfs/internal/proc"
)

// memhog is the benchmark's target: 1 GiB of distinct, touched pages.
type memhog struct {
	cmd  *exec.Cmd
	in   io.WriteCloser
	out  *bufio.Reader
	addr uint64
}

func startMemhog(b *testing.B, mib int) *memhog {
	cmd := exec.Command(filepath.Join(built(b), "memhog"), strconv.Itoa(mib))
	in, _ := cmd.StdinPipe()
	outPipe, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	h := &memhog{cmd: cmd, in: in, out: bufio.NewReader(outPipe)}
	b.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, err := h.out.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "ready ") {
		b.Fatalf("memhog: %q %v", line, err)
	}
	h.addr, _ = strconv.ParseUint(strings.TrimSpace(line[6:]), 0, 64)
	return h
}

func (h *memhog) touch(b *testing.B, pages int) {
	if _, err := io.WriteString(h.in, "touch "+strconv.Itoa(pages)+"\n"); err != nil {
		b.Fatal(err)
	}
	if line, err := h.out.ReadString('\n'); err != nil || line != "done\n" {
		b.Fatalf("memhog touch: %q %v", line, err)
	}
}

// rawCopy reads every readable private anonymous vma of pid with
// process_vm_readv in 1 MiB pieces: the floor for a dump.
func rawCopy(b *testing.B, pid int) (time.Duration, int64) {
	maps, err := proc.Maps(pid)
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	var n int64
	start := time.Now()
	for _, m := range maps {
		if m.Inode != 0 || m.Perms[0] != 'r' || m.Perms[3] != 'p' || strings.HasPrefix(m.Name, "[v") {
			continue
		}
		for a := m.Start; a < m.End; a += uint64(len(buf)) {
			l := min(uint64(len(buf)), m.End-a)
			local := []unix.Iovec{{Base: &buf[0]}}
			local[0].SetLen(int(l))
			got, err := unix.ProcessVMReadv(pid, local, []unix.RemoteIovec{{Base: uintptr(a), Len: int(l)}}, 0)
			if err != nil {
				b.Fatal(err)
			}
			n += int64(got)
		}
	}
	return time.Since(start), n
}

// BenchmarkDump1GiB dumps a process with 1 GiB of touched, non-zero
// anonymous memory twice (16 MiB rewritten in between) and reports, against
// a raw process_vm_readv copy of the same memory in the same run: first and
// second dump time, freeze time, and the second dump's store growth against
// the bytes that really changed.
func BenchmarkDump1GiB(b *testing.B) {
	const changedPages = 4096 // 16 MiB
	for i := 0; i < b.N; i++ {
		h := startMemhog(b, 1024)
		pid := h.cmd.Process.Pid
		raw, rawBytes := rawCopy(b, pid)
		store, err := dedup.Open(filepath.Join(b.TempDir(), "store"))
		if err != nil {
			b.Fatal(err)
		}
		first, err := dumper.Dump(store, pid, dumper.Options{})
		if err != nil {
			b.Fatal(err)
		}
		h.touch(b, changedPages)
		second, err := dumper.Dump(store, pid, dumper.Options{})
		if err != nil {
			b.Fatal(err)
		}
		store.Close()
		growth := float64(second.Checkpoint.Stats.BytesAdded) / float64(changedPages*4096)
		b.ReportMetric(raw.Seconds()*1000, "raw-copy-ms")
		b.ReportMetric(first.Elapsed.Seconds()/raw.Seconds(), "first-dump/raw")
		b.ReportMetric(second.Elapsed.Seconds()/raw.Seconds(), "second-dump/raw")
		b.ReportMetric(first.Freeze.Seconds()/raw.Seconds(), "first-freeze/raw")
		b.ReportMetric(second.Freeze.Seconds()/raw.Seconds(), "second-freeze/raw")
		b.ReportMetric(first.Elapsed.Seconds()*1000, "first-dump-ms")
		b.ReportMetric(second.Elapsed.Seconds()*1000, "second-dump-ms")
		b.ReportMetric(second.Freeze.Seconds()*1000, "second-freeze-ms")
		b.ReportMetric(growth, "growth/changed")
		b.Logf("raw copy %d MiB in %v; first dump %v (freeze %v), second %v (freeze %v), second added %d KiB for %d KiB changed",
			rawBytes>>20, raw, first.Elapsed, first.Freeze, second.Elapsed, second.Freeze,
			second.Checkpoint.Stats.BytesAdded>>10, changedPages*4)
	}
}
