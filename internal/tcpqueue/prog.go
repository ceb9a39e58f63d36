package tcpqueue

import (
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
)

// Mark is the packet mark (SO_MARK) of the segments Put injects: the
// high 16 bits say "ours", the low 16 bits pick the pending child in the
// program's map. A lock (internal/netlock) lets such packets through.
const (
	Mark     = 0x636b0000
	MarkMask = 0xffff0000
)

// The value of the program's map, one per child to create: the socket
// tuple to look the listener up with, its size, the attributes of the
// request socket (struct bpf_tcp_req_attrs) and the kfunc's result.
const (
	valTuple     = 0  // struct bpf_sock_tuple, 12 (IPv4) or 36 (IPv6) bytes used
	valTupleSize = 36 // u32
	valAttrs     = 40 // struct bpf_tcp_req_attrs
	attrsSize    = 20
	valResult    = 60 // s32: bpf_sk_assign_tcp_reqsk's return, notRun before
	valueSize    = 64
	notRun       = 1
	noListener   = 2 // bpf_sk_lookup_tcp found nothing
)

// offsetof(struct __sk_buff, mark) (uapi/linux/bpf.h).
const skbMark = 8

const kfunc = "bpf_sk_assign_tcp_reqsk"

// kfuncID finds the BTF id of bpf_sk_assign_tcp_reqsk in the kernel's
// BTF and checks that struct bpf_tcp_req_attrs has the layout written.
func kfuncID() (btf.TypeID, error) {
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		return 0, fmt.Errorf("kernel BTF: %w", err)
	}
	var fn *btf.Func
	if err := spec.TypeByName(kfunc, &fn); err != nil {
		return 0, fmt.Errorf("kfunc %s (kernel 6.9 or later with CONFIG_SYN_COOKIES): %w", kfunc, err)
	}
	var attrs *btf.Struct
	if err := spec.TypeByName("bpf_tcp_req_attrs", &attrs); err != nil {
		return 0, fmt.Errorf("struct bpf_tcp_req_attrs: %w", err)
	}
	if attrs.Size != attrsSize {
		return 0, fmt.Errorf("struct bpf_tcp_req_attrs is %d bytes, not %d", attrs.Size, attrsSize)
	}
	return spec.TypeID(fn)
}

// program is the TC ingress program: a packet marked Mark|i whose
// pending entry i exists is given a request socket of the listener the
// entry's tuple finds (bpf_sk_lookup_tcp, then the kfunc
// bpf_sk_assign_tcp_reqsk), as custom SYN cookies do; the TCP stack then
// makes the child from the ACK (the ACK's seq-1 and ack_seq-1 become the
// initial sequence numbers) and queues it for accept. Every packet goes
// on (TC_ACT_OK).
func program(pending *ebpf.Map, kfuncID btf.TypeID) asm.Instructions {
	return asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.LoadMem(asm.R2, asm.R6, skbMark, asm.Word),
		asm.Mov.Reg(asm.R3, asm.R2),
		asm.And.Imm(asm.R3, -0x10000), // MarkMask
		asm.JNE.Imm32(asm.R3, Mark, "pass"),
		asm.And.Imm(asm.R2, 0xffff),
		asm.StoreMem(asm.RFP, -4, asm.R2, asm.Word),
		asm.LoadMapPtr(asm.R1, pending.FD()),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "pass"),
		asm.Mov.Reg(asm.R8, asm.R0),

		// bpf_sk_lookup_tcp(skb, &tuple, 12 or 36, BPF_F_CURRENT_NETNS, 0)
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.Mov.Reg(asm.R2, asm.R8),
		asm.LoadMem(asm.R3, asm.R8, valTupleSize, asm.Word),
		asm.JEq.Imm(asm.R3, 36, "v6"),
		asm.Mov.Imm(asm.R3, 12),
		asm.Ja.Label("lookup"),
		asm.Mov.Imm(asm.R3, 36).WithSymbol("v6"),
		asm.Mov.Imm(asm.R4, -1).WithSymbol("lookup"),
		asm.Mov.Imm(asm.R5, 0),
		asm.FnSkLookupTcp.Call(),
		asm.JNE.Imm(asm.R0, 0, "found"),
		asm.Mov.Imm(asm.R1, noListener),
		asm.StoreMem(asm.R8, valResult, asm.R1, asm.Word),
		asm.Ja.Label("pass"),
		asm.Mov.Reg(asm.R7, asm.R0).WithSymbol("found"),

		// bpf_sk_assign_tcp_reqsk(skb, sk, &attrs, sizeof(attrs))
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.Mov.Reg(asm.R2, asm.R7),
		asm.Mov.Reg(asm.R3, asm.R8),
		asm.Add.Imm(asm.R3, valAttrs),
		asm.Mov.Imm(asm.R4, attrsSize),
		asm.Instruction{OpCode: asm.OpCode(asm.JumpClass).SetJumpOp(asm.Call), Src: asm.PseudoKfuncCall, Constant: int64(kfuncID)},
		asm.StoreMem(asm.R8, valResult, asm.R0, asm.Word),
		asm.Mov.Reg(asm.R1, asm.R7),
		asm.FnSkRelease.Call(),

		asm.Mov.Imm(asm.R0, 0).WithSymbol("pass"), // TC_ACT_OK
		asm.Return(),
	}
}
