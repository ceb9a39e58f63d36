package human

import (
	"testing"
	"time"
)

func TestBytes(t *testing.T) {
	for _, c := range []struct {
		n    int64
		want string
	}{
		{0, "0 B"}, {512, "512 B"}, {1023, "1023 B"}, {1024, "1.0 KiB"}, {4096, "4.0 KiB"},
		{1536 << 20, "1.5 GiB"}, {2 << 30, "2.0 GiB"}, {-2048, "-2.0 KiB"}, {1 << 62, "4.0 EiB"},
	} {
		if got := Bytes(c.n); got != c.want {
			t.Errorf("Bytes(%d) = %q, want %q", c.n, got, c.want)
		}
	}
}

func TestRate(t *testing.T) {
	if got := Rate(2<<30, 2*time.Second); got != "1.0 GiB/s" {
		t.Errorf("Rate = %q", got)
	}
	if got := Rate(100, 0); got != "-" {
		t.Errorf("Rate over 0 = %q", got)
	}
}

func TestDuration(t *testing.T) {
	for _, c := range []struct {
		d    time.Duration
		want string
	}{
		{0, "0s"}, {500 * time.Microsecond, "500µs"}, {850 * time.Millisecond, "850ms"},
		{12600 * time.Millisecond, "12.6s"}, {185 * time.Second, "3m05s"},
		{2*time.Hour + 7*time.Minute, "2h07m"}, {-2 * time.Second, "-2.0s"},
	} {
		if got := Duration(c.d); got != c.want {
			t.Errorf("Duration(%v) = %q, want %q", c.d, got, c.want)
		}
	}
}
