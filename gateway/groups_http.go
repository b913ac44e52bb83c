package gateway

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/imagomq/imago/api"
	"github.com/imagomq/imago/broker"
)

// This file holds the /v1/groups endpoints (shared/API.md, "Consumer groups") over the
// coordinator of groups.go.
//
// Rights, when auth is on: joining needs a consume pattern matching every topic joined;
// polling and leaving need consume on the member's topics; committing needs consume on
// every topic committed; reading a group's offsets, and listing groups, need a token with
// at least one consume pattern, or admin. Membership ids are random (128 bits) and are the
// handle of a member, not a secret that replaces the token.

// commitTimeout bounds the wait for the offset store in a commit.
const commitTimeout = 30 * time.Second

// storeError is a failure of the offset store (503 offset_store_unavailable).
type storeError struct {
	op  string
	err error
}

func (e *storeError) Error() string { return e.op + ": " + e.err.Error() }
func (e *storeError) Unwrap() error { return e.err }

func (s *Server) groupsReady() error {
	if s.groups == nil {
		return fmt.Errorf("%w: this server has no offset store (gateway.Options.Offsets is nil)", errGroupsNotEnabled)
	}
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
// caller's token is found to have the consume right on the member's topics.
func (s *Server) consumingMember(w http.ResponseWriter, group, id string) (*group, *member, error) {
	g, m, err := s.groups.touch(group, id)
	if err != nil {
		return nil, nil, err
	}
	if err := s.requireConsume(w, m.topics, func(int) string { return "member" }); err != nil {
		return nil, nil, err
	}
	return g, m, nil
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
			e := newError(http.StatusForbidden, "forbidden", "token %q lacks the consume right on topic %q; ask an operator to extend its patterns", t.Name, topic)
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
		return newError(http.StatusForbidden, "forbidden", "token %q has no consume right; reading consumer groups needs one (or admin)", name)
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
func decodeJoin(group string, body []byte) (joinRequest, error) {
	var b joinBody
	if err := decodeStrict(body, &b, joinExample); err != nil {
		return joinRequest{}, err
	}
	req := joinRequest{group: group, mode: api.GroupClustered, timeout: DefaultSessionTimeout}
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
	req.topics = slices.Clone(*b.Topics)
	slices.Sort(req.topics)
	req.topics = slices.Compact(req.topics)
	if b.Mode != nil {
		switch *b.Mode {
		case api.GroupClustered, api.GroupBroadcast:
			req.mode = *b.Mode
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
		req.timeout = time.Duration(ms) * time.Millisecond
	}
	req.from = api.FromEarliest
	if req.mode == api.GroupBroadcast {
		req.from = api.FromLatest
	}
	if b.From != nil && *b.From != "" {
		switch {
		case *b.From != api.FromEarliest && *b.From != api.FromLatest:
			return req, fieldError("from", "must be %q or %q, not %q", api.FromEarliest, api.FromLatest, *b.From)
		case req.mode == api.GroupClustered && *b.From != api.FromEarliest:
			return req, fieldError("from", "must be %q or absent in a clustered group: a partition without a committed offset starts at its start offset (move a group with imago groups reset --to-latest)", api.FromEarliest)
		}
		req.from = *b.From
	}
	if b.ConsumerID != nil && *b.ConsumerID != "" {
		if !broker.ValidName(*b.ConsumerID) {
			e := invalidNameError("consumer_id", *b.ConsumerID)
			e.field = "consumer_id"
			return req, e
		}
		req.consumerID = *b.ConsumerID
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
func decodeCommit(body []byte) (string, []api.GroupOffset, error) {
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
	out := make([]api.GroupOffset, len(*b.Offsets))
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
		out[i] = api.GroupOffset{Topic: *o.Topic, Partition: int(*o.Partition), Offset: *o.Offset}
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
	if err := s.requireConsume(w, req.topics, func(i int) string { return "topics" }); err != nil {
		return err
	}
	res, err := s.groups.join(req)
	if err != nil {
		if errors.Is(err, broker.ErrUnknownTopic) {
			return newError(http.StatusNotFound, "unknown_topic", "%s; create the topic with PUT /v1/topics/{topic} before joining", err)
		}
		return err
	}
	return writeJSON(w, http.StatusCreated, res)
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
	g, m, err := s.consumingMember(w, group, id)
	if err != nil {
		return err
	}
	ans, err := s.groups.poll(r.Context(), s.closing, g, m, q)
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
			e := newError(http.StatusNotFound, "unknown_partition", "topic %q has no partition %d; GET /v1/topics/%s lists its partitions", o.Topic, o.Partition, o.Topic)
			e.field = fmt.Sprintf("offsets[%d].partition", i)
			return e
		}
		if pi := info.Partitions[o.Partition]; o.Offset > pi.EndOffset {
			return &broker.OffsetRangeError{Offset: o.Offset, StartOffset: pi.StartOffset, EndOffset: pi.EndOffset}
		}
	}
	g, m, err := s.groups.touch(group, id)
	if err != nil {
		return err
	}
	g.commitGate.RLock()
	rows, err := s.groups.commitCheck(g, m, offs)
	if err == nil {
		ctx, cancel := context.WithTimeout(r.Context(), commitTimeout)
		err = s.groups.store.Commit(ctx, rows)
		cancel()
		if err != nil {
			err = &storeError{op: "commit offsets", err: err}
		}
	}
	g.commitGate.RUnlock()
	if err != nil {
		return err
	}
	s.groups.committed(m, rows)
	return writeJSON(w, http.StatusOK, api.CommitOffsetsResponse{Offsets: offs})
}

func (s *Server) handleLeaveGroup(w http.ResponseWriter, r *http.Request) error {
	group, id, err := s.memberParams(r)
	if err != nil {
		return err
	}
	if _, _, err := s.consumingMember(w, group, id); err != nil {
		return err
	}
	if err := s.groups.leave(group, id); err != nil {
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
	ctx := r.Context()
	c := s.groups
	storeGroups := []string{group}
	all, err := c.store.Groups(ctx)
	if err != nil {
		return &storeError{op: "list groups", err: err}
	}
	for _, name := range all {
		if strings.HasPrefix(name, group+broadcastSep) {
			storeGroups = append(storeGroups, name)
		}
	}
	out := api.GroupOffsets{Group: group, Offsets: []api.GroupOffsetStatus{}}
	topics := map[string]broker.TopicInfo{}
	for _, sg := range storeGroups {
		offs, err := c.store.List(ctx, sg)
		if err != nil {
			return &storeError{op: "read the group's offsets", err: err}
		}
		for _, o := range offs {
			st := api.GroupOffsetStatus{Topic: o.Topic, Partition: o.Partition, Offset: o.Next, EndOffset: -1,
				UpdatedAt: formatTimestamp(o.CommittedAt), Consumer: strings.TrimPrefix(sg, group+broadcastSep)}
			if sg == group {
				st.Consumer = ""
			}
			info, ok := topics[o.Topic]
			if !ok {
				info, _ = s.b.Topic(o.Topic) // a topic that is gone has no end: -1
				topics[o.Topic] = info
			}
			if o.Partition < len(info.Partitions) {
				st.EndOffset = info.Partitions[o.Partition].EndOffset
				st.Lag = max(0, st.EndOffset-o.Next)
			}
			out.Offsets = append(out.Offsets, st)
		}
	}
	var live bool
	out.Mode, out.Generation, out.Members, live = c.describe(group)
	if !live && len(out.Offsets) == 0 {
		return fmt.Errorf("%w: group %q has no committed offset and no live member", errUnknownGroup, group)
	}
	if !live && len(storeGroups) > 1 {
		out.Mode = api.GroupBroadcast
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
	all, err := s.groups.store.Groups(r.Context())
	if err != nil {
		return &storeError{op: "list groups", err: err}
	}
	byName := s.groups.live()
	for _, name := range all {
		base, _, broadcast := strings.Cut(name, broadcastSep)
		if _, ok := byName[base]; ok {
			continue
		}
		sum := api.GroupSummary{Name: base}
		if broadcast {
			sum.Mode = api.GroupBroadcast
		}
		byName[base] = sum
	}
	out := api.GroupList{Groups: make([]api.GroupSummary, 0, len(byName))}
	for _, g := range byName {
		out.Groups = append(out.Groups, g)
	}
	slices.SortFunc(out.Groups, func(a, b api.GroupSummary) int { return strings.Compare(a.Name, b.Name) })
	return writeJSON(w, http.StatusOK, out)
}
