package image

import "math"

// Eventfd is the state of an eventfd:
//
//	eventfd-count: 0x5        the counter (hex)
//	eventfd-semaphore: 0      EFD_SEMAPHORE (1) or not
//
// The kernel's fdinfo prints the same keys (the count in hex without 0x)
// and an eventfd-id, which says nothing a restore needs.
type Eventfd struct {
	Count     uint64
	Semaphore bool
}

// Lines renders e as its fdinfo lines.
func (e Eventfd) Lines() []string {
	var w lineWriter
	w.add("eventfd-count", "%#x", e.Count)
	w.add("eventfd-semaphore", "%d", boolInt(e.Semaphore))
	return w
}

// ParseEventfd reads the eventfd state of f (or the kernel's fdinfo lines
// with strict false).
func ParseEventfd(f *FD, strict bool) (Eventfd, error) {
	k := fdKindLines(f, []string{"eventfd-count", "eventfd-semaphore"}, nil, strict)
	e := Eventfd{Count: k.uint("eventfd-count", 16, 64), Semaphore: k.flag("eventfd-semaphore")}
	if e.Count == math.MaxUint64 {
		k.fail("eventfd-count: %#x is above the largest count", e.Count) // eventfd_write's limit
	}
	return e, k.err
}

func eventfdLines(f *FD, strict bool) ([]string, error) {
	e, err := ParseEventfd(f, strict)
	return e.Lines(), err
}
