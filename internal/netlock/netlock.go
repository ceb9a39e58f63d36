// Package netlock holds back the packets of TCP connections while their
// program is down, like CRIU's network lock: an nftables table (family
// inet) whose input and output chains drop every packet of the locked
// connections, so that the peer's kernel sees no RST from a machine where
// the connection's socket does not exist for a while, and its own packets
// are not answered (it retransmits). Segments marked tcpqueue.Mark pass
// (a restore putting queued connections back). Unlock deletes the table.
package netlock

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/internal/tcpqueue"
)

// Prefix starts the name of every table this package makes.
const Prefix = "ckptfs-lock-"

// Conn is a connection from Local (this machine's end) to Remote.
type Conn struct{ Local, Remote netip.AddrPort }

// conn opens an nftables connection in the network namespace of the file
// netns ("" for the caller's own).
func conn(netns string) (*nftables.Conn, func(), error) {
	if netns == "" {
		c, err := nftables.New()
		return c, func() {}, err
	}
	f, err := os.Open(netns)
	if err != nil {
		return nil, nil, fmt.Errorf("network namespace: %w", err)
	}
	c, err := nftables.New(nftables.WithNetNSFd(int(f.Fd())))
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return c, func() { c.CloseLasting(); f.Close() }, nil
}

// Lock makes table name (Prefix + something) dropping the packets of
// conns in the network namespace netns ("" for the caller's own).
func Lock(netns, name string, conns []Conn) error {
	if !strings.HasPrefix(name, Prefix) {
		return fmt.Errorf("lock table %q does not start with %s", name, Prefix)
	}
	c, done, err := conn(netns)
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	defer done()
	t := c.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: name})
	drop := nftables.ChainPolicyAccept
	in := c.AddChain(&nftables.Chain{Name: "input", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityRef(-300), Policy: &drop})
	out := c.AddChain(&nftables.Chain{Name: "output", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityRef(-300), Policy: &drop})
	// Segments internal/tcpqueue injects to put a queued connection
	// back (marked tcpqueue.Mark) go through while the lock holds, also
	// when their peer is in the tree and its own connection locked.
	for _, ch := range []*nftables.Chain{in, out} {
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: passMarked()})
	}
	for _, k := range conns {
		// Out: from Local to Remote; in: from Remote to Local.
		c.AddRule(&nftables.Rule{Table: t, Chain: out, Exprs: match(k.Local, k.Remote)})
		c.AddRule(&nftables.Rule{Table: t, Chain: in, Exprs: match(k.Remote, k.Local)})
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables: add lock table %s: %w", name, err)
	}
	return nil
}

// passMarked is the expressions of a rule accepting packets marked tcpqueue.Mark.
func passMarked() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: binaryutil.NativeEndian.PutUint32(tcpqueue.MarkMask), Xor: []byte{0, 0, 0, 0}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(tcpqueue.Mark)},
		&expr.Verdict{Kind: expr.VerdictAccept},
	}
}

// match is the expressions of a rule dropping TCP packets from src to dst.
func match(src, dst netip.AddrPort) []expr.Any {
	s, d := src.Addr().Unmap(), dst.Addr().Unmap()
	nfproto, saddr, daddr, alen := byte(unix.NFPROTO_IPV4), uint32(12), uint32(16), uint32(4)
	if s.Is6() {
		nfproto, saddr, daddr, alen = unix.NFPROTO_IPV6, 8, 24, 16
	}
	port := func(p uint16) []byte { return []byte{byte(p >> 8), byte(p)} }
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{nfproto}},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: saddr, Len: alen},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: s.AsSlice()},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: daddr, Len: alen},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: d.AsSlice()},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: port(src.Port())},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: port(dst.Port())},
		&expr.Verdict{Kind: expr.VerdictDrop},
	}
}

// Unlock deletes table name in netns ("" for the caller's own); a table
// that is not there is no error.
func Unlock(netns, name string) error {
	if !strings.HasPrefix(name, Prefix) {
		return fmt.Errorf("lock table %q does not start with %s", name, Prefix)
	}
	c, done, err := conn(netns)
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	defer done()
	c.DelTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: name})
	if err := c.Flush(); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("nftables: delete lock table %s: %w", name, err)
	}
	return nil
}

// Tables lists the lock tables of netns ("" for the caller's own).
func Tables(netns string) ([]string, error) {
	c, done, err := conn(netns)
	if err != nil {
		return nil, fmt.Errorf("nftables: %w", err)
	}
	defer done()
	ts, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return nil, fmt.Errorf("nftables: list tables: %w", err)
	}
	var out []string
	for _, t := range ts {
		if strings.HasPrefix(t.Name, Prefix) {
			out = append(out, t.Name)
		}
	}
	return out, nil
}
