package tcpqueue

import "encoding/binary"

// ne is the byte order of BPF map values (the machine's).
var ne = binary.NativeEndian
