package gateway

import (
	"context"
	"errors"
	"net/http"
	"sync"

	"github.com/imagomq/imago/api"
)

// In cluster mode consumer groups run on the leader only: every /v1/groups request is forwarded
// there (cluster.go). Their membership lives in the leader's memory, so a leadership change is
// a coordinator restart: groupsEpoch resets the groups whenever this node's leadership (its
// serving state or the term) differs from what the last group request saw, before that
// request is served. Members of the old leadership get 404 unknown_member and join again, and
// generations restart above every earlier term's (term << 32), so they only grow across
// failovers. Committed offsets are in the shared offset store and survive.
//
// A leader that was deposed without noticing yet (paused, or cut off from the other members
// until its quorum check steps it down) still serves its members, while the new leader hands
// their partitions to others, which read the committed offsets from the same store. A commit
// it acknowledged after such a read would be ignored by the new owner, which delivers the
// committed messages again. So a commit is acknowledged only once this node has confirmed,
// after the store has the offsets, that it still leads in the term of the groups it served
// from (confirmCommit): a quorum that answers it has elected nobody else, so any owner a later
// leader assigns reads the offsets after they were stored.
type groupsEpoch struct {
	mu      sync.Mutex
	serving bool
	term    uint64
}

// sync resets s.groups when this node's leadership changed since the last call, and returns
// the term the groups now belong to.
func (e *groupsEpoch) sync(s *Server) uint64 {
	if s.cluster == nil || s.groups == nil {
		return 0
	}
	st := s.cluster.Status()
	e.mu.Lock()
	defer e.mu.Unlock()
	if st.Serving == e.serving && st.Term == e.term {
		return e.term
	}
	e.serving, e.term = st.Serving, st.Term
	s.groups.Reset(int64(st.Term) << 32)
	return e.term
}

// confirmCommit returns once this node has confirmed with a quorum that it still leads in
// term (the term of the groups the commit was checked against), after the commit's offsets
// were stored. Otherwise the offsets are stored but the member may have lost its partitions to
// an owner a new leader assigned: 503 outcome_unknown (the member's next request to the new
// leader is answered unknown_member, and it joins again). Nothing to confirm on a single node.
func (e *groupsEpoch) confirmCommit(ctx context.Context, s *Server, term uint64) error {
	if s.cluster == nil {
		return nil
	}
	rb, ok := s.cluster.(ReadBarrier)
	if !ok {
		return nil
	}
	err := rb.ReadBarrier(ctx)
	if err == nil {
		if st := s.cluster.Status(); !st.Serving || st.Term != term {
			err = errors.New("leadership moved to another term")
		}
	}
	if err == nil {
		return nil
	}
	s.log.Warn("consumer group commit stored but not confirmed: this node could not confirm it still leads",
		"term", term, "err", err)
	return newError(http.StatusServiceUnavailable, api.CodeOutcomeUnknown,
		"the offsets were stored, but this node could not confirm that it still leads the cluster (%v): the partitions may have moved to another member meanwhile; join again through the leader and commit again after Retry-After", err)
}
