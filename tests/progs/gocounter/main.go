// gocounter fills memory with a pattern, runs goroutines, and every period
// re-checks the memory and prints "gocounter <pid> tick N ok|BAD".
package main

import (
	"fmt"
	"os"
	"strconv"
	"sync/atomic"
	"time"
)

func pattern(mem []uint64) {
	s := uint64(0x9e3779b97f4a7c15)
	for i := range mem {
		s ^= s << 13
		s ^= s >> 7
		s ^= s << 17
		mem[i] = s
	}
}

func main() {
	mib, _ := strconv.Atoi(os.Args[1])
	period, _ := strconv.Atoi(os.Args[2])
	mem := make([]uint64, mib<<20/8)
	want := make([]uint64, len(mem))
	pattern(mem)
	pattern(want)
	var spins atomic.Int64
	for i := 0; i < 8; i++ {
		go func() {
			for {
				spins.Add(1)
				time.Sleep(time.Millisecond * 30)
			}
		}()
	}
	for tick := 0; ; tick++ {
		ok := "ok"
		for i := range mem {
			if mem[i] != want[i] {
				ok = "BAD"
				break
			}
		}
		fmt.Printf("gocounter %d tick %d %s\n", os.Getpid(), tick, ok)
		time.Sleep(time.Duration(period) * time.Millisecond)
	}
}
