package broker

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"time"
)

const (
	defaultFetchMessages = 100
	defaultFetchBytes    = 1 << 20
	// coalesceGap: index entries whose records lie this close in the log are read with one pread.
	coalesceGap = 64 << 10
)

// Fetch reads messages of one partition starting at opts.Offset. Only durable messages are
// visible. With opts.Wait it waits (up to Wait, or until ctx ends) for a message at Offset when
// Offset is the end. Errors: ErrUnknownTopic, ErrUnknownPartition, *OffsetRangeError, ErrCorrupt.
func (b *Broker) Fetch(ctx context.Context, topicName string, partition int, opts FetchOptions) (*FetchResult, error) {
	t, err := b.lookup(topicName)
	if err != nil {
		return nil, err
	}
	p, err := t.partition(partition)
	if err != nil {
		return nil, err
	}
	if opts.MaxMessages <= 0 {
		opts.MaxMessages = defaultFetchMessages
	}
	if opts.MaxBytes <= 0 {
		opts.MaxBytes = defaultFetchBytes
	}
	off := opts.Offset
	var timer *time.Timer
	for {
		start, end := p.start.Load(), p.end.Load()
		if off < start || off > end {
			return nil, &OffsetRangeError{Offset: off, StartOffset: start, EndOffset: end}
		}
		if off < end {
			break
		}
		if opts.Wait <= 0 || b.closed.Load() {
			return &FetchResult{NextOffset: off, StartOffset: start, EndOffset: end}, nil
		}
		ch := p.waitChan()
		if p.end.Load() > off {
			continue
		}
		if timer == nil {
			timer = time.NewTimer(opts.Wait)
			defer timer.Stop()
		}
		select {
		case <-ch:
		case <-timer.C:
			opts.Wait = 0
		case <-ctx.Done():
			opts.Wait = 0
		case <-b.stop:
			opts.Wait = 0
		}
	}
	for attempt := 0; ; attempt++ {
		res, err := b.read(p, off, opts)
		if err != nil && errors.Is(err, ErrCorrupt) && attempt == 0 && p.start.Load() > off {
			continue // retention removed what we were reading: report the range
		}
		if err == nil {
			b.stats.messagesOut.Add(int64(len(res.Messages)))
		}
		return res, err
	}
}

// read copies the index entries for [off, ...) within the limits and reads their records.
func (b *Broker) read(p *partition, off int64, opts FetchOptions) (*FetchResult, error) {
	p.mu.RLock()
	start, end := p.start.Load(), p.end.Load()
	if off < start || off > end {
		p.mu.RUnlock()
		return nil, &OffsetRangeError{Offset: off, StartOffset: start, EndOffset: end}
	}
	n := int(min(int64(opts.MaxMessages), end-off))
	ents := make([]indexEntry, 0, n)
	offs := make([]int64, 0, n)
	total := 0
	next := off
	for o := off; len(ents) < n && o < end; o++ {
		e, err := p.readEntry(o)
		if err != nil {
			p.mu.RUnlock()
			return nil, err
		}
		if e == gapEntry {
			// An offset of a corrupt batch an operator dropped (logrepair.go): skipped.
			b.opts.Logger.Warn("skipping an offset lost to a dropped corrupt batch", "topic", p.t.name, "partition", p.id, "offset", o)
			next = o + 1
			continue
		}
		if len(ents) > 0 && total+int(e.Size) > opts.MaxBytes {
			break
		}
		ents = append(ents, e)
		offs = append(offs, o)
		total += int(e.Size)
		next = o + 1
	}
	p.mu.RUnlock()

	// Read runs of nearby records with one pread each into one buffer.
	type span struct {
		pos  int64
		at   int // where the span starts in buf
		size int
	}
	var spans []span
	bufSize := 0
	for i := 0; i < len(ents); {
		j := i + 1
		last := ents[i].Pos + int64(ents[i].Size)
		for j < len(ents) && ents[j].Pos >= last && ents[j].Pos-last <= coalesceGap && ents[j].Pos+int64(ents[j].Size)-ents[i].Pos <= int64(2*opts.MaxBytes+coalesceGap) {
			last = ents[j].Pos + int64(ents[j].Size)
			j++
		}
		spans = append(spans, span{pos: ents[i].Pos, at: bufSize, size: int(last - ents[i].Pos)})
		bufSize += int(last - ents[i].Pos)
		i = j
	}
	buf := make([]byte, bufSize)
	for _, s := range spans {
		if err := b.log.readAt(buf[s.at:s.at+s.size], s.pos); err != nil {
			return nil, fmt.Errorf("read %s/%d at offset %d: %w", p.t.name, p.id, off, err)
		}
	}
	res := &FetchResult{Messages: make([]FetchedMessage, len(ents)), StartOffset: start, EndOffset: end}
	si := 0
	for i, e := range ents {
		for si+1 < len(spans) && spans[si+1].pos <= e.Pos {
			si++
		}
		s := spans[si]
		at := s.at + int(e.Pos-s.pos)
		r, err := decodeRecord(buf[at : at+int(e.Size)])
		if err != nil || r.Offset != offs[i] || r.CRC != e.CRC || int(r.Partition) != p.id || r.TopicID != p.t.id {
			if err == nil {
				err = fmt.Errorf("record at log position %d is offset %d of topic id %d partition %d", e.Pos, r.Offset, r.TopicID, r.Partition)
			}
			return nil, fmt.Errorf("%w: %s/%d offset %d: %v", ErrCorrupt, p.t.name, p.id, offs[i], err)
		}
		res.Messages[i] = FetchedMessage{
			Offset:    r.Offset,
			Timestamp: time.UnixMilli(r.Timestamp).UTC(),
			Key:       r.Key,
			Value:     r.Value,
			ValueJSON: r.Attrs&attrValueJSON != 0,
			Headers:   r.Headers,
			CRC:       r.CRC,
		}
	}
	b.stats.bytesOut.Add(int64(total))
	res.NextOffset = next
	return res, nil
}

// PartitionOffset names an offset of one partition.
type PartitionOffset struct {
	Topic     string
	Partition int
	Offset    int64
}

// WaitAny waits until at least one of the partitions has a readable message at or after its
// offset (ready=true), or until wait passes, ctx ends or the broker closes (ready=false, with
// ctx's error if it ended). It reads nothing: a long-poll across many partitions uses it to
// sleep, then fetches. Errors: ErrUnknownTopic, ErrUnknownPartition.
func (b *Broker) WaitAny(ctx context.Context, wait time.Duration, at []PartitionOffset) (ready bool, err error) {
	parts := make([]*partition, len(at))
	for i, a := range at {
		t, err := b.lookup(a.Topic)
		if err != nil {
			return false, err
		}
		if parts[i], err = t.partition(a.Partition); err != nil {
			return false, err
		}
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	fixed := []reflect.SelectCase{
		{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(timer.C)},
		{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(ctx.Done())},
		{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(b.stop)},
	}
	cases := make([]reflect.SelectCase, 0, len(fixed)+len(parts))
	for {
		cases = append(cases[:0], fixed...)
		for i, p := range parts {
			ch := p.waitChan()
			if p.end.Load() > at[i].Offset {
				return true, nil
			}
			cases = append(cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(ch)})
		}
		switch chosen, _, _ := reflect.Select(cases); chosen {
		case 0, 2:
			return false, nil
		case 1:
			return false, ctx.Err()
		}
	}
}
