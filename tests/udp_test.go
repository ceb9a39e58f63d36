package tests

import (
	"strings"
	"testing"
)

// TestUDPEcho dumps (--kill) a UDP echo server and its connected client,
// both with a datagram queued, restores them, and checks that every
// datagram arrives once, in order, with its length and bytes (the program
// checks each), the echoes reaching the client from the server's address.
func TestUDPEcho(t *testing.T) {
	for _, fam := range []string{"4", "6"} {
		t.Run("ipv"+fam, func(t *testing.T) {
			n := newNetns(t)
			p := startInNetns(t, n, "udpecho", buildProg(t, "udpecho"), fam)
			waitWhoTicks(t, p, "C", 5)
			pids := treePids(p.Pid)
			dir := dumpKillFlags(t, p.Pid)
			p.kill()
			msgs := 0
			for id, info := range objectInfos(t, dir) {
				if strings.HasPrefix(id, "udp-") {
					msgs += strings.Count(info, "msg: ")
				}
			}
			if msgs < 2 {
				t.Fatalf("%d datagrams queued in the checkpoint, want one each way", msgs)
			}
			restoreInNetns(t, n, dir, pids)
			p.Pid = pids[0]
			waitWhoTicks(t, p, "P", 10)
			waitWhoTicks(t, p, "C", 10)
			p.checkHealthy(t)
		})
	}
}
