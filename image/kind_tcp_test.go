package image

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

func testTCPObjects() []*Object {
	listen := &TCPSocket{Ino: 41, Family: 10, State: TCPListen, Local: netip.MustParseAddrPort("[::]:6379"), Backlog: 511,
		Opts: TCPOpts{ReuseAddr: 1, NoDelay: 1, DeferAccept: 3, Sndbuf: 16384, Rcvbuf: 131072}}
	conn := &TCPSocket{Ino: 42, Family: 10, State: TCPEstablished, Local: netip.MustParseAddrPort("[::ffff:127.0.0.1]:6379"),
		Remote: netip.MustParseAddrPort("[::ffff:127.0.0.1]:40112"), Opts: TCPOpts{KeepAlive: 1, Sndbuf: 2626560, Rcvbuf: 131072},
		Conn: &TCPConn{SndSeq: 4000000000, RcvSeq: 7, MSS: 65483, SACK: true, Timestamps: true, Wscale: true, SndWscale: 7,
			RcvWscale: 10, Timestamp: 123, Window: [5]uint32{1, 2, 3, 4, 5}, SendQueue: 5, Unsent: 2, RecvQueue: 3},
		Lock: "ckptfs-lock-12-345"}
	v4 := &TCPSocket{Ino: 43, Family: 2, State: TCPEstablished, Local: netip.MustParseAddrPort("127.0.0.1:1"),
		Remote: netip.MustParseAddrPort("127.0.0.1:2"), Conn: &TCPConn{MSS: 536}}
	queued := &TCPSocket{Family: 10, State: TCPEstablished, Local: netip.MustParseAddrPort("[::ffff:127.0.0.1]:6379"),
		Remote: netip.MustParseAddrPort("[::ffff:127.0.0.1]:40113"), QueuedIn: TCPSocketID(41),
		Conn: &TCPConn{SndSeq: 9, RcvSeq: 70, MSS: 65483, RecvQueue: 4}}
	return []*Object{
		{ID: TCPSocketID(41), Kind: ObjTCPSocket, Info: listen.Info()},
		{ID: TCPQueuedID(TCPSocketID(41), 0), Kind: ObjTCPSocket, Info: queued.Info(), Data: []byte("GET ")},
		{ID: TCPSocketID(42), Kind: ObjTCPSocket, Info: conn.Info(), Data: []byte("sent!rcv")},
		{ID: TCPSocketID(43), Kind: ObjTCPSocket, Info: v4.Info()},
	}
}

// TestTCPSchema: a TCP socket's info reads back strictly to the same
// struct and renders the same lines; the queues split the data.
func TestTCPSchema(t *testing.T) {
	for _, o := range testTCPObjects() {
		s, err := ParseTCPSocket(o, true)
		if err != nil {
			t.Fatalf("%s: %v\n%s", o.ID, err, strings.Join(o.Info, "\n"))
		}
		if got := s.Info(); !reflect.DeepEqual(got, o.Info) {
			t.Errorf("%s: rendered again\n%q, want\n%q", o.ID, got, o.Info)
		}
		if s.Conn != nil && string(s.SendData(o))+string(s.RecvData(o)) != string(o.Data) {
			t.Errorf("%s: queues do not split the data", o.ID)
		}
	}
	q := testTCPObjects()[1]
	if s, _ := ParseTCPSocket(q, true); q.ID != "tcp-41-q0" || s.QueuedIn != "tcp-41" || string(s.RecvData(q)) != "GET " {
		t.Errorf("queued connection %s parsed %+v", q.ID, s)
	}
	o := testTCPObjects()[2]
	s, _ := ParseTCPSocket(o, true)
	if string(s.SendData(o)) != "sent!" || string(s.RecvData(o)) != "rcv" || s.Lock != "ckptfs-lock-12-345" {
		t.Errorf("parsed %+v", s)
	}
}

// TestTCPSchemaHostile: bad lines are errors, never a panic.
func TestTCPSchemaHostile(t *testing.T) {
	for _, c := range []struct{ from, to, want string }{
		{"state: ESTABLISHED", "state: FIN-WAIT1", "not LISTEN or ESTABLISHED"},
		{"family: 10", "family: 2", "not of family 2"},
		{"lock: ckptfs-lock-12-345", "lock: filter", "is not ckptfs-lock-"},
		{"lock: ckptfs-lock-12-345", "lock: ckptfs-lock-1; drop", "is not ckptfs-lock-"},
		{"send-queue: 5", "send-queue: 500", "data of 8"},
		{"unsent: 2", "unsent: 6", "data of 8"},
		{"window: 1 2 3 4 5", "window: 1 2", "want 5 numbers"},
		{"wscale: 7 10", "wscale: 7 99", "two scales"},
		{"mss: 65483", "mss: 0", "mss"},
		{"local: [::ffff:127.0.0.1]:6379", "local: nowhere", "not address:port"},
		{"rcv-seq: 7", "rcv-seq: 7\nbogus: 1", "unknown key"},
		{"queued-in: tcp-41", "queued-in: ../etc", "is not tcp-<inode>"},
		{"queued-in: tcp-41", "queued-in: tcp-41-q0", "is not tcp-<inode>"},
		{"ino: 0", "ino: 5", "not yet accepted with inode 5"},
	} {
		o := testTCPObjects()[2]
		if strings.HasPrefix(c.from, "queued-in") || c.from == "ino: 0" {
			o = testTCPObjects()[1]
		}
		info := strings.Replace(strings.Join(o.Info, "\n"), c.from, c.to, 1)
		o.Info = strings.Split(info, "\n")
		_, err := ParseTCPSocket(o, true)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s -> %s: error %v, want %q", c.from, c.to, err, c.want)
		}
	}
}

// TestUDPSchema: a UDP socket's info reads back strictly to the same
// struct and lines; bad lines are errors.
func TestUDPSchema(t *testing.T) {
	s := &UDPSocket{Ino: 9, Family: 10, Local: netip.MustParseAddrPort("[::]:5353"), Opts: UDPOpts{ReuseAddr: 1, Sndbuf: 212992, Rcvbuf: 212992},
		Msgs: []UDPMsg{{Len: 3, From: netip.MustParseAddrPort("[::ffff:127.0.0.1]:4000")}, {Len: 0, From: netip.MustParseAddrPort("[::1]:9")}}}
	o := &Object{ID: UDPSocketID(9), Kind: ObjUDPSocket, Info: s.Info(), Data: []byte("abc")}
	got, err := ParseUDPSocket(o, true)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got.Info(), o.Info) || !reflect.DeepEqual(got, s) {
		t.Errorf("read back %+v, want %+v", got, s)
	}
	for _, c := range []struct{ from, to, want string }{
		{"msg: 3 [::ffff:127.0.0.1]:4000", "msg: 4 [::ffff:127.0.0.1]:4000", "bad message line"},
		{"msg: 3 [::ffff:127.0.0.1]:4000", "msg: 2 [::ffff:127.0.0.1]:4000", "data of 3"},
		{"msg: 0 [::1]:9", "msg: 0 nowhere", "bad message line"},
		{"remote: -", "remote: 1.2.3.4:5", "not of family 10"},
	} {
		o2 := *o
		o2.Info = strings.Split(strings.Replace(strings.Join(o.Info, "\n"), c.from, c.to, 1), "\n")
		if _, err := ParseUDPSocket(&o2, true); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s -> %s: error %v, want %q", c.from, c.to, err, c.want)
		}
	}
}
