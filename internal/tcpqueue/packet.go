package tcpqueue

import (
	"encoding/binary"
	"net/netip"
)

// TCP header flags.
const (
	flagPSH = 0x08
	flagACK = 0x10
)

// segment is one TCP segment from src to dst.
type segment struct {
	src, dst   netip.AddrPort
	seq, ack   uint32
	window     uint16
	timestamps bool // carry a timestamp option (tsval 0, tsecr 0)
	payload    []byte
}

// packet is s as an IP packet (IPv4 when both addresses are IPv4).
func (s segment) packet() []byte {
	tcp := s.tcp()
	if s.src.Addr().Is4() {
		ip := make([]byte, 20, 20+len(tcp))
		ip[0] = 0x45
		binary.BigEndian.PutUint16(ip[2:], uint16(20+len(tcp)))
		ip[6] = 0x40 // don't fragment
		ip[8] = 64
		ip[9] = 6 // TCP
		src, dst := s.src.Addr().As4(), s.dst.Addr().As4()
		copy(ip[12:], src[:])
		copy(ip[16:], dst[:])
		binary.BigEndian.PutUint16(ip[10:], ^fold(sum(ip, 0)))
		setTCPChecksum(tcp, sum(src[:], sum(dst[:], uint32(6)+uint32(len(tcp)))))
		return append(ip, tcp...)
	}
	ip := make([]byte, 40, 40+len(tcp))
	ip[0] = 0x60
	binary.BigEndian.PutUint16(ip[4:], uint16(len(tcp)))
	ip[6] = 6 // next header TCP
	ip[7] = 64
	src, dst := s.src.Addr().As16(), s.dst.Addr().As16()
	copy(ip[8:], src[:])
	copy(ip[24:], dst[:])
	setTCPChecksum(tcp, sum(src[:], sum(dst[:], uint32(6)+uint32(len(tcp)))))
	return append(ip, tcp...)
}

// tcp is the TCP header, options and payload of s, checksum zero.
func (s segment) tcp() []byte {
	hlen := 20
	if s.timestamps {
		hlen += 12
	}
	b := make([]byte, hlen, hlen+len(s.payload))
	binary.BigEndian.PutUint16(b[0:], s.src.Port())
	binary.BigEndian.PutUint16(b[2:], s.dst.Port())
	binary.BigEndian.PutUint32(b[4:], s.seq)
	binary.BigEndian.PutUint32(b[8:], s.ack)
	b[12] = byte(hlen/4) << 4
	b[13] = flagACK
	if len(s.payload) > 0 {
		b[13] |= flagPSH
	}
	binary.BigEndian.PutUint16(b[14:], s.window)
	if s.timestamps {
		// NOP, NOP, TS(kind 8, len 10): tsval 0 and tsecr 0, which the
		// receiver takes as "no timestamp to check" (tcp_paws_check).
		copy(b[20:], []byte{1, 1, 8, 10})
	}
	return append(b, s.payload...)
}

func setTCPChecksum(tcp []byte, pseudo uint32) {
	binary.BigEndian.PutUint16(tcp[16:], ^fold(sum(tcp, pseudo)))
}

// sum adds b as big-endian 16-bit words to acc (the Internet checksum).
func sum(b []byte, acc uint32) uint32 {
	for len(b) >= 2 {
		acc += uint32(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		acc += uint32(b[0]) << 8
	}
	return acc
}

func fold(acc uint32) uint16 {
	for acc > 0xffff {
		acc = acc>>16 + acc&0xffff
	}
	return uint16(acc)
}
