package image

// Signalfd is the state of a signalfd: the signals it reads.
//
//	sigmask: 0x0000000000004000
//
// The signals pending are the task's and threads' (sigpending files).
type Signalfd struct {
	Mask uint64 // bit n-1: signal n
}

// Lines renders s as its fdinfo lines.
func (s Signalfd) Lines() []string {
	var w lineWriter
	w.add("sigmask", "%#016x", s.Mask)
	return w
}

// ParseSignalfd reads the signalfd state of f (or the kernel's fdinfo
// lines with strict false).
func ParseSignalfd(f *FD, strict bool) (Signalfd, error) {
	k := fdKindLines(f, []string{"sigmask"}, nil, strict)
	return Signalfd{Mask: k.uint("sigmask", 16, 64)}, k.err
}

func signalfdLines(f *FD, strict bool) ([]string, error) {
	s, err := ParseSignalfd(f, strict)
	return s.Lines(), err
}
