package groups

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imagomq/imago/offsetdb"
)

// These tests hold the promise of a partition's handover (doc.go): a new owner reads the
// committed offset only after every commit accepted under the previous assignment has
// reached the store, so the messages an acknowledged commit covers are not delivered again.

// slowCommitStore holds every Commit until release is closed (a slow database, a ZooKeeper
// reconnect), sending on entered when one arrives. readDuringCommit is closed when a Get
// runs while a Commit is on its way: a reader that can miss that commit.
type slowCommitStore struct {
	offsetdb.Store
	entered          chan struct{}
	release          chan struct{}
	inFlight         atomic.Int32
	readDuringCommit chan struct{}
	once             sync.Once
}

func newSlowCommitStore(s offsetdb.Store) *slowCommitStore {
	return &slowCommitStore{Store: s, entered: make(chan struct{}, 1), release: make(chan struct{}),
		readDuringCommit: make(chan struct{})}
}

func (s *slowCommitStore) releaseAll() { closeOnce(s.release) }

// closeOnce closes ch unless it is closed already (only one goroutine closes it).
func closeOnce(ch chan struct{}) {
	select {
	case <-ch:
	default:
		close(ch)
	}
}

func (s *slowCommitStore) Commit(ctx context.Context, offs []offsetdb.Offset) error {
	s.inFlight.Add(1)
	defer s.inFlight.Add(-1)
	select {
	case s.entered <- struct{}{}:
	default:
	}
	<-s.release
	return s.Store.Commit(ctx, offs)
}

func (s *slowCommitStore) Get(ctx context.Context, g, tp string, p int) (offsetdb.Offset, bool, error) {
	if s.inFlight.Load() > 0 {
		s.once.Do(func() { close(s.readDuringCommit) })
	}
	return s.Store.Get(ctx, g, tp, p)
}

// newCoordinatorOver returns a started coordinator over a test broker, with 7 messages in
// topic b, and the store that wrap makes of a new file offset store; all stop with the test,
// which first lets go of the store calls it holds.
func newCoordinatorOver[S interface {
	offsetdb.Store
	releaseAll()
}](t *testing.T, wrap func(offsetdb.Store) S) (*Coordinator, S) {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	fs, err := offsetdb.OpenFile(t.TempDir(), log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fs.Close() })
	b := newTestBroker(t, log)
	st := wrap(fs)
	t.Cleanup(st.releaseAll) // a test that failed early leaves no store call held
	c := New(b, st, log)
	c.Start()
	t.Cleanup(c.Close)
	produceToB(t, b, 7)
	return c, st
}

// gateWriterWaiting reports whether someone waits in (or holds) g's commit gate for writing:
// a member about to read committed offsets. A waiting writer makes new readers, hence
// TryRLock, fail.
func gateWriterWaiting(g *group) bool {
	if g.commitGate.TryRLock() {
		g.commitGate.RUnlock()
		return false
	}
	return true
}

// waitFor polls cond until it holds, failing the test after 10s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// joinOrdered joins members of clustered group g on topic b until one's id compares to
// than's as before says (Assign deals b/0 to the lowest id), making the others leave.
func joinOrdered(t *testing.T, c *Coordinator, than string, before bool) (Joined, *Member) {
	t.Helper()
	for {
		j, m := joinLive(t, c, clustered("g", "b"))
		if (j.MemberID < than) == before {
			return j, m
		}
		if err := c.Leave("g", j.MemberID); err != nil {
			t.Fatal(err)
		}
	}
}

// TestCommitGateOutlivesGroup: a commit accepted under the previous assignment is still on
// its way to the store when its member goes. Whether the group lives on (another member
// takes the partition) or is forgotten and created again by the next join (the last member
// left or timed out, or the coordinator was reset), the partition's new owner reads the
// committed offset only once that commit is in the store, and is not given the messages
// it covers.
func TestCommitGateOutlivesGroup(t *testing.T) {
	for _, tc := range []struct {
		name    string
		keep    bool                                         // a second member stays: the group lives on
		timeout bool                                         // A's session is short: it times out
		gone    func(t *testing.T, c *Coordinator, a Joined) // how A goes
	}{
		{"another member stays", true, false, leaveGroup},
		{"last member leaves", false, false, leaveGroup},
		{"last member times out", false, true, func(t *testing.T, c *Coordinator, a Joined) {
			// (describe, as Touch would count as A's heartbeat)
			waitFor(t, "A timed out", func() bool { _, _, _, live := c.describe("g"); return !live })
		}},
		{"coordinator reset", false, false, func(t *testing.T, c *Coordinator, a Joined) { c.Reset(1 << 32) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, st := newCoordinatorOver(t, newSlowCommitStore)
			ctx := context.Background()

			reqA := clustered("g", "b")
			if tc.timeout {
				reqA.SessionTimeout = MinSessionTimeout
			}
			ja, ma := joinLive(t, c, reqA)
			ans, err := c.Poll(ctx, ma, Limits{MaxMessages: 5, MaxBytes: 1 << 20})
			if got := polledOffsets(ans); err != nil || !slices.Equal(got, []int64{0, 1, 2, 3, 4}) {
				t.Fatalf("A's poll: %v %v", got, err)
			}
			var owner *Member
			if tc.keep {
				_, owner = joinOrdered(t, c, ja.MemberID, false) // A keeps b/0 until it leaves
			}
			commitErr := make(chan error, 1)
			go func() { commitErr <- c.Commit(ctx, "g", ja.MemberID, []Offset{{Topic: "b", Partition: 0, Next: 5}}) }()
			select {
			case <-st.entered: // accepted: past the ownership check, on its way to the store
			case err := <-commitErr:
				t.Fatalf("A's commit returned before reaching the store: %v", err)
			}
			tc.gone(t, c, ja)
			if owner == nil {
				_, owner = joinLive(t, c, clustered("g", "b"))
			}

			polled := pollAsync(ctx, c, owner)
			// The new owner must wait for A's commit: either it waits on the commit gate, or it
			// read the store (and perhaps answered) with the commit still on its way.
			deadline := time.After(10 * time.Second)
			for waiting := false; !waiting; {
				select {
				case <-st.readDuringCommit:
					t.Fatal("the new owner read the committed offset while a commit accepted under the previous assignment was on its way to the store")
				case r := <-polled:
					t.Fatalf("the new owner's poll answered %v (%v) while a commit accepted under the previous assignment was on its way to the store", r.offs, r.err)
				case <-deadline:
					t.Fatal("the new owner's poll never waited on the commit gate")
				case <-time.After(5 * time.Millisecond):
					waiting = gateWriterWaiting(owner.g)
				}
			}
			close(st.release)
			if err := <-commitErr; err != nil {
				t.Fatalf("A's commit: %v", err)
			}
			if r := <-polled; r.err != nil || !slices.Equal(r.offs, []int64{5, 6}) {
				t.Fatalf("the new owner's first poll: %v %v, want [5 6] (A's acknowledged commit covers 0-4)", r.offs, r.err)
			}
		})
	}
}

// polled is the answer of a poll run by pollAsync.
type polled struct {
	offs []int64
	err  error
}

// pollAsync polls for m in a goroutine, and sends the answer on the channel it returns.
func pollAsync(ctx context.Context, c *Coordinator, m *Member) <-chan polled {
	ch := make(chan polled, 1)
	go func() {
		a, err := c.Poll(ctx, m, Limits{MaxMessages: 10, MaxBytes: 1 << 20})
		ch <- polled{polledOffsets(a), err}
	}()
	return ch
}

func leaveGroup(t *testing.T, c *Coordinator, a Joined) {
	t.Helper()
	if err := c.Leave("g", a.MemberID); err != nil {
		t.Fatal(err)
	}
}

// TestCommitGateForgottenAfterLastUse: the coordinator keeps a group name's commit gate while
// the live group or a commit uses it, and no longer, so the names of groups that are gone
// and idle do not pile up.
func TestCommitGateForgottenAfterLastUse(t *testing.T) {
	c, st := newCoordinatorOver(t, newSlowCommitStore)
	ctx := context.Background()
	gates := func() int {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.gates)
	}

	// Forgotten with the group when no commit holds it.
	j, _ := joinLive(t, c, clustered("g", "b"))
	if n := gates(); n != 1 {
		t.Fatalf("gates with a live group: %d, want 1", n)
	}
	leaveGroup(t, c, j)
	if n := gates(); n != 0 {
		t.Fatalf("gates after the group went: %d, want 0", n)
	}

	// Kept past the group while a commit holds it, forgotten when the commit is done.
	j, _ = joinLive(t, c, clustered("g", "b"))
	commitErr := make(chan error, 1)
	go func() { commitErr <- c.Commit(ctx, "g", j.MemberID, []Offset{{Topic: "b", Partition: 0, Next: 5}}) }()
	<-st.entered
	c.Reset(1 << 32)
	if n := gates(); n != 1 {
		t.Fatalf("gates after a reset, with a commit on its way: %d, want 1", n)
	}
	close(st.release)
	if err := <-commitErr; err != nil {
		t.Fatal(err)
	}
	if n := gates(); n != 0 {
		t.Fatalf("gates after the commit: %d, want 0", n)
	}
}

// staleGetStore holds the answer of the first Get (already read from the store) until
// release is closed: a read whose answer is slow to come back.
type staleGetStore struct {
	offsetdb.Store
	first   chan struct{} // closed when the first Get has read
	release chan struct{}
	calls   atomic.Int32
}

func newStaleGetStore(s offsetdb.Store) *staleGetStore {
	return &staleGetStore{Store: s, first: make(chan struct{}), release: make(chan struct{})}
}

func (s *staleGetStore) releaseAll() { closeOnce(s.release) }

func (s *staleGetStore) Get(ctx context.Context, g, tp string, p int) (offsetdb.Offset, bool, error) {
	o, ok, err := s.Store.Get(ctx, g, tp, p)
	if s.calls.Add(1) == 1 {
		close(s.first)
		<-s.release
	}
	return o, ok, err
}

// TestStaleOffsetReadRetried: a member reading the committed offset of a partition it gained
// uses the answer only if the partition stayed its own meanwhile. Here the partition moves
// to B while A's read is on its way; B commits past what A read (acknowledged) and leaves,
// so the partition comes back to A. A reads again, and is not given the messages B's commit
// covers.
func TestStaleOffsetReadRetried(t *testing.T) {
	c, st := newCoordinatorOver(t, newStaleGetStore)
	ctx := context.Background()
	ja, ma := joinLive(t, c, clustered("g", "b"))
	polledA := pollAsync(ctx, c, ma)
	<-st.first // A has read "no committed offset"; the answer is on its way

	jb, mb := joinOrdered(t, c, ja.MemberID, true) // B takes b/0
	ans, err := c.Poll(ctx, mb, Limits{MaxMessages: 5, MaxBytes: 1 << 20})
	if got := polledOffsets(ans); err != nil || !slices.Equal(got, []int64{0, 1, 2, 3, 4}) {
		t.Fatalf("B's poll: %v %v", got, err)
	}
	if err := c.Commit(ctx, "g", jb.MemberID, []Offset{{Topic: "b", Partition: 0, Next: 5}}); err != nil {
		t.Fatalf("B's commit: %v", err)
	}
	if err := c.Leave("g", jb.MemberID); err != nil { // b/0 goes back to A
		t.Fatal(err)
	}
	close(st.release)
	if r := <-polledA; r.err != nil || !slices.Equal(r.offs, []int64{5, 6}) {
		t.Fatalf("A's poll after b/0 came back: %v %v, want [5 6] (B's acknowledged commit covers 0-4)", r.offs, r.err)
	}
}
