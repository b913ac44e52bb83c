package gateway

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/imagomq/imago/api"
	"github.com/imagomq/imago/cluster"
	"github.com/imagomq/imago/replica"
)

// ClusterAdmin is what the membership endpoints need of the cluster member besides the view
// in Cluster; replica.Member implements both. These routes are forwarded to the leader like
// every write (cluster.go), which runs the change.
type ClusterAdmin interface {
	AddMember(ctx context.Context, p replica.Peer) error
	RemoveMember(ctx context.Context, id uint64) error
	TransferLeadership(ctx context.Context, id uint64) error
}

// memberRequest is the POST /v1/cluster/members body.
type memberRequest struct {
	ID       *uint64 `json:"id"`
	RaftAddr string  `json:"raft_addr"`
	HTTPAddr string  `json:"http_addr"`
	Role     string  `json:"role"`
}

const memberExample = `{"id": 4, "raft_addr": "10.0.0.4:7081", "http_addr": "10.0.0.4:8081"}`

func (s *Server) clusterAdmin() (ClusterAdmin, error) {
	a, ok := s.cluster.(ClusterAdmin)
	if s.cluster == nil || !ok {
		return nil, newError(http.StatusNotFound, api.CodeNotFound,
			"this server is not a cluster member: its configuration has no cluster block (docs/cluster.md)")
	}
	return a, nil
}

// handleAddMember adds a node as a learner; the leader promotes it once it has caught up.
func (s *Server) handleAddMember(w http.ResponseWriter, r *http.Request) error {
	a, err := s.clusterAdmin()
	if err != nil {
		return err
	}
	bp, err := s.readBody(w, r)
	if err != nil {
		return err
	}
	defer putBuf(bp)
	var req memberRequest
	if err := decodeStrict(*bp, &req, memberExample); err != nil {
		return err
	}
	switch {
	case req.ID == nil || *req.ID == 0:
		return fieldError("id", "must be a non-zero integer that no member has ever had")
	case req.RaftAddr == "":
		return fieldError("raft_addr", "is required: host:port of the new node's raft transport")
	case req.HTTPAddr == "":
		return fieldError("http_addr", "is required: host:port of the new node's HTTP door")
	case req.Role != "" && req.Role != "learner" && req.Role != "voter":
		return fieldError("role", "must be learner or voter (a node is always added as a learner and promoted once caught up)")
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	if err := a.AddMember(ctx, replica.Peer{ID: *req.ID, RaftAddr: req.RaftAddr, HTTPAddr: req.HTTPAddr}); err != nil {
		return membershipError(err)
	}
	return writeJSON(w, http.StatusCreated, s.cluster.Status())
}

// handleRemoveMember removes a node; its id is never accepted again.
func (s *Server) handleRemoveMember(w http.ResponseWriter, r *http.Request) error {
	a, err := s.clusterAdmin()
	if err != nil {
		return err
	}
	id, err := strconv.ParseUint(chi.URLParam(r, "id"), 10, 64)
	if err != nil || id == 0 {
		return newError(http.StatusBadRequest, api.CodeInvalidParameter, "member id %q: want a non-zero integer", chi.URLParam(r, "id"))
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	if err := a.RemoveMember(ctx, id); err != nil {
		return membershipError(err)
	}
	return writeJSON(w, http.StatusOK, s.cluster.Status())
}

// leaderRequest is the POST /v1/cluster/leader body.
type leaderRequest struct {
	ID *uint64 `json:"id"`
}

// handleTransferLeader hands leadership to another voter and answers once it leads.
func (s *Server) handleTransferLeader(w http.ResponseWriter, r *http.Request) error {
	a, err := s.clusterAdmin()
	if err != nil {
		return err
	}
	bp, err := s.readBody(w, r)
	if err != nil {
		return err
	}
	defer putBuf(bp)
	var req leaderRequest
	if err := decodeStrict(*bp, &req, `{"id": 2}`); err != nil {
		return err
	}
	if req.ID == nil || *req.ID == 0 {
		return fieldError("id", "must be the id of a voting member")
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	if err := a.TransferLeadership(ctx, *req.ID); err != nil {
		return membershipError(err)
	}
	return writeJSON(w, http.StatusOK, s.cluster.Status())
}

// membershipError maps the replica package's membership errors to answers.
func membershipError(err error) error {
	msg := err.Error()
	switch {
	case errors.Is(err, replica.ErrNotLeader):
		return newError(http.StatusServiceUnavailable, api.CodeNoLeader, "%s; retry after Retry-After", msg)
	case errors.Is(err, replica.ErrMemberExists):
		return newError(http.StatusConflict, api.CodeMemberExists, "%s", msg)
	case errors.Is(err, replica.ErrUnknownMember):
		return newError(http.StatusNotFound, api.CodeUnknownMember, "%s; GET /v1/cluster lists the members", msg)
	case errors.Is(err, replica.ErrChangePending):
		return newError(http.StatusConflict, api.CodeMembershipChangePending, "%s; retry when GET /v1/cluster shows it done", msg)
	case errors.Is(err, replica.ErrInvalidRequest):
		return newError(http.StatusBadRequest, api.CodeInvalidField, "%s", msg)
	case errors.Is(err, cluster.ErrOutcomeUnknown):
		return newError(http.StatusServiceUnavailable, api.CodeOutcomeUnknown, "%s: the change was proposed, and the leader lost its leadership before it was applied; it may still take effect: GET /v1/cluster shows whether it happened", msg)
	case errors.Is(err, context.DeadlineExceeded):
		return newError(http.StatusServiceUnavailable, api.CodeOutcomeUnknown, "the change was proposed but not applied within 10 s: %s; GET /v1/cluster shows whether it happened", msg)
	}
	return err
}
