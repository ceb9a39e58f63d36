package dedup

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"math"
)

// Badger's log files (value logs *.vlog and memtable write-ahead logs
// *.mem) are read here directly, without Badger: to see, before Badger
// opens a store, whether it would cut a log at a damaged entry (it cuts
// the last value log and every memtable log at the first entry that does
// not check, losing everything after it), and to salvage entries from a
// damaged store (repair.go). The format, as Badger v4 writes it (value.go,
// structs.go, memtable.go of badger v4.9): a 20-byte header (key id and
// IV, zero without encryption), then entries of
//
//	meta byte, user meta byte, uvarint key length, uvarint value length,
//	uvarint expiresAt, key (user key + 8-byte version), value,
//	CRC-32C (big endian) of everything before it in the entry.

const (
	logHeaderSize = 20 // vlogHeaderSize
	maxKeySize    = 1 << 16

	bitDelete       = 1 << 0
	bitValuePointer = 1 << 1
	bitTxn          = 1 << 6
	bitFinTxn       = 1 << 7
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// logEntry is one entry of a Badger log file.
type logEntry struct {
	offset int
	size   int
	meta   byte
	key    []byte // with its 8-byte version
	value  []byte // points into the file's data
}

// userKey is the key without its version.
func (e *logEntry) userKey() []byte { return e.key[:len(e.key)-8] }

// version is the entry's Badger version (commit timestamp).
func (e *logEntry) version() uint64 {
	return math.MaxUint64 - binary.BigEndian.Uint64(e.key[len(e.key)-8:])
}

// parseLogEntry reads the entry at off of data; ok is false unless a whole
// entry with a matching checksum and a key with a version is there.
func parseLogEntry(data []byte, off int) (e logEntry, ok bool) {
	p := off
	if p+2 > len(data) {
		return e, false
	}
	meta := data[p]
	p += 2
	klen, n := binary.Uvarint(data[p:])
	if n <= 0 {
		return e, false
	}
	p += n
	vlen, n := binary.Uvarint(data[p:])
	if n <= 0 {
		return e, false
	}
	p += n
	if _, n = binary.Uvarint(data[p:]); n <= 0 {
		return e, false
	}
	p += n
	if klen <= 8 || klen > maxKeySize || vlen > uint64(len(data)) {
		return e, false
	}
	end := p + int(klen) + int(vlen)
	if end+4 > len(data) || end < p {
		return e, false
	}
	if crc32.Checksum(data[off:end], castagnoli) != binary.BigEndian.Uint32(data[end:]) {
		return e, false
	}
	return logEntry{
		offset: off,
		size:   end + 4 - off,
		meta:   meta,
		key:    data[p : p+int(klen)],
		value:  data[p+int(klen) : end],
	}, true
}

// logScan is what scanLog found in a log file.
type logScan struct {
	// validEnd is where Badger's replay stops: the end of the last
	// entry before the first one that does not parse.
	validEnd int
	// damagedAt is the offset of the first damaged stretch followed by
	// good entries (-1: none): replay would cut the log there and lose
	// those entries.
	damagedAt int
	// lost counts the good entries after damagedAt.
	lost int
}

// scanLog walks the entries of a log file's data from its header on. At
// an entry that does not parse it searches forward, offset by offset
// (runs of zero pages skipped), for further good entries. each (if not
// nil) gets every good entry, in file order.
func scanLog(data []byte, each func(e logEntry)) logScan {
	s := logScan{validEnd: logHeaderSize, damagedAt: -1}
	off, firstBad := logHeaderSize, -1
	for off < len(data) {
		e, ok := parseLogEntry(data, off)
		if !ok {
			if firstBad < 0 {
				firstBad = off
			}
			off = nextCandidate(data, off+1)
			continue
		}
		if each != nil {
			each(e)
		}
		off += e.size
		if firstBad < 0 {
			s.validEnd = off
		} else {
			s.lost++
			s.damagedAt = firstBad
		}
	}
	if firstBad >= 0 && s.damagedAt < 0 && completeEntry(data, firstBad) {
		s.damagedAt = firstBad // the last entry, whole but not checking
	}
	return s
}

// completeEntry tells a damaged entry from one torn by a crash: Badger
// copies an entry into its mapped log in one piece, so a crash leaves a
// prefix followed by zeros; an entry whose declared length fits in the
// file and whose checksum bytes are not zero was written whole.
func completeEntry(data []byte, off int) bool {
	p := off + 2
	if p > len(data) {
		return false
	}
	var l [3]uint64
	for i := range l {
		v, n := binary.Uvarint(data[p:])
		if n <= 0 {
			return false
		}
		l[i], p = v, p+n
	}
	if l[0] == 0 || l[0] > maxKeySize || l[1] > uint64(len(data)) {
		return false
	}
	end := p + int(l[0]) + int(l[1])
	return end+4 <= len(data) && binary.BigEndian.Uint32(data[end:]) != 0
}

var zeroBlock [4096]byte

// nextCandidate returns the first offset at or after off where an entry
// could start: zero bytes never start one (an entry's key length is not
// zero, and the meta byte is zero only with a non-zero user meta or key
// length after it), so whole zero blocks are skipped at once.
func nextCandidate(data []byte, off int) int {
	for off < len(data) {
		if off%len(zeroBlock) == 0 && off+len(zeroBlock) <= len(data) && bytes.Equal(data[off:off+len(zeroBlock)], zeroBlock[:]) {
			off += len(zeroBlock)
			continue
		}
		if off+2 < len(data) && data[off] == 0 && data[off+1] == 0 && data[off+2] == 0 {
			off++
			continue
		}
		if _, ok := parseLogEntry(data, off); ok {
			return off
		}
		off++
	}
	return len(data)
}
