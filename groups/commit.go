package groups

import (
	"context"
	"fmt"
	"time"

	"github.com/imagomq/imago/offsetdb"
)

// Offset is one committed position: the next offset the group reads in a partition.
type Offset struct {
	Topic     string
	Partition int
	Next      int64
}

// Commit stores offs for member id of group, which must own every partition committed
// (clustered: *OwnerError otherwise). The caller checks that each offset is within its
// partition. The call counts as the member's heartbeat, and moves the member's cursors up
// to what it committed. A store failure is a *StoreError.
//
// The commit holds the group's commit gate for reading from the ownership check until the
// store has the offsets, so a member that gains one of these partitions in a rebalance
// reads the committed offset only after this commit is in the store. It counts as a user
// of the gate meanwhile, so the gate outlives the group if its last member goes: a group
// of the same name created before the store has the offsets waits on the same gate.
func (c *Coordinator) Commit(ctx context.Context, group, id string, offs []Offset) error {
	c.mu.Lock()
	g, m, err := c.memberLocked(group, id)
	if err != nil {
		c.mu.Unlock()
		return err
	}
	m.lastSeen = time.Now()
	gate := c.holdGateLocked(g.name) // the live group's own gate
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.releaseGateLocked(g.name, gate)
		c.mu.Unlock()
	}()

	gate.RLock()
	rows, err := c.commitCheck(m, offs)
	if err == nil {
		if err = c.store.Commit(ctx, rows); err != nil {
			err = &StoreError{Op: "commit offsets", Err: err}
		}
	}
	gate.RUnlock()
	if err != nil {
		return err
	}
	c.committed(m, rows)
	return nil
}

// commitCheck verifies that m may commit offs and returns the store rows. The caller holds
// the group's commitGate for reading.
func (c *Coordinator) commitCheck(m *Member, offs []Offset) ([]offsetdb.Offset, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	g := m.g
	if m.gone {
		return nil, fmt.Errorf("%w: member %q of group %q was removed before its commit", ErrUnknownMember, m.id, g.name)
	}
	m.lastSeen = time.Now()
	rows := make([]offsetdb.Offset, len(offs))
	for i, o := range offs {
		if !m.owns[Partition{o.Topic, o.Partition}] {
			return nil, &OwnerError{Index: i, msg: fmt.Sprintf(
				"partition %d of topic %q is not assigned to member %q in generation %d of group %q; poll to learn the current assignment",
				o.Partition, o.Topic, m.id, g.generation, g.name)}
		}
		rows[i] = offsetdb.Offset{Group: m.storeGroup, Topic: o.Topic, Partition: o.Partition, Next: o.Next, CommittedBy: m.consumer}
	}
	return rows, nil
}

// committed moves m's cursors up to what it committed.
func (c *Coordinator) committed(m *Member, rows []offsetdb.Offset) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.known[m.storeGroup] = true
	c.lag.invalidate(m.storeGroup)
	for _, r := range rows {
		p := Partition{r.Topic, r.Partition}
		if cur, ok := m.cursors[p]; ok && m.owns[p] {
			if r.Next > cur {
				m.cursors[p] = r.Next
			}
			if r.Next > m.floors[p] {
				m.floors[p] = r.Next
			}
		}
	}
}
