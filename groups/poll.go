package groups

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"
	"time"

	"github.com/imagomq/imago/broker"
	"github.com/imagomq/imago/offsetdb"
)

// This file holds a member's poll: it reads from the member's partitions, starting at each
// one's cursor, and long-polls across all of them.
//
// The long poll waits on every partition at once with one broker.WaitAny over the member's
// positions, ended when the first has a message, the wait ends, the member's assignment
// changes or the coordinator closes.

// Limits bound one poll.
type Limits struct {
	MaxMessages int
	MaxBytes    int
	// Wait is how long a poll that finds nothing waits for a message (0: answer at once).
	Wait time.Duration
	// Positions are where the client is: per partition, the next offset it expects (the
	// last message it got + 1). A position behind the member's cursor means an earlier
	// answer never reached the client (a cut connection, a timeout): the poll reads from the
	// position again instead of leaving those messages until the next rebalance. A position
	// at or past the cursor, below the cursor's floor (where the member started the
	// partition, raised by its own commits), or of a partition the member does not own
	// changes nothing.
	Positions map[Partition]int64
	// PositionsComplete says Positions name every partition the client has received
	// messages of since the member gained it. The cursor of an owned partition without a
	// position then goes back to its floor (where the member started the partition, raised
	// by its commits): the client got nothing of it, so an answer to the partition's first
	// poll that never reached the client is read again too, although the client had no
	// position to send for it.
	PositionsComplete bool
}

// Batch is one partition's messages in a poll answer.
type Batch struct {
	Partition Partition
	Result    *broker.FetchResult
}

// Polled is what a poll returns: the messages, and the member's generation and assignment.
type Polled struct {
	Batches    []Batch
	Generation int64
	Partitions []Partition
}

// Poll serves one poll of member m, which the caller found live with Touch.
func (c *Coordinator) Poll(ctx context.Context, m *Member, q Limits) (Polled, error) {
	select {
	case m.pollSem <- struct{}{}:
	case <-ctx.Done():
		return Polled{}, ctx.Err()
	}
	defer func() { <-m.pollSem }()
	c.mu.Lock()
	if m.gone {
		c.mu.Unlock()
		return Polled{}, fmt.Errorf("%w: member %q of group %q was removed", ErrUnknownMember, m.id, m.g.name)
	}
	m.polling++
	c.rewindLocked(m, q.Positions, q.PositionsComplete)
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		m.polling--
		m.lastSeen = time.Now()
		c.mu.Unlock()
	}()

	ans, err := c.collect(ctx, m, q)
	if err != nil || len(ans.Batches) > 0 || q.Wait <= 0 {
		return ans, err
	}
	if err := c.waitAny(ctx, m, q.Wait); err != nil {
		return Polled{}, err
	}
	return c.collect(ctx, m, q)
}

// rewindLocked moves the member's cursors back to the positions its client sent, and, when
// they are complete, the cursors of the partitions they leave out back to their floors
// (Limits).
func (c *Coordinator) rewindLocked(m *Member, positions map[Partition]int64, complete bool) {
	for p, cur := range m.cursors {
		if !m.owns[p] {
			continue
		}
		pos, ok := positions[p]
		if !ok {
			if !complete {
				continue
			}
			pos = m.floors[p]
		}
		if pos >= cur || pos < m.floors[p] {
			continue
		}
		m.cursors[p] = pos
		c.rewinds[m.g.name]++
		c.log.Info("a poll answer did not reach the group member: its messages are read again from the position it sent (without one, from where it started the partition)",
			"group", m.g.name, "member", m.id, "topic", p.Topic, "partition", p.Partition, "position", pos, "sent", ok, "cursor", cur)
	}
}

// PollRewinds returns, per group, how many times a poll's positions moved a cursor back since
// the coordinator started: each is a poll answer that did not reach its member.
func (c *Coordinator) PollRewinds() map[string]uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.rewinds)
}

// collect reads what is there now from the member's partitions, round-robin from where the
// previous poll started, and moves the cursors past it.
func (c *Coordinator) collect(ctx context.Context, m *Member, q Limits) (Polled, error) {
	g := m.g
	c.mu.Lock()
	if m.gone {
		c.mu.Unlock()
		return Polled{}, fmt.Errorf("%w: member %q of group %q was removed", ErrUnknownMember, m.id, g.name)
	}
	assigned := m.assigned
	first := 0
	if len(assigned) > 0 {
		first = m.rr % len(assigned)
		m.rr++
	}
	cursors := make(map[Partition]int64, len(assigned))
	var missing []Partition
	for _, p := range assigned {
		if off, ok := m.cursors[p]; ok {
			cursors[p] = off
		} else {
			missing = append(missing, p)
		}
	}
	c.mu.Unlock()

	if len(missing) > 0 {
		if err := c.initCursors(ctx, m, missing, cursors); err != nil {
			return Polled{}, err
		}
	}

	var batches []Batch
	resets := map[Partition]int64{}
	msgsLeft, bytesLeft := q.MaxMessages, q.MaxBytes
	for i := range assigned {
		p := assigned[(first+i)%len(assigned)]
		off, ok := cursors[p]
		if !ok {
			continue // lost while its cursor was read
		}
		res, err := c.b.Fetch(ctx, p.Topic, p.Partition, broker.FetchOptions{Offset: off, MaxMessages: msgsLeft, MaxBytes: bytesLeft})
		var re *broker.OffsetRangeError
		switch {
		case errors.As(err, &re):
			to := re.StartOffset
			if re.Offset > re.EndOffset {
				to = re.EndOffset
				c.log.Error("group cursor is past the partition's end; continuing at the end", "group", g.name, "member", m.id,
					"topic", p.Topic, "partition", p.Partition, "offset", off, "end_offset", re.EndOffset)
			} else {
				c.log.Warn("retention removed messages the group had not consumed; continuing at the start", "group", g.name,
					"member", m.id, "topic", p.Topic, "partition", p.Partition, "offset", off, "start_offset", re.StartOffset)
			}
			resets[p] = to
			continue
		case errors.Is(err, broker.ErrUnknownTopic), errors.Is(err, broker.ErrUnknownPartition):
			continue
		case err != nil:
			return Polled{}, err
		}
		if len(res.Messages) == 0 {
			continue
		}
		batches = append(batches, Batch{p, res})
		msgsLeft -= len(res.Messages)
		bytesLeft -= fetchedSize(res)
		if msgsLeft <= 0 || bytesLeft <= 0 {
			break
		}
	}
	return c.advance(m, batches, resets)
}

// advance keeps the messages of partitions the member still owns at an unchanged cursor and
// moves the cursors past them.
func (c *Coordinator) advance(m *Member, batches []Batch, resets map[Partition]int64) (Polled, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if m.gone {
		return Polled{}, fmt.Errorf("%w: member %q of group %q was removed during its poll", ErrUnknownMember, m.id, m.g.name)
	}
	for p, to := range resets {
		if cur, ok := m.cursors[p]; ok && m.owns[p] {
			m.cursors[p] = to
			if to > cur {
				// Retention removed what the cursor pointed at: below the partition's start
				// nothing can be read again, and a client's position there would only repeat
				// this reset. (A cursor past the end moves back; its floor stays.)
				m.floors[p] = max(m.floors[p], to)
			}
		}
	}
	kept := batches[:0]
	for _, b := range batches {
		cur, ok := m.cursors[b.Partition]
		if !ok || !m.owns[b.Partition] {
			continue // the partition moved (and maybe came back) during the poll
		}
		msgs := b.Result.Messages
		for len(msgs) > 0 && msgs[0].Offset < cur {
			msgs = msgs[1:] // committed meanwhile by this member
		}
		if len(msgs) == 0 {
			continue
		}
		b.Result.Messages = msgs
		if b.Result.NextOffset > cur {
			m.cursors[b.Partition] = b.Result.NextOffset
		}
		kept = append(kept, b)
	}
	return Polled{Batches: kept, Generation: m.g.generation, Partitions: m.assigned}, nil
}

// initCursors sets the cursors of partitions the member just gained: the committed offset,
// else the member's start position. It first waits for commits accepted under the previous
// assignment (commitGate). A partition that changed hands while its committed offset was
// read (it moved to another member, which may have committed it, and came back) is read
// again: the read can be older than that member's commits.
func (c *Coordinator) initCursors(ctx context.Context, m *Member, missing []Partition, cursors map[Partition]int64) error {
	for len(missing) > 0 {
		c.mu.Lock()
		gained := make(map[Partition]int64, len(missing))
		var owned []Partition
		for _, p := range missing {
			if gen, ok := m.gained[p]; ok {
				gained[p] = gen
				owned = append(owned, p)
			}
		}
		c.mu.Unlock()

		found, err := c.startOffsets(ctx, m, owned)
		if err != nil {
			return err
		}

		c.mu.Lock()
		missing = nil
		for _, p := range owned {
			off, ok := found[p]
			if !ok || !m.owns[p] {
				continue
			}
			if m.gained[p] != gained[p] {
				missing = append(missing, p) // changed hands during the read
				continue
			}
			if cur, ok := m.cursors[p]; ok {
				off = cur
			} else {
				m.cursors[p] = off
				m.floors[p] = off
			}
			cursors[p] = off
		}
		c.mu.Unlock()
	}
	return nil
}

// startOffsets reads where m starts in each of parts, after the commits accepted under the
// previous assignment reached the store: the committed offset, else the member's start
// position. A partition of a topic that is gone is left out.
//
// A broadcast member of a named consumer (ConsumerID) that starts a partition at the end it
// had at the join (FromLatest) stores that start as the consumer's offset before it reads
// from there: the consumer's next member (a restart) then resumes at it, not at the end at its
// own join, which would skip what came in between on a partition the consumer had not
// committed yet (one that had no message, or whose first messages it had not committed).
func (c *Coordinator) startOffsets(ctx context.Context, m *Member, parts []Partition) (map[Partition]int64, error) {
	m.g.commitGate.Lock()
	m.g.commitGate.Unlock() //nolint:staticcheck // an empty critical section: a barrier for earlier commits
	starts := map[string]map[int]int64{}
	found := make(map[Partition]int64, len(parts))
	var keep []offsetdb.Offset
	for _, p := range parts {
		o, ok, err := c.store.Get(ctx, m.storeGroup, p.Topic, p.Partition)
		if err != nil {
			return nil, &StoreError{Op: "read the committed offset", Err: err}
		}
		if ok {
			next, err := c.pastEnd(ctx, m.storeGroup, p, o.Next)
			if err != nil {
				return nil, err
			}
			found[p] = next
			continue
		}
		if off, ok := m.initial[p]; ok {
			found[p] = off
			if m.keepStart {
				keep = append(keep, offsetdb.Offset{Group: m.storeGroup, Topic: p.Topic, Partition: p.Partition, Next: off, CommittedBy: m.consumer})
			}
			continue
		}
		st := starts[p.Topic]
		if st == nil {
			info, err := c.b.Topic(p.Topic)
			if err != nil {
				continue
			}
			st = map[int]int64{}
			for _, pi := range info.Partitions {
				st[pi.Partition] = pi.StartOffset
			}
			starts[p.Topic] = st
		}
		if off, ok := st[p.Partition]; ok {
			found[p] = off
		}
	}
	if len(keep) > 0 {
		// Never backwards: a commit of the consumer's since the read above stays.
		if err := c.store.Commit(ctx, keep); err != nil {
			return nil, &StoreError{Op: "store where the consumer starts", Err: err}
		}
		c.lag.invalidate(m.storeGroup)
	}
	return found, nil
}

// waitAny waits until one of the member's partitions has a message at its cursor, the wait
// ends, the member's assignment changes or the coordinator closes.
func (c *Coordinator) waitAny(ctx context.Context, m *Member, wait time.Duration) error {
	c.mu.Lock()
	if m.gone {
		c.mu.Unlock()
		return fmt.Errorf("%w: member %q was removed", ErrUnknownMember, m.id)
	}
	changed := m.changed
	positions := make(map[Partition]int64, len(m.cursors))
	for _, p := range m.assigned {
		if off, ok := m.cursors[p]; ok {
			positions[p] = off
		}
	}
	c.mu.Unlock()

	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // ends with wctx
		defer wg.Done()
		select {
		case <-changed:
			cancel()
		case <-c.stop:
			cancel()
		case <-wctx.Done():
		}
	}()
	at := make([]broker.PartitionOffset, 0, len(positions))
	for p, off := range positions {
		at = append(at, broker.PartitionOffset{Topic: p.Topic, Partition: p.Partition, Offset: off})
	}
	_, err := c.b.WaitAny(wctx, wait, at)
	cancel()
	wg.Wait()
	if err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return nil
}

// fetchedSize estimates the bytes of a fetch result, for Limits.MaxBytes.
func fetchedSize(res *broker.FetchResult) int {
	n := 0
	for i := range res.Messages {
		m := &res.Messages[i]
		n += 32 + len(m.Key) + len(m.Value)
		for _, h := range m.Headers {
			n += len(h.Key) + len(h.Value) + 4
		}
	}
	return n
}
