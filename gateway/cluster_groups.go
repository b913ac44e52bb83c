package gateway

import "sync"

// In cluster mode consumer groups run on the leader only: every /v1/groups request is forwarded
// there (cluster.go). Their membership lives in the leader's memory, so a leadership change is
// a coordinator restart: groupsEpoch resets the groups whenever this node's leadership (its
// serving state or the term) differs from what the last group request saw, before that
// request is served. Members of the old leadership get 404 unknown_member and join again, and
// generations restart above every earlier term's (term << 32), so they only grow across
// failovers. Committed offsets are in the shared offset store and survive.
type groupsEpoch struct {
	mu      sync.Mutex
	serving bool
	term    uint64
}

// sync resets s.groups when this node's leadership changed since the last call.
func (e *groupsEpoch) sync(s *Server) {
	if s.cluster == nil || s.groups == nil {
		return
	}
	st := s.cluster.Status()
	e.mu.Lock()
	defer e.mu.Unlock()
	if st.Serving == e.serving && st.Term == e.term {
		return
	}
	e.serving, e.term = st.Serving, st.Term
	s.groups.Reset(int64(st.Term) << 32)
}
