package image

import (
	"fmt"
	"strings"
)

// Object Info lines are "key: value" lines like the other tree files: a
// value that is free text (a path, a socket or memfd name) is quoted with
// QuoteText. Each kind's schema (kind_<name>.go) writes and reads them;
// this file holds what reads format 1 and older models.

// objectTextKeys lists, per object kind, the Info keys that hold free text.
var objectTextKeys = map[string]map[string]bool{
	ObjDeletedFile: {"path": true},
	ObjUnixSocket:  {"name": true, "dir": true},
	ObjMemfd:       {"name": true},
}

func objectTextKey(kind, key string) bool { return objectTextKeys[kind][key] }

// TextLine is the Info line "key: <quoted value>".
func TextLine(key, value string) string { return key + ": " + QuoteText(value) }

// MsgLine is the Info line of one queued datagram or seqpacket message:
// "msg: <length> -" (no sender) or "msg: <length> <quoted sender>".
func MsgLine(n int, sender string) string {
	if sender == "" {
		return fmt.Sprintf("msg: %d -", n)
	}
	return fmt.Sprintf("msg: %d %s", n, QuoteText(sender))
}

// legacyText reads a format-1 free-text value: raw, except socket names
// (and message senders), which the format-1 dumper Go-quoted when they held
// unprintable bytes or surrounding spaces.
func legacyText(v string) string {
	if strings.HasPrefix(v, `"`) {
		if u, err := UnquoteText(v); err == nil {
			return u
		}
	}
	return v
}

// legacyObjectLine turns a format-1 Info line into its format-2 form, so
// that the model holds one form only.
func legacyObjectLine(kind, key, v, line string) string {
	switch {
	case objectTextKey(kind, key):
		if kind != ObjUnixSocket {
			return TextLine(key, v)
		}
		return TextLine(key, legacyText(v))
	case kind == ObjUnixSocket && key == "msg":
		n, sender, _ := strings.Cut(v, " ")
		if sender == "-" {
			sender = ""
		}
		return "msg: " + strings.TrimSpace(n) + " " + strings.TrimPrefix(MsgLine(0, legacyText(sender)), "msg: 0 ")
	}
	return line
}

// legacyInotifyLines rewrites the format-1 inotify-watch lines of an fd
// (path raw, the rest of the line) in the format-2 form (path quoted).
func legacyInotifyLines(extra []string) []string {
	for i, line := range extra {
		rest, ok := strings.CutPrefix(line, inotifyWatchKey)
		if !ok {
			continue
		}
		head, path, ok := strings.Cut(rest, " path=")
		if ok {
			extra[i] = inotifyWatchKey + head + " path=" + QuoteText(path)
		}
	}
	return extra
}

// renderInfoLine is an Info line as Render writes it: a line of a model
// made before format 2 (a store's older manifests hold raw paths and
// names) gets its free text quoted, so every tree Render makes is format 2.
func renderInfoLine(kind, line string) string {
	key, v, ok := strings.Cut(line, ":")
	if !ok {
		return line
	}
	key, v = strings.TrimSpace(key), strings.TrimSpace(v)
	switch {
	case objectTextKey(kind, key):
		if _, err := UnquoteText(v); err != nil {
			return TextLine(key, v)
		}
	case kind == ObjUnixSocket && key == "msg":
		n, sender, _ := strings.Cut(v, " ")
		if _, err := UnquoteText(sender); err != nil && sender != "-" {
			return "msg: " + n + " " + QuoteText(sender)
		}
	}
	return line
}

// renderExtraLine is renderInfoLine for an fd's extra lines: a raw
// inotify-watch path (a model made before format 2) is quoted.
func renderExtraLine(line string) string {
	rest, ok := strings.CutPrefix(line, inotifyWatchKey)
	if !ok {
		return line
	}
	if _, path, ok := strings.Cut(rest, " path="); ok {
		if _, err := UnquoteText(path); err != nil {
			return legacyInotifyLines([]string{line})[0]
		}
	}
	return line
}

// renderObjectInfo is o's info as Render writes it: rendered again by its
// kind's schema (so a model of an older dumper gives a format-3 tree),
// or, if it does not parse, line by line as renderInfoLine makes them.
func renderObjectInfo(o *Object) []string {
	if s, ok := objectSchemas[o.Kind]; ok {
		if info, err := s.parse(o, false); err == nil {
			return info
		}
	}
	out := make([]string, len(o.Info))
	for i, l := range o.Info {
		out[i] = renderInfoLine(o.Kind, l)
	}
	return out
}

// renderFDExtra is f.Extra as Render writes it: the kind's lines rendered
// by its schema, or, if they do not parse, as renderExtraLine makes them.
func renderFDExtra(f *FD) []string {
	if extra, err := canonFD(f, false); err == nil {
		return extra
	}
	out := make([]string, len(f.Extra))
	for i, l := range f.Extra {
		out[i] = renderExtraLine(l)
	}
	return out
}
