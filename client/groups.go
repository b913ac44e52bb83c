package client

// This file holds the consumer-group calls of the HTTP API (join, poll, commit, leave, offsets,
// list) and the types of the consumer-group contract; Consumer (consumer.go) is built on them.

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/imagomq/imago/api"
)

// Types of the consumer-group contract, shared with the gateway.
type (
	// Assignment is one topic partition a group member consumes.
	Assignment = api.Assignment
	// JoinGroupRequest is the body of a join (POST /v1/groups/{group}/members).
	JoinGroupRequest = api.JoinGroupRequest
	// Membership answers a join: the member id, its session timeout and its partitions.
	Membership = api.JoinGroupResponse
	// GroupMessages answers a member's poll: messages and the member's current assignment.
	GroupMessages = api.GroupMessages
	// GroupOffset is a committed position; Offset is the next offset to read.
	GroupOffset = api.GroupOffset
	// GroupOffsets answers GET /v1/groups/{group}/offsets: offsets, ends, lag, live members.
	GroupOffsets = api.GroupOffsets
	// GroupSummary is an entry of ListGroups.
	GroupSummary = api.GroupSummary
)

// Consumer modes (JoinGroupRequest.Mode, ConsumerMode).
const (
	// Clustered shares a group's partitions among its live members, one member per partition.
	Clustered = api.GroupClustered
	// Broadcast gives every member every message, each with offsets of its own.
	Broadcast = api.GroupBroadcast
)

// PollOptions bound one PollGroup.
type PollOptions struct {
	// MaxMessages caps the messages returned; 0 means the server default.
	MaxMessages int
	// MaxBytes caps the bytes returned; 0 means the server default.
	MaxBytes int
	// Wait long-polls up to this long for a message on any of the member's partitions.
	Wait time.Duration
	// Positions say where the caller is: per partition, the next offset it expects (the
	// last message it got + 1). The server moves its cursor back to a position behind it,
	// so messages of a poll whose answer was lost (a cut connection, a timeout) come again
	// at the next poll instead of after the next rebalance. Positions below what the member
	// committed, at or past the cursor, or of partitions it does not own change nothing.
	// A Consumer sends them itself.
	Positions []GroupOffset
	// PositionsComplete says Positions name every partition the caller has received messages
	// of since the member gained it. The server then moves each other partition of the
	// member back to where the member started it (never below its commits): an answer to
	// the first poll of a partition that was lost, before the caller had a position to send
	// for it, is read again too. Set it only when that holds; a Consumer does.
	PositionsComplete bool
}

func groupPath(group string) string { return "/v1/groups/" + url.PathEscape(group) }

// JoinGroup adds a member to group. It is not retried: a join whose answer was lost leaves a
// member that the server removes after its session timeout (or that the next join with the same
// ConsumerID replaces).
func (c *Client) JoinGroup(ctx context.Context, group string, req JoinGroupRequest) (*Membership, error) {
	var out Membership
	if _, err := c.send(ctx, request{method: http.MethodPost, path: groupPath(group) + "/members", in: req, out: &out}); err != nil {
		return nil, err
	}
	return &out, nil
}

// PollGroup fetches messages of member's partitions, starting after the group's committed
// offsets. Every poll is a heartbeat: a member that does not poll within its session timeout
// is removed (then PollGroup answers 404 unknown_member).
func (c *Client) PollGroup(ctx context.Context, group, member string, opts PollOptions) (*GroupMessages, error) {
	q := url.Values{}
	setReadLimits(q, opts.MaxMessages, opts.MaxBytes, opts.Wait)
	for _, pos := range opts.Positions {
		q.Add("position", pos.Topic+":"+strconv.Itoa(pos.Partition)+":"+strconv.FormatInt(pos.Offset, 10))
	}
	if opts.PositionsComplete {
		q.Set("positions_complete", "true")
	}
	p := groupPath(group) + "/members/" + url.PathEscape(member) + "/messages"
	if len(q) > 0 {
		p += "?" + q.Encode()
	}
	var out GroupMessages
	// Not retried here: a Consumer retries its polls itself, within its session timeout.
	if _, err := c.send(ctx, request{method: http.MethodGet, path: p, out: &out}); err != nil {
		return nil, err
	}
	return &out, nil
}

// CommitGroup commits offsets (each the next offset to read) for member; it returns once they
// are durable in the server's offset store. A partition the member does not own is a 409
// not_partition_owner *Error; an offset lower than the stored one changes nothing.
func (c *Client) CommitGroup(ctx context.Context, group, member string, offsets []GroupOffset) error {
	req := api.CommitOffsetsRequest{MemberID: member, Offsets: offsets}
	_, err := c.send(ctx, request{method: http.MethodPost, path: groupPath(group) + "/offsets", in: req})
	return err
}

// LeaveGroup removes member from group at once (its partitions go to the others).
func (c *Client) LeaveGroup(ctx context.Context, group, member string) error {
	_, err := c.send(ctx, request{method: http.MethodDelete, path: groupPath(group) + "/members/" + url.PathEscape(member)})
	return err
}

// GroupOffsets describes group: committed offsets with partition ends and lag, and its live
// members.
func (c *Client) GroupOffsets(ctx context.Context, group string) (*GroupOffsets, error) {
	var out GroupOffsets
	if _, err := c.get(ctx, groupPath(group)+"/offsets", &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ListGroups lists the groups with committed offsets or live members, sorted by name.
func (c *Client) ListGroups(ctx context.Context) ([]GroupSummary, error) {
	var out api.GroupList
	if _, err := c.get(ctx, "/v1/groups", &out); err != nil {
		return nil, err
	}
	return out.Groups, nil
}
