package outbox_test

import (
	"syscall"
	"testing"
	"time"
)

// takeoverBound is the documented bound on a standby's takeover after the lock holder froze or
// its host died (package documentation, "One relay per source"): SessionTimeout (15 s) +
// LockRetry, plus a little for the server to end the session. The relays of the tests retry the
// lock every 50ms.
const takeoverBound = 15*time.Second + 3*time.Second

// TestTakeoverFrozenHolder: the relay holding the source's lock is frozen with SIGSTOP (as a
// host that hangs, or dies without closing its TCP connections: the server sees a session that
// is alive and idle). The standby must take over within takeoverBound, not after the hours of
// the kernel's TCP keepalive; when the frozen relay wakes up it must not publish anything twice.
func TestTakeoverFrozenHolder(t *testing.T) {
	for _, d := range dialects {
		t.Run(d, func(t *testing.T) {
			t.Parallel()
			p := startRelayPair(t, d)
			e, relays, isActive, write := p.e, p.relays, p.isActive, p.write
			write(100)
			waitFor(t, 30*time.Second, "the first rows relayed", func() bool { return e.rowsLeft(t) == 0 })
			active := p.active()
			standby := 1 - active
			if err := relays[active].cmd.Process.Signal(syscall.SIGSTOP); err != nil {
				t.Fatal(err)
			}
			frozen := time.Now()
			write(100)
			waitFor(t, 2*takeoverBound, "the standby to take over", func() bool { return isActive(standby) })
			took := time.Since(frozen)
			t.Logf("standby took over %s after the holder froze", took.Round(100*time.Millisecond))
			if took > takeoverBound {
				t.Errorf("takeover took %s, documented bound %s", took, takeoverBound)
			}
			waitFor(t, 60*time.Second, "the outbox to drain", func() bool { return e.rowsLeft(t) == 0 })
			// The frozen relay wakes up: its session is gone; it must not publish anything again.
			if err := relays[active].cmd.Process.Signal(syscall.SIGCONT); err != nil {
				t.Fatal(err)
			}
			write(50)
			waitFor(t, 60*time.Second, "the outbox to drain", func() bool { return e.rowsLeft(t) == 0 })
			p.l.check(t, fetchAllHTTP(t, p.c, p.topic, 2))
		})
	}
}
