package gateway

import (
	"cmp"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/imagomq/imago/api"
	"github.com/imagomq/imago/offsetdb"
)

// This file holds the consumer-group coordinator behind /v1/groups (groups_http.go):
// membership with session timeouts, partition assignment and rebalancing, and each member's
// fetch cursors.
//
// Membership lives in memory, in this process: one broker process is the coordinator of
// every group that joins it (membership shared through ZooKeeper belongs to the cluster
// work). Offsets live in the offset store (Options.Offsets), so they survive a restart;
// members do not, and rejoin when they get 404 unknown_member.
//
// Rules, as documented in api/openapi.yaml:
//   - A group's mode is set by its first member; a member joining with the other mode gets
//     409 group_mode_conflict. When the last member leaves, the group is forgotten (its
//     offsets stay in the store) and the next join may choose any mode.
//   - Clustered: every member subscribes the same topics (409 group_topics_conflict
//     otherwise). The group's partitions, sorted by (topic, partition), are dealt round-robin
//     to the live members sorted by member id, so each partition has exactly one owner. Every
//     join, leave and timeout bumps the generation and deals again. Offsets are stored under
//     the group's name. A partition with no committed offset starts at its start offset.
//   - Broadcast: every member owns every partition of its own topics and keeps its own
//     offsets, stored under the group name "<group>~<consumer>" (consumer = the join's
//     consumer_id, else the member id; '~' cannot appear in an API name, so this never
//     collides with a real group). Without a committed offset it starts at the partition's
//     end at join time ("from": "latest", the default) or at its start ("earliest").
//   - A member's cursor starts at the committed offset and moves past what a poll returned,
//     so polls without commits do not repeat messages. A partition that moves to another
//     member starts there again at the committed offset: uncommitted messages are delivered
//     again (at least once), committed ones never.
//   - Commits in clustered mode are accepted only from the partition's current owner (409
//     not_partition_owner), so a member that lost a partition in a rebalance cannot move its
//     offset. A new owner reads the committed offset only after every commit accepted
//     under the previous assignment has reached the store (group.commitGate).

// Session timeouts of group members.
const (
	DefaultSessionTimeout = 30 * time.Second
	MinSessionTimeout     = time.Second
	MaxSessionTimeout     = 5 * time.Minute
	// sweepInterval is how often members past their session timeout are looked for.
	sweepInterval = 200 * time.Millisecond
	// broadcastSep joins a broadcast group's name and its consumer in the offset store.
	broadcastSep = "~"
	// maxStoreName is the offset store's limit on group names (offsetdb).
	maxStoreName = 255
)

// Errors of the coordinator; errorFor maps them to statuses (errors.go).
var (
	errUnknownMember    = errors.New("unknown member")
	errUnknownGroup     = errors.New("unknown group")
	errGroupMode        = errors.New("group mode conflict")
	errGroupTopics      = errors.New("group topics conflict")
	errNotOwner         = errors.New("not the partition's owner")
	errGroupsNotEnabled = errors.New("consumer groups are not enabled")
)

// tp is a topic partition.
type tp struct {
	topic     string
	partition int
}

func compareTP(a, b tp) int {
	return cmp.Or(strings.Compare(a.topic, b.topic), cmp.Compare(a.partition, b.partition))
}

// group is one consumer group's live membership. Guarded by coordinator.mu, except
// commitGate.
type group struct {
	name       string
	mode       string
	topics     []string // clustered: the topics every member subscribes
	parts      []tp     // clustered: every partition of topics, sorted
	generation int64
	members    map[string]*member
	// commitGate is read-held by a commit from its ownership check until the store has it;
	// a member that gains a partition takes it (Lock+Unlock) before reading the committed
	// offset, so it sees every commit accepted under the previous assignment.
	commitGate sync.RWMutex
}

// member is one live member. Guarded by coordinator.mu.
type member struct {
	id         string
	consumer   string // consumer_id, or id
	storeGroup string // offset store group name
	topics     []string
	timeout    time.Duration
	from       string
	initial    map[tp]int64 // broadcast "latest": partition ends at join
	want       []tp         // broadcast: every partition of topics
	joinedAt   time.Time
	lastSeen   time.Time
	polling    int // polls in progress: a polling member is alive
	assigned   []tp
	owns       map[tp]bool
	cursors    map[tp]int64
	rr         int // where the next poll starts among assigned, for fairness
	// changed is closed (and replaced) when the assignment changes or the member is removed,
	// to end its long poll early.
	changed chan struct{}
	gone    bool
	// pollSem serializes the member's polls, so two concurrent polls cannot both return the
	// messages at the same cursor.
	pollSem chan struct{}
}

// groupCoordinator owns every group of this process.
type groupCoordinator struct {
	b     backend
	store offsetdb.Store
	log   *slog.Logger

	mu     sync.Mutex
	groups map[string]*group
	// known are offset-store group names this process served (joined or committed), for
	// the lag metrics.
	known map[string]bool

	lag lagCache

	stop chan struct{}
	done chan struct{}
	once sync.Once
}

func newGroupCoordinator(b backend, store offsetdb.Store, log *slog.Logger) *groupCoordinator {
	c := &groupCoordinator{b: b, store: store, log: log, groups: map[string]*group{}, known: map[string]bool{},
		stop: make(chan struct{}), done: make(chan struct{})}
	c.lag.entries = map[string]lagEntry{}
	go c.sweep()
	return c
}

// close stops the sweeper and wakes every long poll. Safe to call twice.
func (c *groupCoordinator) close() {
	c.once.Do(func() {
		close(c.stop)
		<-c.done
	})
}

// sweep removes members silent past their session timeout.
func (c *groupCoordinator) sweep() {
	defer close(c.done)
	t := time.NewTicker(sweepInterval)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case now := <-t.C:
			c.expire(now)
		}
	}
}

// expire removes the members of every group whose session ended before now.
func (c *groupCoordinator) expire(now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, g := range c.groups {
		removed := false
		for _, m := range g.members {
			if m.polling == 0 && now.Sub(m.lastSeen) > m.timeout {
				c.log.Info("group member timed out", "group", g.name, "member", m.id,
					"silent", now.Sub(m.lastSeen).Round(time.Millisecond), "session_timeout", m.timeout)
				c.removeLocked(g, m)
				removed = true
			}
		}
		if removed {
			c.rebalanceLocked(g)
		}
	}
}

func newMemberID() string {
	var b [16]byte
	rand.Read(b[:]) // never fails (crypto/rand)
	return "m-" + hex.EncodeToString(b[:])
}

// joinRequest is a validated join.
type joinRequest struct {
	group      string
	topics     []string // sorted, unique
	mode       string
	timeout    time.Duration
	from       string
	consumerID string
}

// join adds a member and rebalances the group.
func (c *groupCoordinator) join(req joinRequest) (api.JoinGroupResponse, error) {
	// Partition counts, and ends for a broadcast member starting at the latest offset,
	// read before taking the lock.
	var parts []tp
	initial := map[tp]int64{}
	for _, t := range req.topics {
		info, err := c.b.Topic(t)
		if err != nil {
			return api.JoinGroupResponse{}, err
		}
		for _, p := range info.Partitions {
			parts = append(parts, tp{t, p.Partition})
			initial[tp{t, p.Partition}] = p.EndOffset
		}
	}
	slices.SortFunc(parts, compareTP)
	now := time.Now()
	m := &member{id: newMemberID(), topics: req.topics, timeout: req.timeout, from: req.from,
		joinedAt: now, lastSeen: now, owns: map[tp]bool{}, cursors: map[tp]int64{},
		changed: make(chan struct{}), pollSem: make(chan struct{}, 1)}
	m.consumer = cmp.Or(req.consumerID, m.id)
	m.storeGroup = req.group
	if req.mode == api.GroupBroadcast {
		m.storeGroup = req.group + broadcastSep + m.consumer
		if len(m.storeGroup) > maxStoreName {
			return api.JoinGroupResponse{}, fieldError("consumer_id",
				"with the group name makes the broadcast offset name %d bytes long; the offset store allows %d: use a shorter group name or consumer_id",
				len(m.storeGroup), maxStoreName)
		}
		if req.from == api.FromLatest {
			m.initial = initial
		}
		m.want = parts
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	g := c.groups[req.group]
	if g == nil {
		g = &group{name: req.group, mode: req.mode, members: map[string]*member{}}
		if req.mode == api.GroupClustered {
			g.topics, g.parts = req.topics, parts
		}
		c.groups[req.group] = g
	} else {
		if g.mode != req.mode {
			return api.JoinGroupResponse{}, fmt.Errorf("%w: group %q is %s (set by its first live member), this join asks for %s",
				errGroupMode, g.name, g.mode, req.mode)
		}
		if g.mode == api.GroupClustered && !slices.Equal(g.topics, req.topics) {
			return api.JoinGroupResponse{}, fmt.Errorf("%w: the members of group %q subscribe %s, this join asks for %s",
				errGroupTopics, g.name, strings.Join(g.topics, ","), strings.Join(req.topics, ","))
		}
	}
	if req.consumerID != "" {
		for _, old := range g.members {
			if old.consumer == req.consumerID {
				c.log.Info("group member replaced by a join with its consumer_id", "group", g.name, "member", old.id,
					"consumer_id", req.consumerID, "new_member", m.id)
				c.removeLocked(g, old)
			}
		}
	}
	g.members[m.id] = m
	c.known[m.storeGroup] = true
	c.rebalanceLocked(g)
	c.log.Info("group member joined", "group", g.name, "member", m.id, "mode", g.mode, "topics", strings.Join(req.topics, ","),
		"generation", g.generation, "partitions", len(m.assigned))
	return api.JoinGroupResponse{MemberID: m.id, SessionTimeoutMS: m.timeout.Milliseconds(), Mode: g.mode,
		Generation: g.generation, Assignments: assignments(m.assigned)}, nil
}

// removeLocked takes m out of g and wakes its polls; the caller rebalances.
func (c *groupCoordinator) removeLocked(g *group, m *member) {
	delete(g.members, m.id)
	m.gone = true
	close(m.changed)
	m.changed = make(chan struct{})
}

// rebalanceLocked bumps the generation and deals the partitions again. A member keeps the
// cursors of the partitions it keeps; a partition it gains starts at the committed offset.
func (c *groupCoordinator) rebalanceLocked(g *group) {
	if len(g.members) == 0 {
		delete(c.groups, g.name)
		return
	}
	g.generation++
	ids := make([]string, 0, len(g.members))
	for id := range g.members {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	deal := map[string][]tp{}
	if g.mode == api.GroupClustered {
		for i, p := range g.parts {
			id := ids[i%len(ids)]
			deal[id] = append(deal[id], p)
		}
	}
	for _, id := range ids {
		m := g.members[id]
		next := deal[id]
		if g.mode == api.GroupBroadcast {
			next = m.want
		}
		if slices.Equal(next, m.assigned) && m.assigned != nil {
			continue
		}
		owns := make(map[tp]bool, len(next))
		for _, p := range next {
			owns[p] = true
		}
		for p := range m.cursors {
			if !owns[p] {
				delete(m.cursors, p)
			}
		}
		m.assigned, m.owns = next, owns
		if m.assigned == nil {
			m.assigned = []tp{}
		}
		close(m.changed)
		m.changed = make(chan struct{})
	}
}

func assignments(ps []tp) []api.Assignment {
	out := make([]api.Assignment, len(ps))
	for i, p := range ps {
		out[i] = api.Assignment{Topic: p.topic, Partition: p.partition}
	}
	return out
}

// memberLocked finds a live member.
func (c *groupCoordinator) memberLocked(group, id string) (*group, *member, error) {
	g := c.groups[group]
	if g == nil {
		return nil, nil, fmt.Errorf("%w: group %q has no live member %q (it left, timed out or never joined)", errUnknownMember, group, id)
	}
	m := g.members[id]
	if m == nil {
		return nil, nil, fmt.Errorf("%w: group %q has no live member %q (it left, timed out or was replaced)", errUnknownMember, group, id)
	}
	return g, m, nil
}

// touch returns a live member and its group, and counts the call as the member's heartbeat.
func (c *groupCoordinator) touch(group, id string) (*group, *member, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	g, m, err := c.memberLocked(group, id)
	if err != nil {
		return nil, nil, err
	}
	m.lastSeen = time.Now()
	return g, m, nil
}

// leave removes a member and rebalances.
func (c *groupCoordinator) leave(group, id string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	g, m, err := c.memberLocked(group, id)
	if err != nil {
		return err
	}
	c.removeLocked(g, m)
	c.rebalanceLocked(g)
	c.log.Info("group member left", "group", group, "member", id, "generation", g.generation)
	return nil
}

// commitCheck verifies that m may commit offs and returns the store rows. The caller holds
// g.commitGate for reading.
func (c *groupCoordinator) commitCheck(g *group, m *member, offs []api.GroupOffset) ([]offsetdb.Offset, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if m.gone {
		return nil, fmt.Errorf("%w: member %q of group %q was removed before its commit", errUnknownMember, m.id, g.name)
	}
	m.lastSeen = time.Now()
	rows := make([]offsetdb.Offset, len(offs))
	for i, o := range offs {
		if !m.owns[tp{o.Topic, o.Partition}] {
			return nil, &ownerError{field: fmt.Sprintf("offsets[%d]", i), msg: fmt.Sprintf(
				"partition %d of topic %q is not assigned to member %q in generation %d of group %q; poll to learn the current assignment",
				o.Partition, o.Topic, m.id, g.generation, g.name)}
		}
		rows[i] = offsetdb.Offset{Group: m.storeGroup, Topic: o.Topic, Partition: o.Partition, Next: o.Offset, CommittedBy: m.consumer}
	}
	return rows, nil
}

// committed moves m's cursors up to what it committed.
func (c *groupCoordinator) committed(m *member, rows []offsetdb.Offset) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.known[m.storeGroup] = true
	c.lag.invalidate(m.storeGroup)
	for _, r := range rows {
		p := tp{r.Topic, r.Partition}
		if cur, ok := m.cursors[p]; ok && m.owns[p] && r.Next > cur {
			m.cursors[p] = r.Next
		}
	}
}

// ownerError is a commit for a partition the member does not own (409 not_partition_owner).
type ownerError struct{ field, msg string }

func (e *ownerError) Error() string { return e.msg }
func (e *ownerError) Unwrap() error { return errNotOwner }

// describe returns the live membership of a group (ok false when none).
func (c *groupCoordinator) describe(name string) (mode string, generation int64, members []api.GroupMember, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	g := c.groups[name]
	if g == nil {
		return "", 0, []api.GroupMember{}, false
	}
	for _, m := range g.members {
		members = append(members, api.GroupMember{MemberID: m.id, ConsumerID: strings.TrimPrefix(m.consumer, m.id),
			Topics: m.topics, SessionTimeoutMS: m.timeout.Milliseconds(),
			LastSeen: formatTimestamp(m.lastSeen), Assignments: assignments(m.assigned)})
	}
	slices.SortFunc(members, func(a, b api.GroupMember) int { return strings.Compare(a.MemberID, b.MemberID) })
	return g.mode, g.generation, members, true
}

// live returns the names and modes of the groups with live members.
func (c *groupCoordinator) live() map[string]api.GroupSummary {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]api.GroupSummary, len(c.groups))
	for name, g := range c.groups {
		out[name] = api.GroupSummary{Name: name, Mode: g.mode, Members: len(g.members)}
	}
	return out
}

// knownStoreGroups returns the store group names this process served.
func (c *groupCoordinator) knownStoreGroups() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]string, 0, len(c.known))
	for k := range c.known {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
