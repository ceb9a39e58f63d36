package retention

import (
	"slices"
	"strings"
	"testing"
	"time"
)

// The checkpoints the table runs on, newest first, in UTC: two a day on
// some days, a gap, across a month and a year boundary.
var times = []string{
	"2026-12-01 10:00", "2026-12-01 08:00", // Tue, week 49
	"2026-11-30 23:00", "2026-11-30 22:30", // Mon, week 49, November
	"2026-11-29 12:00", // Sun, week 48
	"2026-11-25 12:00", // Wed, week 48
	"2026-11-20 12:00", // Fri, week 47
	"2026-10-31 12:00", // October
	"2026-01-01 00:30", // 2026
	"2025-12-31 23:30", // 2025
}

func items(t *testing.T) []Item {
	var out []Item
	for i, s := range times {
		tm, err := time.ParseInLocation("2006-01-02 15:04", s, time.UTC)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, Item{ID: string(rune('a' + i)), Time: tm})
	}
	return out
}

func TestApply(t *testing.T) {
	for _, c := range []struct {
		name string
		p    Policy
		keep string // ids kept, newest first
	}{
		{"nothing", Policy{}, ""},
		{"last 1", Policy{Last: 1}, "a"},
		{"last 3", Policy{Last: 3}, "abc"},
		{"last more than there are", Policy{Last: 50}, "abcdefghij"},
		{"last unlimited", Policy{Last: -1}, "abcdefghij"},
		{"hourly 3", Policy{Hourly: 3}, "abc"},
		{"hourly 4", Policy{Hourly: 4}, "abcd"},
		{"daily 1", Policy{Daily: 1}, "a"},
		{"daily 2", Policy{Daily: 2}, "ac"},
		{"daily 4", Policy{Daily: 4}, "acef"},
		{"daily unlimited", Policy{Daily: -1}, "acefghij"},
		{"weekly 2", Policy{Weekly: 2}, "ae"},
		{"weekly 3", Policy{Weekly: 3}, "aeg"},
		{"monthly 3", Policy{Monthly: 3}, "ach"},
		{"monthly 5", Policy{Monthly: 5}, "achij"},
		{"yearly 2", Policy{Yearly: 2}, "aj"},
		{"within 3h of the newest", Policy{Within: 3 * time.Hour}, "ab"},
		{"within 12h", Policy{Within: 12 * time.Hour}, "abcd"},
		{"within 7 days", Policy{Within: 7 * 24 * time.Hour}, "abcdef"},
		{"last 1 + daily 3", Policy{Last: 1, Daily: 3}, "ace"},
		{"last 2 + weekly 3", Policy{Last: 2, Weekly: 3}, "abeg"},
		{"within 12h + monthly 4", Policy{Within: 12 * time.Hour, Monthly: 4}, "abcdhi"},
		{"daily 1 + weekly 1 + monthly 1 + yearly 1", Policy{Daily: 1, Weekly: 1, Monthly: 1, Yearly: 1}, "a"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var kept strings.Builder
			for _, d := range Apply(items(t), c.p, time.UTC) {
				if d.Keep {
					kept.WriteString(d.ID)
					if len(d.Reasons) == 0 {
						t.Errorf("%s kept for no reason", d.ID)
					}
				} else if len(d.Reasons) != 0 {
					t.Errorf("%s removed with reasons %v", d.ID, d.Reasons)
				}
			}
			if kept.String() != c.keep {
				t.Errorf("kept %q, want %q", kept.String(), c.keep)
			}
		})
	}
}

// TestApplyOrderAndReasons: the input order does not matter, the result is
// newest first, and each kept item says every rule that keeps it.
func TestApplyOrderAndReasons(t *testing.T) {
	in := items(t)
	slices.Reverse(in)
	ds := Apply(in, Policy{Last: 1, Daily: 1, Within: time.Hour}, time.UTC)
	if ds[0].ID != "a" || ds[len(ds)-1].ID != "j" {
		t.Fatalf("not newest first: %v", ds)
	}
	if got := strings.Join(ds[0].Reasons, ","); got != "last,daily,within 1h0m0s" {
		t.Errorf("reasons of the newest: %q", got)
	}
}

// TestApplyZone: calendar buckets are taken in the zone given: 23:30 UTC
// on Dec 31 is Jan 1 in UTC+1.
func TestApplyZone(t *testing.T) {
	plus1 := time.FixedZone("UTC+1", 3600)
	ds := Apply(items(t)[8:], Policy{Yearly: 2}, plus1) // 2026-01-01 00:30, 2025-12-31 23:30 UTC
	if !ds[0].Keep || ds[1].Keep {
		t.Errorf("in UTC+1 both are 2026: %+v", ds)
	}
	if Apply(nil, Policy{Last: 1}, time.UTC) == nil {
		t.Error("nil for no items")
	}
}

func TestEmpty(t *testing.T) {
	if !(Policy{}).Empty() || (Policy{Within: time.Second}).Empty() || (Policy{Weekly: 1}).Empty() {
		t.Error("Empty")
	}
}
