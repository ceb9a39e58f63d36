package image

import (
	"fmt"
	"strconv"
	"strings"
)

// kindLines reads the "key: value" lines that hold one kind's typed state
// (an fd's kind lines in fdinfo/<n>, an object's info): each key once but
// those the kind lets repeat, free text quoted, numbers in the base the
// schema says. A strict read (tree format 3 and what the dumper makes)
// refuses a key the kind does not have; a lenient one (older trees, older
// manifests of a store) skips it, so the kernel's lines those kept
// verbatim are dropped when the schema renders the state again.
type kindLines struct {
	what   string // "timerfd", "object unix-42": for errors
	vals   map[string][]string
	used   map[string]bool
	strict bool
	err    error
}

// readKindLines parses lines; keys lists the keys of the kind, repeat
// those that may occur more than once.
func readKindLines(what string, lines []string, keys, repeat []string, strict bool) *kindLines {
	k := &kindLines{what: what, vals: map[string][]string{}, used: map[string]bool{}, strict: strict}
	known := map[string]bool{}
	for _, key := range keys {
		known[key] = true
	}
	many := map[string]bool{}
	for _, key := range repeat {
		many[key] = true
	}
	for _, line := range lines {
		if strings.TrimSpace(line) == "" {
			continue
		}
		key, v, ok := strings.Cut(line, ":")
		key, v = strings.TrimSpace(key), strings.TrimSpace(v)
		switch {
		case !ok:
			k.fail("line %.60q is not key: value", line)
		case !known[key]:
			if strict {
				k.fail("unknown key %.40q", key)
			}
		case len(k.vals[key]) > 0 && !many[key]:
			k.fail("key %q given twice", key)
		default:
			k.vals[key] = append(k.vals[key], v)
		}
	}
	return k
}

func (k *kindLines) fail(format string, args ...any) {
	if k.err == nil {
		k.err = fmt.Errorf("%s: "+format, append([]any{k.what}, args...)...)
	}
}

func (k *kindLines) has(key string) bool { return len(k.vals[key]) > 0 }

// opt returns the value of key, "" if absent.
func (k *kindLines) opt(key string) string {
	if v := k.vals[key]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// all returns every value of a repeating key, in order.
func (k *kindLines) all(key string) []string { return k.vals[key] }

// str returns the value of a required key.
func (k *kindLines) str(key string) string {
	if !k.has(key) {
		k.fail("missing key %q", key)
	}
	return k.opt(key)
}

// uint parses a required unsigned number of at most bits bits in base
// (16 takes an optional 0x, 0 Go's prefixes).
func (k *kindLines) uint(key string, base, bits int) uint64 {
	v := k.str(key)
	if k.err != nil {
		return 0
	}
	return k.parseUint(key, v, base, bits)
}

// uintOpt is uint for an optional key (0 if absent).
func (k *kindLines) uintOpt(key string, base, bits int) uint64 {
	if !k.has(key) {
		return 0
	}
	return k.parseUint(key, k.opt(key), base, bits)
}

func (k *kindLines) parseUint(key, v string, base, bits int) uint64 {
	s := v
	if base == 16 {
		s = strings.TrimPrefix(s, "0x")
	}
	n, err := strconv.ParseUint(s, base, bits)
	if err != nil {
		k.fail("%s: bad number %.30q", key, v)
	}
	return n
}

// int parses a required decimal number in [lo, hi].
func (k *kindLines) int(key string, lo, hi int64) int64 {
	v := k.str(key)
	if k.err != nil {
		return 0
	}
	return k.parseInt(key, v, lo, hi)
}

// intOpt is int for an optional key (0 if absent).
func (k *kindLines) intOpt(key string, lo, hi int64) int64 {
	if !k.has(key) {
		return 0
	}
	return k.parseInt(key, k.opt(key), lo, hi)
}

func (k *kindLines) parseInt(key, v string, lo, hi int64) int64 {
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < lo || n > hi {
		k.fail("%s: %.30q is not a number in %d..%d", key, v, lo, hi)
	}
	return n
}

// flag reads an optional 0/1 (or yes/no, the unix socket schema's
// spelling) key.
func (k *kindLines) flag(key string) bool {
	switch v := k.opt(key); v {
	case "", "0", "no":
		return false
	case "1", "yes":
		return true
	default:
		k.fail("%s: want 0 or 1, got %.20q", key, v)
		return false
	}
}

// text reads a free-text value (quoted), "" if absent.
func (k *kindLines) text(key string) string {
	if !k.has(key) {
		return ""
	}
	s, err := UnquoteText(k.opt(key))
	if err != nil {
		k.fail("%s: %v", key, err)
	}
	return s
}

// textReq is text for a required key.
func (k *kindLines) textReq(key string) string {
	k.str(key)
	return k.text(key)
}

// lineWriter builds a kind's lines.
type lineWriter []string

func (w *lineWriter) add(key, format string, args ...any) {
	*w = append(*w, key+": "+fmt.Sprintf(format, args...))
}

func (w *lineWriter) text(key, value string) { *w = append(*w, TextLine(key, value)) }

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func u64(n uint64) string { return strconv.FormatUint(n, 10) }
