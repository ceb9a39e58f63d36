package dedup

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// ProtocolVersion is the version of the store socket protocol. Version 1
// (ckptfs before the handshake) spoke net/rpc at once; from version 2 the
// client opens with a hello line and the server answers it:
//
//	client: "ckptfs-store <version>\n"
//	server: "ckptfs-store <version> ok\n"
//	   or:  "ckptfs-store <version> refused: <reason>\n" and hangs up
//
// then both speak net/rpc (gob) with the messages of rpc.go, checkpoints as
// WireCheckpoint. Both ends refuse a peer of another version.
const ProtocolVersion = 2

const (
	helloPrefix    = "ckptfs-store "
	helloMax       = 256
	handshakeLimit = 10 * time.Second
)

// ErrProtocol says the peer speaks another protocol version, or none.
var ErrProtocol = errors.New("store protocol mismatch")

// ErrPeer says the peer of a store socket runs as a user we do not trust.
var ErrPeer = errors.New("store socket peer refused")

// peerUID returns the uid of the process at the other end of conn, as the
// kernel recorded it at connect (or listen) time: SO_PEERCRED.
func peerUID(conn *net.UnixConn) (int, error) {
	rc, err := conn.SyscallConn()
	if err != nil {
		return 0, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := rc.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return 0, err
	}
	if cerr != nil {
		return 0, fmt.Errorf("SO_PEERCRED: %w", cerr)
	}
	return int(cred.Uid), nil
}

// trustedPeer says whether a peer of uid may use (or serve) our stores:
// ourselves and root.
func trustedPeer(uid int) bool { return uid == os.Geteuid() || uid == 0 }

// readLine reads one '\n'-terminated line of at most helloMax bytes, byte
// by byte so that nothing of the stream after it is consumed.
func readLine(conn net.Conn) (string, error) {
	var b []byte
	one := make([]byte, 1)
	for len(b) < helloMax {
		n, err := conn.Read(one)
		if n == 1 {
			if one[0] == '\n' {
				return string(b), nil
			}
			b = append(b, one[0])
			continue
		}
		if err != nil {
			return string(b), err
		}
	}
	return string(b), fmt.Errorf("line longer than %d bytes", helloMax)
}

// serverHandshake checks the client's credentials and hello on a new
// connection and answers it. An error means the connection is refused (the
// client was told why, if it speaks the protocol).
func serverHandshake(conn *net.UnixConn) error {
	conn.SetDeadline(time.Now().Add(handshakeLimit))
	defer conn.SetDeadline(time.Time{})
	refuse := func(why string) {
		fmt.Fprintf(conn, "%s%d refused: %s\n", helloPrefix, ProtocolVersion, why)
	}
	uid, err := peerUID(conn)
	if err != nil {
		return fmt.Errorf("client credentials: %w", err)
	}
	if !trustedPeer(uid) {
		refuse(fmt.Sprintf("uid %d may not use the store of uid %d", uid, os.Geteuid()))
		return fmt.Errorf("%w: client of uid %d (only uid %d and root may use this store)", ErrPeer, uid, os.Geteuid())
	}
	line, err := readLine(conn)
	if err != nil {
		return fmt.Errorf("%w: client of uid %d sent no hello (an older ckptfs without the handshake?): %v", ErrProtocol, uid, err)
	}
	v, ok := strings.CutPrefix(line, helloPrefix)
	if !ok {
		return fmt.Errorf("%w: client of uid %d sent no hello (an older ckptfs without the handshake?)", ErrProtocol, uid)
	}
	if n, err := strconv.Atoi(v); err != nil || n != ProtocolVersion {
		refuse(fmt.Sprintf("this server speaks protocol %d, the client %q", ProtocolVersion, v))
		return fmt.Errorf("%w: client speaks protocol %q, this server %d (run the same ckptfs version for mount and the other commands)",
			ErrProtocol, v, ProtocolVersion)
	}
	_, err = fmt.Fprintf(conn, "%s%d ok\n", helloPrefix, ProtocolVersion)
	return err
}

// clientHandshake checks the server's credentials, sends our hello and
// reads the answer.
func clientHandshake(conn *net.UnixConn, dir string) error {
	conn.SetDeadline(time.Now().Add(handshakeLimit))
	defer conn.SetDeadline(time.Time{})
	uid, err := peerUID(conn)
	if err != nil {
		return fmt.Errorf("store %s: server credentials: %w", dir, err)
	}
	if !trustedPeer(uid) {
		return fmt.Errorf("store %s: %w: its server runs as uid %d, not as uid %d or root: refusing to send it anything",
			dir, ErrPeer, uid, os.Geteuid())
	}
	// A server that refuses us may answer and hang up before our hello
	// is written: its answer is still there to read.
	_, werr := fmt.Fprintf(conn, "%s%d\n", helloPrefix, ProtocolVersion)
	line, err := readLine(conn)
	if err != nil && werr != nil {
		return fmt.Errorf("store %s: handshake: %w", dir, werr)
	}
	if err != nil {
		return fmt.Errorf("store %s: %w: the server did not answer the handshake (an older ckptfs serves it? run the same version): %v",
			dir, ErrProtocol, err)
	}
	rest, ok := strings.CutPrefix(line, helloPrefix)
	if !ok {
		return fmt.Errorf("store %s: %w: the server answered %q", dir, ErrProtocol, line)
	}
	v, answer, _ := strings.Cut(rest, " ")
	if answer == "ok" && v == strconv.Itoa(ProtocolVersion) {
		return nil
	}
	if why, ok := strings.CutPrefix(answer, "refused: "); ok {
		kind := ErrProtocol
		if strings.HasPrefix(why, "uid ") {
			kind = ErrPeer
		}
		return fmt.Errorf("store %s: the server (protocol %s) refused us (protocol %d): %s: %w", dir, v, ProtocolVersion, why, kind)
	}
	return fmt.Errorf("store %s: %w: the server speaks protocol %s, this ckptfs %d (run the same version)", dir, ErrProtocol, v, ProtocolVersion)
}
