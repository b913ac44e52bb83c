package textproto

import (
	"slices"
	"sync"
	"time"

	"github.com/imagomq/imago/broker"
)

// FsyncStats is a broker.Observer that keeps the durations of the last fsyncs, so that stats
// can show their p99 (Options.FsyncP99 = fs.P99). It forwards every event to Next, so that
// it can sit in front of the gateway's metrics: broker.Options.Observer takes one observer.
type FsyncStats struct {
	// Next, when set, receives every event after FsyncStats.
	Next broker.Observer

	mu   sync.Mutex
	ring [fsyncWindow]time.Duration
	n    int // events seen, capped at len(ring) for the count
	at   int // next slot
}

// fsyncWindow is the number of recent fsyncs the p99 is computed over.
const fsyncWindow = 1024

// Flushed implements broker.Observer. Flushes without an fsync (Sync 0) are not counted.
func (f *FsyncStats) Flushed(fs broker.FlushStats) {
	if fs.Sync > 0 {
		f.mu.Lock()
		f.ring[f.at] = fs.Sync
		f.at = (f.at + 1) % fsyncWindow
		if f.n < fsyncWindow {
			f.n++
		}
		f.mu.Unlock()
	}
	if f.Next != nil {
		f.Next.Flushed(fs)
	}
}

// P99 is the 99th percentile of the last (up to 1024) fsync durations; 0 before the first.
func (f *FsyncStats) P99() time.Duration {
	f.mu.Lock()
	d := slices.Clone(f.ring[:f.n])
	f.mu.Unlock()
	if len(d) == 0 {
		return 0
	}
	slices.Sort(d)
	return d[min(len(d)-1, len(d)*99/100)]
}

// Proposed implements broker.ProposalObserver by passing it on to Next.
func (f *FsyncStats) Proposed(d time.Duration) {
	if po, ok := f.Next.(broker.ProposalObserver); ok {
		po.Proposed(d)
	}
}
