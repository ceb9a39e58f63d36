package dedup

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/ckptfs/ckptfs/image"
	"github.com/zeebo/blake3"
)

// A value of format 2 (manifest or summary) is sealed:
//
//	"\x00ckpt"  4 bytes  (a gob stream, format 1, never starts with 0)
//	kind        1 byte   'M' manifest, 'S' summary
//	format      1 byte   2 or 3 (the manifest format)
//	hash        32 bytes BLAKE3-256 of key || the 6 bytes above || body
//	body        JSON
//
// The hash covers the key, so a value copied or moved under another key
// fails its check as surely as a changed byte does.

const (
	sealMagic    = "\x00ckpt"
	sealHeadLen  = len(sealMagic) + 2
	sealLen      = sealHeadLen + 32
	kindManifest = 'M'
	kindSummary  = 'S'
)

// ErrCorrupt says a manifest, summary or page table fails its check.
var ErrCorrupt = errors.New("corrupt")

func sealHash(key, head, body []byte) image.Hash {
	h := blake3.New()
	h.Write(key)
	h.Write(head)
	h.Write(body)
	var out image.Hash
	h.Sum(out[:0])
	return out
}

// seal frames body as a value of kind stored under key.
func seal(kind byte, key, body []byte) []byte {
	v := make([]byte, 0, sealLen+len(body))
	v = append(v, sealMagic...)
	v = append(v, kind, manifestFormat)
	h := sealHash(key, v[:sealHeadLen], body)
	v = append(v, h[:]...)
	return append(v, body...)
}

// isSealed reports whether v is a sealed value (format 2 or later) rather
// than a gob value of format 1.
func isSealed(v []byte) bool { return bytes.HasPrefix(v, []byte(sealMagic)) }

// unseal checks a sealed value of kind under key and returns its body
// (which aliases v).
func unseal(kind byte, key, v []byte) ([]byte, error) {
	if len(v) < sealLen || !isSealed(v) {
		return nil, fmt.Errorf("%w: %d bytes, no sealed header", ErrCorrupt, len(v))
	}
	if v[len(sealMagic)] != kind {
		return nil, fmt.Errorf("%w: value of kind %q, want %q", ErrCorrupt, v[len(sealMagic)], kind)
	}
	if f := v[len(sealMagic)+1]; f != 2 && f != manifestFormat {
		return nil, fmt.Errorf("value of format %d, this ckptfs reads formats 2 and %d", f, manifestFormat)
	}
	body := v[sealLen:]
	want := image.Hash(v[sealHeadLen:sealLen])
	if got := sealHash(key, v[:sealHeadLen], body); got != want {
		return nil, fmt.Errorf("%w: hash mismatch (recorded %s, content hashes to %s)", ErrCorrupt, want, got)
	}
	return body, nil
}
