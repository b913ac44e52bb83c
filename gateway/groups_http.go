package gateway

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/imagomq/imago/api"
	"github.com/imagomq/imago/broker"
	"github.com/imagomq/imago/groups"
)

// This file holds the /v1/groups endpoints (docs/http-api.md, "Consumer groups"): a thin
// adapter over the consumer-group coordinator of package groups. It decodes and validates
// requests, checks rights, and maps the coordinator's answers and errors to the wire
// (errors.go).
//
// Rights, when auth is on: joining needs a consume pattern matching every topic joined;
// polling and leaving need consume on the member's topics; committing needs consume on
// every topic committed; reading a group's offsets, and listing groups, need a token with
// at least one consume pattern, or admin. Membership ids are random (128 bits) and are the
// handle of a member, not a secret that replaces the token.

// commitTimeout bounds the wait for the offset store in a commit.
const commitTimeout = 30 * time.Second

// Session timeouts of group members (package groups holds the rules).
const (
	DefaultSessionTimeout = groups.DefaultSessionTimeout
	MinSessionTimeout     = groups.MinSessionTimeout
	MaxSessionTimeout     = groups.MaxSessionTimeout
)

// pollParams bound one read: a member's poll (groups.Limits), or a fetch (fetchParams).
type pollParams struct {
	maxMessages int
	maxBytes    int
	wait        time.Duration
	// positions are a member poll's position parameters (nil for a fetch), and
	// positionsComplete its positions_complete parameter (groups.Limits).
	positions         map[groups.Partition]int64
	positionsComplete bool
}

// errGroupsNotEnabled is a groups request to a server without an offset store.
var errGroupsNotEnabled = errors.New("consumer groups are not enabled")

func (s *Server) groupsReady() error {
	if s.groups == nil {
		return fmt.Errorf("%w: this server has no offset store (gateway.Options.Offsets is nil)", errGroupsNotEnabled)
	}
	s.groupsEpoch.sync(s)
	return nil
}

// groupParam checks that consumer groups are enabled and returns the {group} path parameter.
func (s *Server) groupParam(r *http.Request) (string, error) {
	if err := s.groupsReady(); err != nil {
		return "", err
	}
	return nameParam(r, "group")
}

// memberParams checks that consumer groups are enabled and returns the {group} and {member}
// path parameters.
func (s *Server) memberParams(r *http.Request) (group, id string, err error) {
	if group, err = s.groupParam(r); err != nil {
		return "", "", err
	}
	if id, err = nameParam(r, "member"); err != nil {
		return "", "", err
	}
	return group, id, nil
}

// consumingMember returns a live member, counting the request as its heartbeat, once the
// caller's token is found to have the consume right on the member's topics. The rights are
// checked first: a request refused 403 is not the member's heartbeat and does not keep it
// alive.
func (s *Server) consumingMember(w http.ResponseWriter, group, id string) (*groups.Member, error) {
	m, err := s.groups.Member(group, id)
	if err != nil {
		return nil, err
	}
	if err := s.requireConsume(w, m.Topics(), func(int) string { return "member" }); err != nil {
		return nil, err
	}
	return s.groups.Touch(group, id) // ErrUnknownMember if it timed out or left meanwhile
}

// requireConsume checks that the caller's token may consume every topic (403 forbidden,
// error.field naming the first that fails). field(i) names topic i in the request.
func (s *Server) requireConsume(w http.ResponseWriter, topics []string, field func(int) string) error {
	if s.auth == nil {
		return nil
	}
	t := callerToken(w)
	if t == nil { // authorize already let it through: cannot happen
		return errInvalidToken()
	}
	for i, topic := range topics {
		if !allows(t, rightConsume, topic) {
			e := newError(http.StatusForbidden, api.CodeForbidden, "token %q lacks the consume right on topic %q; ask an operator to extend its patterns", t.Name, topic)
			e.field = field(i)
			return e
		}
	}
	return nil
}

// requireConsumer checks that the caller's token has some consume pattern, or admin.
func (s *Server) requireConsumer(w http.ResponseWriter) error {
	if s.auth == nil {
		return nil
	}
	t := callerToken(w)
	if t == nil || (!t.Consumer() && !t.Admin) {
		name := ""
		if t != nil {
			name = t.Name
		}
		return newError(http.StatusForbidden, api.CodeForbidden, "token %q has no consume right; reading consumer groups needs one (or admin)", name)
	}
	return nil
}

// joinBody is the POST /v1/groups/{group}/members body; pointers tell absent from zero.
type joinBody struct {
	Topics           *[]string `json:"topics"`
	Mode             *string   `json:"mode"`
	SessionTimeoutMS *int64    `json:"session_timeout_ms"`
	From             *string   `json:"from"`
	ConsumerID       *string   `json:"consumer_id"`
}

const (
	joinExample   = `{"topics": ["settlement.transfers"], "mode": "clustered"}`
	commitExample = `{"member_id": "m-...", "offsets": [{"topic": "settlement.transfers", "partition": 0, "offset": 42}]}`
	// maxGroupTopics bounds the topics of one join.
	maxGroupTopics = 1000
	// maxCommitOffsets bounds the offsets of one commit.
	maxCommitOffsets = 100000
)

// decodeJoin parses and validates a join body.
func decodeJoin(group string, body []byte) (groups.JoinRequest, error) {
	var b joinBody
	if err := decodeStrict(body, &b, joinExample); err != nil {
		return groups.JoinRequest{}, err
	}
	req := groups.JoinRequest{Group: group, Mode: groups.Clustered, SessionTimeout: DefaultSessionTimeout}
	if b.Topics == nil || len(*b.Topics) == 0 {
		return req, fieldError("topics", "is required: name at least one topic, as in %s", joinExample)
	}
	if len(*b.Topics) > maxGroupTopics {
		return req, fieldError("topics", "holds %d topics; at most %d", len(*b.Topics), maxGroupTopics)
	}
	for i, t := range *b.Topics {
		if !broker.ValidName(t) {
			e := invalidNameError("topic", t)
			e.field = fmt.Sprintf("topics[%d]", i)
			return req, e
		}
	}
	req.Topics = slices.Clone(*b.Topics)
	slices.Sort(req.Topics)
	req.Topics = slices.Compact(req.Topics)
	if b.Mode != nil {
		switch *b.Mode {
		case api.GroupClustered, api.GroupBroadcast:
			req.Mode = groups.Mode(*b.Mode)
		default:
			return req, fieldError("mode", "must be %q or %q, not %q", api.GroupClustered, api.GroupBroadcast, *b.Mode)
		}
	}
	if b.SessionTimeoutMS != nil && *b.SessionTimeoutMS != 0 {
		ms := *b.SessionTimeoutMS
		if ms < MinSessionTimeout.Milliseconds() || ms > MaxSessionTimeout.Milliseconds() {
			return req, fieldError("session_timeout_ms", "must be between %d and %d (0 or absent: %d), not %d",
				MinSessionTimeout.Milliseconds(), MaxSessionTimeout.Milliseconds(), DefaultSessionTimeout.Milliseconds(), ms)
		}
		req.SessionTimeout = time.Duration(ms) * time.Millisecond
	}
	req.From = api.FromEarliest
	if req.Mode == groups.Broadcast {
		req.From = api.FromLatest
	}
	if b.From != nil && *b.From != "" {
		switch {
		case *b.From != api.FromEarliest && *b.From != api.FromLatest:
			return req, fieldError("from", "must be %q or %q, not %q", api.FromEarliest, api.FromLatest, *b.From)
		case req.Mode == groups.Clustered && *b.From != api.FromEarliest:
			return req, fieldError("from", "must be %q or absent in a clustered group: a partition without a committed offset starts at its start offset (move a group with imago groups reset --to-latest)", api.FromEarliest)
		}
		req.From = *b.From
	}
	if b.ConsumerID != nil && *b.ConsumerID != "" {
		if !broker.ValidName(*b.ConsumerID) {
			e := invalidNameError("consumer_id", *b.ConsumerID)
			e.field = "consumer_id"
			return req, e
		}
		req.ConsumerID = *b.ConsumerID
	}
	return req, nil
}

// commitBody is the POST /v1/groups/{group}/offsets body.
type commitBody struct {
	MemberID *string `json:"member_id"`
	Offsets  *[]struct {
		Topic     *string `json:"topic"`
		Partition *int64  `json:"partition"`
		Offset    *int64  `json:"offset"`
	} `json:"offsets"`
}

// decodeCommit parses and validates a commit body.
func decodeCommit(body []byte) (string, []groups.Offset, error) {
	var b commitBody
	if err := decodeStrict(body, &b, commitExample); err != nil {
		return "", nil, err
	}
	if b.MemberID == nil || *b.MemberID == "" {
		return "", nil, fieldError("member_id", "is required: the member_id the join answered, as in %s", commitExample)
	}
	if !broker.ValidName(*b.MemberID) {
		e := invalidNameError("member", *b.MemberID)
		e.field = "member_id"
		return "", nil, e
	}
	if b.Offsets == nil || len(*b.Offsets) == 0 {
		return "", nil, fieldError("offsets", "is required: list at least one offset, as in %s", commitExample)
	}
	if len(*b.Offsets) > maxCommitOffsets {
		return "", nil, fieldError("offsets", "holds %d offsets; at most %d", len(*b.Offsets), maxCommitOffsets)
	}
	out := make([]groups.Offset, len(*b.Offsets))
	for i, o := range *b.Offsets {
		f := fmt.Sprintf("offsets[%d]", i)
		switch {
		case o.Topic == nil:
			return "", nil, fieldError(f+".topic", "is required")
		case !broker.ValidName(*o.Topic):
			e := invalidNameError("topic", *o.Topic)
			e.field = f + ".topic"
			return "", nil, e
		case o.Partition == nil:
			return "", nil, fieldError(f+".partition", "is required")
		case *o.Partition < 0 || *o.Partition > 1<<31-1:
			return "", nil, fieldError(f+".partition", "must be between 0 and %d, not %d", 1<<31-1, *o.Partition)
		case o.Offset == nil:
			return "", nil, fieldError(f+".offset", "is required: the next offset to read (the last processed offset + 1)")
		case *o.Offset < 0:
			return "", nil, fieldError(f+".offset", "must not be negative, not %d", *o.Offset)
		}
		out[i] = groups.Offset{Topic: *o.Topic, Partition: int(*o.Partition), Next: *o.Offset}
	}
	return *b.MemberID, out, nil
}

func (s *Server) handleJoinGroup(w http.ResponseWriter, r *http.Request) error {
	group, err := s.groupParam(r)
	if err != nil {
		return err
	}
	bp, err := s.readBody(w, r)
	if err != nil {
		return err
	}
	defer putBuf(bp)
	req, err := decodeJoin(group, *bp)
	if err != nil {
		return err
	}
	if err := s.requireConsume(w, req.Topics, func(i int) string { return "topics" }); err != nil {
		return err
	}
	res, err := s.groups.Join(req)
	if err != nil {
		if errors.Is(err, broker.ErrUnknownTopic) {
			return newError(http.StatusNotFound, api.CodeUnknownTopic, "%s; create the topic with PUT /v1/topics/{topic} before joining", err)
		}
		return err
	}
	return writeJSON(w, http.StatusCreated, api.JoinGroupResponse{MemberID: res.MemberID,
		SessionTimeoutMS: res.SessionTimeout.Milliseconds(), Mode: string(res.Mode),
		Generation: res.Generation, Assignments: assignments(res.Partitions)})
}

func (s *Server) handlePollGroup(w http.ResponseWriter, r *http.Request) error {
	group, id, err := s.memberParams(r)
	if err != nil {
		return err
	}
	q, err := s.parsePollQuery(r.URL.RawQuery)
	if err != nil {
		return err
	}
	m, err := s.consumingMember(w, group, id)
	if err != nil {
		return err
	}
	ans, err := s.groups.Poll(r.Context(), m, groups.Limits{MaxMessages: q.maxMessages, MaxBytes: q.maxBytes, Wait: q.wait,
		Positions: q.positions, PositionsComplete: q.positionsComplete})
	if err != nil {
		return err
	}
	out := getBuf()
	defer putBuf(out)
	*out = appendPollResponse(*out, ans)
	writeBody(w, http.StatusOK, *out)
	return nil
}

func (s *Server) handleCommitOffsets(w http.ResponseWriter, r *http.Request) error {
	group, err := s.groupParam(r)
	if err != nil {
		return err
	}
	bp, err := s.readBody(w, r)
	if err != nil {
		return err
	}
	defer putBuf(bp)
	id, offs, err := decodeCommit(*bp)
	if err != nil {
		return err
	}
	topics := make([]string, len(offs))
	for i, o := range offs {
		topics[i] = o.Topic
	}
	if err := s.requireConsume(w, topics, func(i int) string { return fmt.Sprintf("offsets[%d].topic", i) }); err != nil {
		return err
	}
	// An offset is the next one to read: at most the partition's end.
	ends := map[string]broker.TopicInfo{}
	for i, o := range offs {
		info, ok := ends[o.Topic]
		if !ok {
			if info, err = s.b.Topic(o.Topic); err != nil {
				if errors.Is(err, broker.ErrUnknownTopic) {
					e := unknownTopicError(o.Topic)
					e.field = fmt.Sprintf("offsets[%d].topic", i)
					return e
				}
				return err
			}
			ends[o.Topic] = info
		}
		if o.Partition >= len(info.Partitions) {
			e := newError(http.StatusNotFound, api.CodeUnknownPartition, "topic %q has no partition %d; GET /v1/topics/%s lists its partitions", o.Topic, o.Partition, o.Topic)
			e.field = fmt.Sprintf("offsets[%d].partition", i)
			return e
		}
		if pi := info.Partitions[o.Partition]; o.Next > pi.EndOffset {
			return &broker.OffsetRangeError{Offset: o.Next, StartOffset: pi.StartOffset, EndOffset: pi.EndOffset}
		}
	}
	term := s.groupsEpoch.sync(s) // the term whose groups the commit is checked against
	ctx, cancel := context.WithTimeout(r.Context(), commitTimeout)
	defer cancel()
	if err := s.groups.Commit(ctx, group, id, offs); err != nil {
		return err
	}
	if err := s.groupsEpoch.confirmCommit(ctx, s, term); err != nil {
		return err
	}
	res := api.CommitOffsetsResponse{Offsets: make([]api.GroupOffset, len(offs))}
	for i, o := range offs {
		res.Offsets[i] = api.GroupOffset{Topic: o.Topic, Partition: o.Partition, Offset: o.Next}
	}
	return writeJSON(w, http.StatusOK, res)
}

func (s *Server) handleLeaveGroup(w http.ResponseWriter, r *http.Request) error {
	group, id, err := s.memberParams(r)
	if err != nil {
		return err
	}
	if _, err := s.consumingMember(w, group, id); err != nil {
		return err
	}
	if err := s.groups.Leave(group, id); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) handleGroupOffsets(w http.ResponseWriter, r *http.Request) error {
	group, err := s.groupParam(r)
	if err != nil {
		return err
	}
	if err := s.requireConsumer(w); err != nil {
		return err
	}
	st, err := s.groups.Status(r.Context(), group)
	if err != nil {
		return err
	}
	out := api.GroupOffsets{Group: group, Mode: string(st.Mode), Generation: st.Generation,
		Offsets: make([]api.GroupOffsetStatus, len(st.Offsets)), Members: make([]api.GroupMember, len(st.Members))}
	for i, o := range st.Offsets {
		out.Offsets[i] = api.GroupOffsetStatus{Topic: o.Topic, Partition: o.Partition, Offset: o.Offset, EndOffset: o.EndOffset,
			Lag: o.Lag, UpdatedAt: formatTimestamp(o.UpdatedAt), Consumer: o.Consumer}
	}
	for i, m := range st.Members {
		out.Members[i] = api.GroupMember{MemberID: m.ID, ConsumerID: m.ConsumerID, Topics: m.Topics,
			SessionTimeoutMS: m.SessionTimeout.Milliseconds(), LastSeen: formatTimestamp(m.LastSeen),
			Assignments: assignments(m.Partitions), Cursors: []api.GroupOffset{}}
		for _, p := range m.Partitions {
			if off, ok := m.Cursors[p]; ok {
				out.Members[i].Cursors = append(out.Members[i].Cursors, api.GroupOffset{Topic: p.Topic, Partition: p.Partition, Offset: off})
			}
		}
	}
	return writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleListGroups(w http.ResponseWriter, r *http.Request) error {
	if err := s.groupsReady(); err != nil {
		return err
	}
	if err := s.requireConsumer(w); err != nil {
		return err
	}
	list, err := s.groups.List(r.Context())
	if err != nil {
		return err
	}
	out := api.GroupList{Groups: make([]api.GroupSummary, len(list))}
	for i, g := range list {
		out.Groups[i] = api.GroupSummary{Name: g.Name, Mode: string(g.Mode), Members: g.Members}
	}
	return writeJSON(w, http.StatusOK, out)
}

func assignments(ps []groups.Partition) []api.Assignment {
	out := make([]api.Assignment, len(ps))
	for i, p := range ps {
		out[i] = api.Assignment{Topic: p.Topic, Partition: p.Partition}
	}
	return out
}

// appendPollResponse writes {"messages":[...],"generation":G,"assignments":[...]}.
func appendPollResponse(dst []byte, a groups.Polled) []byte {
	dst = append(dst, `{"messages":[`...)
	n := 0
	for _, b := range a.Batches {
		for i := range b.Result.Messages {
			if n > 0 {
				dst = append(dst, ',')
			}
			n++
			dst = appendMessage(dst, b.Partition.Topic, b.Partition.Partition, &b.Result.Messages[i])
		}
	}
	dst = append(dst, `],"generation":`...)
	dst = strconv.AppendInt(dst, a.Generation, 10)
	dst = append(dst, `,"assignments":`...)
	dst = appendAssignments(dst, a.Partitions)
	return append(dst, "}\n"...)
}

func appendAssignments(dst []byte, ps []groups.Partition) []byte {
	dst = append(dst, '[')
	for i, p := range ps {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, `{"topic":`...)
		dst = appendJSONString(dst, p.Topic)
		dst = append(dst, `,"partition":`...)
		dst = strconv.AppendInt(dst, int64(p.Partition), 10)
		dst = append(dst, '}')
	}
	return append(dst, ']')
}
