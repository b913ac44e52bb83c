package gateway

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/imagomq/imago/broker"
)

// This file holds a member's poll: GET /v1/groups/{group}/members/{member}/messages reads
// from the member's partitions, starting at each one's cursor, and long-polls across all of
// them.
//
// The long poll waits on every partition at once with one bounded broker.Fetch wait per
// partition (one goroutine each, all ended when the first sees a message, the wait ends,
// the member's assignment changes or the server closes). A broker method that waits on
// several partitions would replace the fan-out.

// pollParams bound one read: a member's poll, or a fetch (fetchParams).
type pollParams struct {
	maxMessages int
	maxBytes    int
	wait        time.Duration
}

// polled is one partition's messages in a poll answer.
type polled struct {
	p   tp
	res *broker.FetchResult
}

// pollAnswer is what a poll returns.
type pollAnswer struct {
	batches    []polled
	generation int64
	assigned   []tp
}

// poll serves one poll of member m of g, which the caller found live with touch. closing
// ends a long poll early.
func (c *groupCoordinator) poll(ctx, closing context.Context, g *group, m *member, q pollParams) (pollAnswer, error) {
	select {
	case m.pollSem <- struct{}{}:
	case <-ctx.Done():
		return pollAnswer{}, ctx.Err()
	}
	defer func() { <-m.pollSem }()
	c.mu.Lock()
	if m.gone {
		c.mu.Unlock()
		return pollAnswer{}, fmt.Errorf("%w: member %q of group %q was removed", errUnknownMember, m.id, g.name)
	}
	m.polling++
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		m.polling--
		m.lastSeen = time.Now()
		c.mu.Unlock()
	}()

	ans, err := c.collect(ctx, g, m, q)
	if err != nil || len(ans.batches) > 0 || q.wait <= 0 {
		return ans, err
	}
	if err := c.waitAny(ctx, closing, m, q.wait); err != nil {
		return pollAnswer{}, err
	}
	return c.collect(ctx, g, m, q)
}

// collect reads what is there now from the member's partitions, round-robin from where the
// previous poll started, and moves the cursors past it.
func (c *groupCoordinator) collect(ctx context.Context, g *group, m *member, q pollParams) (pollAnswer, error) {
	c.mu.Lock()
	if m.gone {
		c.mu.Unlock()
		return pollAnswer{}, fmt.Errorf("%w: member %q of group %q was removed", errUnknownMember, m.id, g.name)
	}
	assigned := m.assigned
	first := 0
	if len(assigned) > 0 {
		first = m.rr % len(assigned)
		m.rr++
	}
	cursors := make(map[tp]int64, len(assigned))
	var missing []tp
	for _, p := range assigned {
		if off, ok := m.cursors[p]; ok {
			cursors[p] = off
		} else {
			missing = append(missing, p)
		}
	}
	c.mu.Unlock()

	if len(missing) > 0 {
		if err := c.initCursors(ctx, g, m, missing, cursors); err != nil {
			return pollAnswer{}, err
		}
	}

	var batches []polled
	resets := map[tp]int64{}
	msgsLeft, bytesLeft := q.maxMessages, q.maxBytes
	for i := range assigned {
		p := assigned[(first+i)%len(assigned)]
		off, ok := cursors[p]
		if !ok {
			continue // lost while its cursor was read
		}
		res, err := c.b.Fetch(ctx, p.topic, p.partition, broker.FetchOptions{Offset: off, MaxMessages: msgsLeft, MaxBytes: bytesLeft})
		var re *broker.OffsetRangeError
		switch {
		case errors.As(err, &re):
			to := re.StartOffset
			if re.Offset > re.EndOffset {
				to = re.EndOffset
				c.log.Error("group cursor is past the partition's end; continuing at the end", "group", g.name, "member", m.id,
					"topic", p.topic, "partition", p.partition, "offset", off, "end_offset", re.EndOffset)
			} else {
				c.log.Warn("retention removed messages the group had not consumed; continuing at the start", "group", g.name,
					"member", m.id, "topic", p.topic, "partition", p.partition, "offset", off, "start_offset", re.StartOffset)
			}
			resets[p] = to
			continue
		case errors.Is(err, broker.ErrUnknownTopic), errors.Is(err, broker.ErrUnknownPartition):
			continue
		case err != nil:
			return pollAnswer{}, err
		}
		if len(res.Messages) == 0 {
			continue
		}
		batches = append(batches, polled{p, res})
		msgsLeft -= len(res.Messages)
		bytesLeft -= fetchedSize(res)
		if msgsLeft <= 0 || bytesLeft <= 0 {
			break
		}
	}
	return c.advance(g, m, batches, resets)
}

// advance keeps the messages of partitions the member still owns at an unchanged cursor and
// moves the cursors past them.
func (c *groupCoordinator) advance(g *group, m *member, batches []polled, resets map[tp]int64) (pollAnswer, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if m.gone {
		return pollAnswer{}, fmt.Errorf("%w: member %q of group %q was removed during its poll", errUnknownMember, m.id, g.name)
	}
	for p, to := range resets {
		if _, ok := m.cursors[p]; ok && m.owns[p] {
			m.cursors[p] = to
		}
	}
	kept := batches[:0]
	for _, b := range batches {
		cur, ok := m.cursors[b.p]
		if !ok || !m.owns[b.p] {
			continue // the partition moved (and maybe came back) during the poll
		}
		msgs := b.res.Messages
		for len(msgs) > 0 && msgs[0].Offset < cur {
			msgs = msgs[1:] // committed meanwhile by this member
		}
		if len(msgs) == 0 {
			continue
		}
		b.res.Messages = msgs
		if b.res.NextOffset > cur {
			m.cursors[b.p] = b.res.NextOffset
		}
		kept = append(kept, b)
	}
	return pollAnswer{batches: kept, generation: g.generation, assigned: m.assigned}, nil
}

// initCursors sets the cursors of partitions the member just gained: the committed offset,
// else the member's start position. It first waits for commits accepted under the previous
// assignment (commitGate).
func (c *groupCoordinator) initCursors(ctx context.Context, g *group, m *member, missing []tp, cursors map[tp]int64) error {
	g.commitGate.Lock()
	g.commitGate.Unlock() //nolint:staticcheck // an empty critical section: a barrier for earlier commits
	starts := map[string]map[int]int64{}
	found := make(map[tp]int64, len(missing))
	for _, p := range missing {
		o, ok, err := c.store.Get(ctx, m.storeGroup, p.topic, p.partition)
		if err != nil {
			return &storeError{op: "read the committed offset", err: err}
		}
		if ok {
			found[p] = o.Next
			continue
		}
		if off, ok := m.initial[p]; ok {
			found[p] = off
			continue
		}
		st := starts[p.topic]
		if st == nil {
			info, err := c.b.Topic(p.topic)
			if err != nil {
				continue
			}
			st = map[int]int64{}
			for _, pi := range info.Partitions {
				st[pi.Partition] = pi.StartOffset
			}
			starts[p.topic] = st
		}
		if off, ok := st[p.partition]; ok {
			found[p] = off
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for p, off := range found {
		if !m.owns[p] {
			continue
		}
		if cur, ok := m.cursors[p]; ok {
			off = cur
		} else {
			m.cursors[p] = off
		}
		cursors[p] = off
	}
	return nil
}

// waitAny waits until one of the member's partitions has a message at its cursor, the wait
// ends, the member's assignment changes or the server closes.
func (c *groupCoordinator) waitAny(ctx, closing context.Context, m *member, wait time.Duration) error {
	c.mu.Lock()
	if m.gone {
		c.mu.Unlock()
		return fmt.Errorf("%w: member %q was removed", errUnknownMember, m.id)
	}
	changed := m.changed
	positions := make(map[tp]int64, len(m.cursors))
	for _, p := range m.assigned {
		if off, ok := m.cursors[p]; ok {
			positions[p] = off
		}
	}
	c.mu.Unlock()

	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	stopClosing := context.AfterFunc(closing, cancel)
	defer stopClosing()
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
		at = append(at, broker.PartitionOffset{Topic: p.topic, Partition: p.partition, Offset: off})
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

// fetchedSize estimates the bytes of a fetch result, for max_bytes.
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

// appendPollResponse writes {"messages":[...],"generation":G,"assignments":[...]}.
func appendPollResponse(dst []byte, a pollAnswer) []byte {
	dst = append(dst, `{"messages":[`...)
	n := 0
	for _, b := range a.batches {
		for i := range b.res.Messages {
			if n > 0 {
				dst = append(dst, ',')
			}
			n++
			dst = appendMessage(dst, b.p.topic, b.p.partition, &b.res.Messages[i])
		}
	}
	dst = append(dst, `],"generation":`...)
	dst = strconv.AppendInt(dst, a.generation, 10)
	dst = append(dst, `,"assignments":`...)
	dst = appendAssignments(dst, a.assigned)
	return append(dst, "}\n"...)
}

func appendAssignments(dst []byte, ps []tp) []byte {
	dst = append(dst, '[')
	for i, p := range ps {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, `{"topic":`...)
		dst = appendJSONString(dst, p.topic)
		dst = append(dst, `,"partition":`...)
		dst = strconv.AppendInt(dst, int64(p.partition), 10)
		dst = append(dst, '}')
	}
	return append(dst, ']')
}
