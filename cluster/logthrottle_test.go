package cluster

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/imagomq/imago/internal/testenv"
)

// fakeClock is a clock a test moves by hand.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }

// warnLines are the lines of a text log that are WARNs with msg (one with a space, which the
// text handler quotes).
func warnLines(log, msg string) []string {
	var out []string
	for l := range strings.Lines(log) {
		if strings.Contains(l, "level=WARN") && strings.Contains(l, fmt.Sprintf("msg=%q", msg)) {
			out = append(out, l)
		}
	}
	return out
}

// TestLogThrottleOneLinePerHostPerInterval: a host's first event is logged at once, the next
// ones within the interval are not, and the first after it says how many were suppressed and
// carries its own (the last) error. Another host is logged at once meanwhile.
func TestLogThrottleOneLinePerHostPerInterval(t *testing.T) {
	var buf testenv.SyncBuffer
	clock := &fakeClock{t: time.Unix(1_000_000, 0)}
	l := newLogThrottle(slog.New(slog.NewTextHandler(&buf, nil)), time.Minute, 16, clock.now)
	const msg, suppressed = "refused connection", 37

	l.warn("10.0.0.1", msg, "err", "first")
	for i := range suppressed {
		clock.advance(time.Second)
		l.warn("10.0.0.1", msg, "err", fmt.Sprintf("again %d", i))
	}
	l.warn("10.0.0.2", msg, "err", "other host")
	if got := warnLines(buf.String(), msg); len(got) != 2 ||
		!strings.Contains(got[0], "err=first") || strings.Contains(got[0], "suppressed") ||
		!strings.Contains(got[1], "err=\"other host\"") {
		t.Fatalf("within the interval the log holds %d lines, want the first of each host:\n%s", len(got), buf.String())
	}

	clock.advance(time.Minute)
	l.warn("10.0.0.1", msg, "err", "last")
	got := warnLines(buf.String(), msg)
	if len(got) != 3 {
		t.Fatalf("after the interval the log holds %d lines, want 3:\n%s", len(got), buf.String())
	}
	if want := fmt.Sprintf("suppressed=%d", suppressed); !strings.Contains(got[2], want) || !strings.Contains(got[2], "err=last") {
		t.Fatalf("the line after the interval is %q, want %s and the last error", got[2], want)
	}

	// The count restarts with each line: nothing suppressed since, nothing said.
	clock.advance(time.Minute)
	l.warn("10.0.0.1", msg, "err", "quiet")
	if got := warnLines(buf.String(), msg); len(got) != 4 || strings.Contains(got[3], "suppressed") {
		t.Fatalf("a line after a quiet interval: %q", got[len(got)-1])
	}
}

// TestLogThrottleBoundsHosts: a flood from more hosts than the table holds keeps the table at
// its cap, and while every host in it is within its interval the others share one line per
// interval; once their interval has passed, new hosts take the oldest places.
func TestLogThrottleBoundsHosts(t *testing.T) {
	var buf testenv.SyncBuffer
	clock := &fakeClock{t: time.Unix(1_000_000, 0)}
	const hosts, flood = 8, 1000
	l := newLogThrottle(slog.New(slog.NewTextHandler(&buf, nil)), time.Minute, hosts, clock.now)
	for i := range flood {
		l.warn(fmt.Sprintf("10.0.%d.%d", i/256, i%256), "refused connection")
	}
	if n := l.len(); n != hosts {
		t.Fatalf("the table holds %d hosts after %d, want its cap %d", n, flood, hosts)
	}
	got := warnLines(buf.String(), "refused connection")
	if len(got) != hosts+1 || !strings.Contains(got[hosts], "hosts=many") {
		t.Fatalf("%d hosts in one interval logged %d lines, want %d (one per remembered host and one for the rest):\n%s",
			flood, len(got), hosts+1, buf.String())
	}

	// After the interval the hosts of the flood give way to new ones, and the rest share the
	// overflow line, which says how many it held back.
	clock.advance(time.Minute)
	for i := range hosts + 1 {
		l.warn(fmt.Sprintf("10.9.0.%d", i), "refused connection")
	}
	got = warnLines(buf.String(), "refused connection")[hosts+1:]
	if len(got) != hosts+1 {
		t.Fatalf("%d new hosts after the interval logged %d lines, want %d", hosts+1, len(got), hosts+1)
	}
	for _, line := range got[:hosts] {
		if strings.Contains(line, "suppressed") || strings.Contains(line, "hosts=many") {
			t.Fatalf("a new host's first line is %q", line)
		}
	}
	if want := fmt.Sprintf("suppressed=%d", flood-hosts-1); !strings.Contains(got[hosts], "hosts=many") || !strings.Contains(got[hosts], want) {
		t.Fatalf("the overflow line after the interval is %q, want hosts=many %s", got[hosts], want)
	}
	if n := l.len(); n != hosts {
		t.Fatalf("the table holds %d hosts, want %d", n, hosts)
	}
}
