package dumper

import "testing"

func TestBufferPoolDrain(t *testing.T) {
	var p bufferPool
	p.prefault(2)
	b := p.get()
	p.put(b)
	if len(p.free) != 2 {
		t.Fatalf("%d free buffers, want 2", len(p.free))
	}
	p.drain()
	if len(p.free) != 0 {
		t.Fatalf("%d free buffers after drain, want 0", len(p.free))
	}
	p.put(b)
	if len(p.free) != 0 {
		t.Fatalf("a buffer put back after drain was kept")
	}
	if got := p.get(); len(got) != chunkPages*4096 {
		t.Fatalf("get after drain: %d bytes", len(got))
	}
}

func TestDirtyHeadroom(t *testing.T) {
	// The number depends on the machine; it must be sane: not negative,
	// not more than the memory there is.
	h := dirtyHeadroom()
	if h < 0 || h > 1<<50 {
		t.Fatalf("dirty headroom %d", h)
	}
	t.Logf("dirty headroom: %d MiB", h>>20)
}
