package groups

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/imagomq/imago/broker"
	"github.com/imagomq/imago/offsetdb"
)

// Session timeouts of group members.
const (
	DefaultSessionTimeout = 30 * time.Second
	MinSessionTimeout     = time.Second
	MaxSessionTimeout     = 5 * time.Minute
	// sweepInterval is how often members past their session timeout are looked for.
	sweepInterval = 200 * time.Millisecond
	// BroadcastSep joins a broadcast group's name and its consumer in the offset store.
	BroadcastSep = "~"
	// maxStoreName is the offset store's limit on group names (offsetdb).
	maxStoreName = 255
)

// Mode is how a group shares its partitions.
type Mode string

// The group modes.
const (
	// Clustered deals every partition to exactly one member.
	Clustered Mode = "clustered"
	// Broadcast gives every member every partition, with offsets of its own.
	Broadcast Mode = "broadcast"
)

// Where a broadcast member without a committed offset starts.
const (
	FromEarliest = "earliest"
	FromLatest   = "latest"
)

// Errors of the coordinator, for callers to branch on.
var (
	ErrUnknownMember  = errors.New("unknown member")
	ErrUnknownGroup   = errors.New("unknown group")
	ErrModeConflict   = errors.New("group mode conflict")
	ErrTopicsConflict = errors.New("group topics conflict")
	ErrNotOwner       = errors.New("not the partition's owner")
)

// OwnerError is a commit for a partition the member does not own; it wraps ErrNotOwner.
type OwnerError struct {
	Index int // which of the committed offsets
	msg   string
}

func (e *OwnerError) Error() string { return e.msg }
func (e *OwnerError) Unwrap() error { return ErrNotOwner }

// StoreError is a failure of the offset store; Op says what was being done.
type StoreError struct {
	Op  string
	Err error
}

func (e *StoreError) Error() string { return e.Op + ": " + e.Err.Error() }
func (e *StoreError) Unwrap() error { return e.Err }

// FieldError is a join the coordinator refuses because of one of its fields.
type FieldError struct {
	Field   string
	Message string
}

func (e *FieldError) Error() string { return e.Field + " " + e.Message }

// Backend is the part of *broker.Broker the coordinator reads.
type Backend interface {
	Topic(name string) (broker.TopicInfo, error)
	Topics() []broker.TopicInfo
	Fetch(ctx context.Context, topic string, partition int, opts broker.FetchOptions) (*broker.FetchResult, error)
	WaitAny(ctx context.Context, wait time.Duration, at []broker.PartitionOffset) (bool, error)
}

// Partition is a topic partition.
type Partition struct {
	Topic     string
	Partition int
}

func comparePartition(a, b Partition) int {
	return cmp.Or(strings.Compare(a.Topic, b.Topic), cmp.Compare(a.Partition, b.Partition))
}

// group is one consumer group's live membership. Guarded by Coordinator.mu.
type group struct {
	name       string
	mode       Mode
	topics     []string    // clustered: the topics every member subscribes
	parts      []Partition // clustered: every partition of topics, sorted
	generation int64
	members    map[string]*Member
	// commitGate is the gate of the group's name (Coordinator.gates), set when the group is
	// created and never changed, so it may be read without Coordinator.mu.
	commitGate *commitGate
}

// commitGate orders a group's commits against its rebalances. A commit holds it for
// reading from its ownership check until the store has the offsets; a member that gains a
// partition takes it (Lock+Unlock) before reading the committed offset, so it sees every
// commit accepted under the previous assignment.
//
// A gate belongs to a group name, not to a group struct: a commit can still be on its way to
// the store when its group's last member goes and the group is forgotten, and the group
// created by the next join must wait for it too. Coordinator.gates keeps a gate while the
// live group of its name or a commit uses it.
type commitGate struct {
	sync.RWMutex
	users int // the live group of the name (0 or 1) plus the commits holding the gate; guarded by Coordinator.mu
}

// Member is one live member of a group, as Touch returns it. Its fields are guarded by
// Coordinator.mu.
type Member struct {
	g          *group
	id         string
	consumer   string // ConsumerID, or id
	storeGroup string // offset store group name
	topics     []string
	timeout    time.Duration
	from       string
	initial    map[Partition]int64 // broadcast FromLatest: partition ends at join
	keepStart  bool                // broadcast FromLatest with a ConsumerID: initial is stored (startOffsets)
	want       []Partition         // broadcast: every partition of topics
	lastSeen   time.Time
	polling    int // polls in progress: a polling member is alive
	assigned   []Partition
	owns       map[Partition]bool
	// gained holds, per owned partition, the generation in which the member gained it, so a
	// read of the committed offset can tell whether the partition changed hands meanwhile
	// (moved away and came back): generations only grow within a group.
	gained  map[Partition]int64
	cursors map[Partition]int64
	// floors hold, per cursor, the lowest offset a poll's Positions may move it back to: where
	// the cursor started when the member gained the partition, raised by the member's
	// commits. A client's position never re-reads what a commit has covered.
	floors map[Partition]int64
	rr     int // where the next poll starts among assigned, for fairness
	// changed is closed (and replaced) when the assignment changes or the member is removed,
	// to end its long poll early.
	changed chan struct{}
	gone    bool
	// pollSem serializes the member's polls, so two concurrent polls cannot both return the
	// messages at the same cursor.
	pollSem chan struct{}
}

// ID is the member's id.
func (m *Member) ID() string { return m.id }

// Topics are the topics the member subscribes, sorted (set at join, never changed).
func (m *Member) Topics() []string { return m.topics }

// Coordinator owns every group of one process (or of the cluster's leader).
type Coordinator struct {
	b     Backend
	store offsetdb.Store
	log   *slog.Logger

	mu     sync.Mutex
	groups map[string]*group
	// gates are the commit gates by group name: an entry lives while the live group of its
	// name or a commit uses it (commitGate.users > 0), so it outlives a forgotten group
	// whose commit is still on its way to the store, and no longer.
	gates map[string]*commitGate
	// known are offset-store group names this coordinator served (joined or committed), for
	// the lag metrics.
	known map[string]bool
	// rewinds counts, per group, the cursors a poll's Positions moved back (answers that did
	// not reach their member), for /metrics.
	rewinds map[string]uint64

	lag lagCache

	// genBase is where a new group's generations start (Reset): in a cluster, above every
	// generation an earlier leader gave. Guarded by mu.
	genBase int64

	// atStart names the topics the broker had when the coordinator was made; a committed
	// offset past the end of a topic created since is moved to its start (pastEnd).
	atStart map[string]bool

	stop      chan struct{}
	done      chan struct{}
	startOnce sync.Once
	closeOnce sync.Once
}

// New returns a coordinator over the broker b and the offset store. Start runs its session
// sweeper; Close stops it.
func New(b Backend, store offsetdb.Store, log *slog.Logger) *Coordinator {
	if log == nil {
		log = slog.Default()
	}
	atStart := map[string]bool{}
	if b != nil {
		for _, t := range b.Topics() {
			atStart[t.Name] = true
		}
	}
	return &Coordinator{b: b, store: store, log: log, groups: map[string]*group{}, gates: map[string]*commitGate{}, known: map[string]bool{}, rewinds: map[string]uint64{},
		lag: lagCache{entries: map[string]lagEntry{}}, atStart: atStart, stop: make(chan struct{}), done: make(chan struct{})}
}

// Start runs the sweeper that removes members past their session timeout. Calling it again,
// or after Close, does nothing.
func (c *Coordinator) Start() {
	c.startOnce.Do(func() { go c.sweep() })
}

// Close stops the sweeper and ends every long poll (they answer with what they have).
// Membership is not carried over: a coordinator that takes over starts empty and members
// rejoin. Safe to call more than once, and without Start.
func (c *Coordinator) Close() {
	c.closeOnce.Do(func() {
		close(c.stop)
		c.startOnce.Do(func() { close(c.done) }) // never started: nothing to wait for
		<-c.done
	})
}

// Reset drops every group's membership, as a restart would: each member's next call answers
// ErrUnknownMember and it joins again; long polls end at once. New groups then number their
// generations from genBase+1. A cluster member calls it whenever its leadership changes, with
// a base above every generation of earlier terms (replica term << 32), so that generations
// only grow across failovers and a coordinator that leads again does not serve members that
// another leader has dealt with since.
func (c *Coordinator) Reset(genBase int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, g := range c.groups {
		for _, m := range g.members {
			c.removeLocked(g, m)
		}
		c.forgetLocked(g)
	}
	c.genBase = genBase
	c.log.Info("consumer groups reset: members rejoin", "generation_base", genBase)
}

// Store is the offset store the coordinator commits to.
func (c *Coordinator) Store() offsetdb.Store { return c.store }

// sweep removes members silent past their session timeout.
func (c *Coordinator) sweep() {
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
func (c *Coordinator) expire(now time.Time) {
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

// JoinRequest is a validated join.
type JoinRequest struct {
	Group          string
	Topics         []string // sorted, unique
	Mode           Mode
	SessionTimeout time.Duration
	From           string // FromEarliest or FromLatest
	ConsumerID     string // optional
}

// Joined is the answer to a join.
type Joined struct {
	MemberID       string
	SessionTimeout time.Duration
	Mode           Mode
	Generation     int64
	Partitions     []Partition
}

// Join adds a member and rebalances the group. An unknown topic is broker.ErrUnknownTopic.
func (c *Coordinator) Join(req JoinRequest) (Joined, error) {
	// Partition counts, and ends for a broadcast member starting at the latest offset,
	// read before taking the lock.
	var parts []Partition
	initial := map[Partition]int64{}
	for _, t := range req.Topics {
		info, err := c.b.Topic(t)
		if err != nil {
			return Joined{}, err
		}
		for _, p := range info.Partitions {
			parts = append(parts, Partition{t, p.Partition})
			initial[Partition{t, p.Partition}] = p.EndOffset
		}
	}
	slices.SortFunc(parts, comparePartition)
	now := time.Now()
	m := &Member{id: newMemberID(), topics: req.Topics, timeout: req.SessionTimeout, from: req.From,
		lastSeen: now, owns: map[Partition]bool{}, gained: map[Partition]int64{}, cursors: map[Partition]int64{}, floors: map[Partition]int64{},
		changed: make(chan struct{}), pollSem: make(chan struct{}, 1)}
	m.consumer = cmp.Or(req.ConsumerID, m.id)
	m.storeGroup = req.Group
	if req.Mode == Broadcast {
		m.storeGroup = req.Group + BroadcastSep + m.consumer
		if len(m.storeGroup) > maxStoreName {
			return Joined{}, &FieldError{Field: "consumer_id", Message: fmt.Sprintf(
				"with the group name makes the broadcast offset name %d bytes long; the offset store allows %d: use a shorter group name or consumer_id",
				len(m.storeGroup), maxStoreName)}
		}
		if req.From == FromLatest {
			m.initial = initial
			m.keepStart = req.ConsumerID != ""
		}
		m.want = parts
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	g := c.groups[req.Group]
	if g == nil {
		g = &group{name: req.Group, mode: req.Mode, members: map[string]*Member{}, generation: c.genBase,
			commitGate: c.holdGateLocked(req.Group)}
		if req.Mode == Clustered {
			g.topics, g.parts = req.Topics, parts
		}
		c.groups[req.Group] = g
	} else {
		if g.mode != req.Mode {
			return Joined{}, fmt.Errorf("%w: group %q is %s (set by its first live member), this join asks for %s",
				ErrModeConflict, g.name, g.mode, req.Mode)
		}
		if g.mode == Clustered && !slices.Equal(g.topics, req.Topics) {
			return Joined{}, fmt.Errorf("%w: the members of group %q subscribe %s, this join asks for %s",
				ErrTopicsConflict, g.name, strings.Join(g.topics, ","), strings.Join(req.Topics, ","))
		}
	}
	if req.ConsumerID != "" {
		for _, old := range g.members {
			if old.consumer == req.ConsumerID {
				c.log.Info("group member replaced by a join with its consumer_id", "group", g.name, "member", old.id,
					"consumer_id", req.ConsumerID, "new_member", m.id)
				c.removeLocked(g, old)
			}
		}
	}
	m.g = g
	g.members[m.id] = m
	c.known[m.storeGroup] = true
	c.rebalanceLocked(g)
	c.log.Info("group member joined", "group", g.name, "member", m.id, "mode", g.mode, "topics", strings.Join(req.Topics, ","),
		"generation", g.generation, "partitions", len(m.assigned))
	return Joined{MemberID: m.id, SessionTimeout: m.timeout, Mode: g.mode,
		Generation: g.generation, Partitions: slices.Clone(m.assigned)}, nil
}

// removeLocked takes m out of g and wakes its polls; the caller rebalances.
func (c *Coordinator) removeLocked(g *group, m *Member) {
	delete(g.members, m.id)
	m.gone = true
	close(m.changed)
	m.changed = make(chan struct{})
}

// forgetLocked drops g, which has no member left; its offsets stay in the store, and its
// commit gate stays while a commit holds it.
func (c *Coordinator) forgetLocked(g *group) {
	delete(c.groups, g.name)
	c.releaseGateLocked(g.name, g.commitGate)
}

// holdGateLocked returns the commit gate of group name, created if it has none, and counts
// the caller as its user until releaseGateLocked.
func (c *Coordinator) holdGateLocked(name string) *commitGate {
	gt := c.gates[name]
	if gt == nil {
		gt = &commitGate{}
		c.gates[name] = gt
	}
	gt.users++
	return gt
}

// releaseGateLocked ends a use of the gate holdGateLocked returned for name, and forgets the
// gate after its last use.
func (c *Coordinator) releaseGateLocked(name string, gt *commitGate) {
	gt.users--
	if gt.users == 0 {
		delete(c.gates, name)
	}
}

// rebalanceLocked bumps the generation and deals the partitions again (Assign). A member
// keeps the cursors of the partitions it keeps; a partition it gains starts at the
// committed offset.
func (c *Coordinator) rebalanceLocked(g *group) {
	if len(g.members) == 0 {
		c.forgetLocked(g)
		return
	}
	g.generation++
	ids := make([]string, 0, len(g.members))
	for id := range g.members {
		ids = append(ids, id)
	}
	var deal map[string][]Partition
	if g.mode == Clustered {
		deal = Assign(ids, g.parts)
	}
	for _, m := range g.members {
		next := deal[m.id]
		if g.mode == Broadcast {
			next = m.want
		}
		if slices.Equal(next, m.assigned) && m.assigned != nil {
			continue
		}
		owns := make(map[Partition]bool, len(next))
		for _, p := range next {
			owns[p] = true
			if !m.owns[p] {
				m.gained[p] = g.generation
			}
		}
		for p := range m.gained {
			if !owns[p] {
				delete(m.gained, p)
				delete(m.cursors, p)
				delete(m.floors, p)
			}
		}
		m.assigned, m.owns = next, owns
		if m.assigned == nil {
			m.assigned = []Partition{}
		}
		close(m.changed)
		m.changed = make(chan struct{})
	}
}

// memberLocked finds a live member.
func (c *Coordinator) memberLocked(group, id string) (*group, *Member, error) {
	g := c.groups[group]
	if g == nil {
		return nil, nil, fmt.Errorf("%w: group %q has no live member %q (it left, timed out or never joined)", ErrUnknownMember, group, id)
	}
	m := g.members[id]
	if m == nil {
		return nil, nil, fmt.Errorf("%w: group %q has no live member %q (it left, timed out or was replaced)", ErrUnknownMember, group, id)
	}
	return g, m, nil
}

// Member returns a live member without counting the call as a heartbeat: for a caller that
// must check something about the member (a token's rights on its topics) before the request
// may count as the member's (Touch).
func (c *Coordinator) Member(group, id string) (*Member, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, m, err := c.memberLocked(group, id)
	return m, err
}

// Touch returns a live member and counts the call as the member's heartbeat.
func (c *Coordinator) Touch(group, id string) (*Member, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, m, err := c.memberLocked(group, id)
	if err != nil {
		return nil, err
	}
	m.lastSeen = time.Now()
	return m, nil
}

// Leave removes a member and rebalances.
func (c *Coordinator) Leave(group, id string) error {
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
