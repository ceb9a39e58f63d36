// Package retention decides which checkpoints a `ckptfs forget` keeps,
// with restic's policy semantics: --keep-last N keeps the N newest;
// --keep-hourly/daily/weekly/monthly/yearly N keep the newest checkpoint of
// each of the last N hours (days, ISO weeks, months, years) that have one;
// --keep-within D keeps every checkpoint made within D of the newest one.
// A checkpoint is kept if any rule keeps it; every rule counts over the
// same list, newest first. A count of -1 means no limit.
package retention

import (
	"fmt"
	"sort"
	"time"
)

// Policy is a set of keep rules; the zero Policy keeps nothing (and
// Empty reports it, for the caller to refuse).
type Policy struct {
	Last, Hourly, Daily, Weekly, Monthly, Yearly int
	Within                                       time.Duration
}

// Empty reports whether no rule is set.
func (p Policy) Empty() bool {
	return p.Last == 0 && p.Hourly == 0 && p.Daily == 0 && p.Weekly == 0 && p.Monthly == 0 && p.Yearly == 0 && p.Within == 0
}

// Item is one checkpoint to decide on.
type Item struct {
	ID   string
	Time time.Time
}

// Decision is what Apply made of one item: kept (with the rules that
// keep it) or not.
type Decision struct {
	Item
	Keep    bool
	Reasons []string // "last", "daily", "within 24h0m0s", ...
}

// bucket is a rule that keeps the newest item of each of its last n
// distinct values.
type bucket struct {
	name  string
	n     int
	value func(time.Time) int
}

// Apply decides for every item, in loc (calendar rules). The result is
// newest first.
func Apply(items []Item, p Policy, loc *time.Location) []Decision {
	ds := make([]Decision, len(items))
	for i, it := range items {
		ds[i] = Decision{Item: it}
	}
	sort.SliceStable(ds, func(i, j int) bool { return ds[i].Time.After(ds[j].Time) })
	if len(ds) == 0 {
		return ds
	}
	in := func(t time.Time) time.Time { return t.In(loc) }
	buckets := []bucket{
		{"last", p.Last, nil},
		{"hourly", p.Hourly, func(t time.Time) int {
			t = in(t)
			return ((t.Year()*1000+t.YearDay())*100 + t.Hour())
		}},
		{"daily", p.Daily, func(t time.Time) int { t = in(t); return t.Year()*1000 + t.YearDay() }},
		{"weekly", p.Weekly, func(t time.Time) int { y, w := in(t).ISOWeek(); return y*100 + w }},
		{"monthly", p.Monthly, func(t time.Time) int { t = in(t); return t.Year()*100 + int(t.Month()) }},
		{"yearly", p.Yearly, func(t time.Time) int { return in(t).Year() }},
	}
	newest := ds[0].Time
	for bi := range buckets {
		b := &buckets[bi]
		last, seen := 0, false
		for i := range ds {
			if b.n == 0 {
				break
			}
			if b.value == nil { // last: every item is its own bucket
				ds[i].keep(b.name)
				b.n--
				continue
			}
			if v := b.value(ds[i].Time); !seen || v != last {
				seen, last = true, v
				ds[i].keep(b.name)
				b.n--
			}
		}
	}
	if p.Within > 0 {
		for i := range ds {
			if !ds[i].Time.Before(newest.Add(-p.Within)) {
				ds[i].keep(fmt.Sprintf("within %v", p.Within))
			}
		}
	}
	return ds
}

func (d *Decision) keep(reason string) {
	d.Keep = true
	d.Reasons = append(d.Reasons, reason)
}
