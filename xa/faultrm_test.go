package xa

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/imagomq/imago/broker"
)

// faultRM wraps a real resource to inject the faults a real server cannot be made to produce
// at an exact moment: a recovery scan held up (as a scan of a slow or unreachable server takes
// up to the phase timeout), and phase-2 commits that fail as if the server had just died while
// the branch stays prepared on it. Everything else goes to the real database.
type faultRM struct {
	resourceManager

	// down: phase-2 commits (pinned and recovery) and scans fail with XAER_RMFAIL without
	// reaching the server, as while it restarts.
	down atomic.Bool

	mu        sync.Mutex
	holdScan  chan struct{} // non-nil: the next scan signals scanHeld, then waits for it to close
	scanHeld  chan struct{}
	scanCount int
}

func wrapFault(r Resource) *faultRM { return &faultRM{resourceManager: r.rm()} }

func (f *faultRM) rm() resourceManager { return f }

var errServerDown = errors.New("server terminated the connection (injected)")

func (f *faultRM) downErr(op string) error {
	return &Error{Code: XAERRMFail, Resource: f.Name(), Op: op, Err: errServerDown}
}

// holdNextScan makes the next scan block; held is closed once it has started, and the scan
// goes on when release is called.
func (f *faultRM) holdNextScan() (held <-chan struct{}, release func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.holdScan, f.scanHeld = make(chan struct{}), make(chan struct{})
	h, r := f.scanHeld, f.holdScan
	var once sync.Once
	return h, func() { once.Do(func() { close(r) }) }
}

func (f *faultRM) scans() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.scanCount
}

func (f *faultRM) recover(ctx context.Context) ([]Xid, error) {
	f.mu.Lock()
	hold, held := f.holdScan, f.scanHeld
	f.holdScan, f.scanHeld = nil, nil
	f.mu.Unlock()
	if f.down.Load() {
		return nil, f.downErr("recover")
	}
	xids, err := f.resourceManager.recover(ctx)
	if hold != nil {
		// The scan's answer is taken now; it reaches the coordinator late.
		close(held)
		select {
		case <-hold:
		case <-time.After(time.Minute):
		}
	}
	f.mu.Lock()
	f.scanCount++
	f.mu.Unlock()
	return xids, err
}

func (f *faultRM) commit(ctx context.Context, xid Xid) error {
	if f.down.Load() {
		return f.downErr("commit")
	}
	return f.resourceManager.commit(ctx, xid)
}

func (f *faultRM) start(ctx context.Context, xid Xid, timeout time.Duration) (branchConn, error) {
	bc, err := f.resourceManager.start(ctx, xid, timeout)
	if err != nil {
		return nil, err
	}
	return &faultBranch{branchConn: bc, f: f}, nil
}

type faultBranch struct {
	branchConn
	f *faultRM
}

func (b *faultBranch) commit(ctx context.Context, onePhase bool) ([]broker.TopicPosition, error) {
	if !onePhase && b.f.down.Load() {
		return nil, b.f.downErr("commit")
	}
	return b.branchConn.commit(ctx, onePhase)
}
