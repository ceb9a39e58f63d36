// Package human formats sizes, rates and durations the same way for every
// ckptfs command: IEC units for bytes ("4.0 KiB", "1.5 GiB"), and
// durations rounded to what a person reads ("850ms", "12.6s", "3m05s").
package human

import (
	"fmt"
	"time"
)

// Bytes formats n in IEC units: "512 B", "4.0 KiB", "1.5 GiB".
func Bytes(n int64) string {
	const unit = 1024
	if n < unit && n > -unit {
		return fmt.Sprintf("%d B", n)
	}
	v, i := float64(n)/unit, 0
	for ; (v >= unit || v <= -unit) && i < 5; i++ {
		v /= unit
	}
	return fmt.Sprintf("%.1f %ciB", v, "KMGTPE"[i])
}

// Rate formats bytes per second over d: "1.2 GiB/s". A zero d gives "-".
func Rate(n int64, d time.Duration) string {
	if d <= 0 {
		return "-"
	}
	return Bytes(int64(float64(n)/d.Seconds())) + "/s"
}

// Duration formats d for a person: "0s", "850ms", "12.6s", "3m05s",
// "2h07m".
func Duration(d time.Duration) string {
	neg := ""
	if d < 0 {
		neg, d = "-", -d
	}
	switch {
	case d == 0:
		return "0s"
	case d < time.Millisecond:
		return neg + fmt.Sprintf("%dµs", d.Microseconds())
	case d < time.Second:
		return neg + fmt.Sprintf("%dms", d.Milliseconds())
	case d < time.Minute:
		return neg + fmt.Sprintf("%.1fs", d.Seconds())
	case d < time.Hour:
		d = d.Round(time.Second)
		return neg + fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	default:
		d = d.Round(time.Minute)
		return neg + fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
}
