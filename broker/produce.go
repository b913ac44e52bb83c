package broker

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"time"

	"github.com/imagomq/imago/broker/internal/dedupe"
)

// produceReq is one Produce call on its way through the flusher.
type produceReq struct {
	t      *topic   // the topic of every message, unless topics is set
	topics []*topic // per-message topics, for transactions that span topics
	msgs   []Message
	parts  []int // chosen partition of each message
	size   int   // encoded batch size

	// Transaction batches (txlog.go): kind is batchTx, control the control record's value,
	// indexed false for a prepare (its records get no offsets), applied runs under stateMu
	// when the batch is durable and indexed, with the batch's log position.
	kind    uint8
	control []byte
	indexed bool
	applied func(pos int64)
	// outc (cluster mode; buffered) receives the request's one answer, and the writer waits
	// on it alone: nil with skipped set, or the proposer's refusal with err set (nothing
	// proposed), or the outcome of its raft entry.
	outc       chan error
	entry      *byte  // its entry's data, the key of replState.inflight
	term       uint64 // the raft term it was proposed in (txoutcome.go)
	proposedAt time.Time
	// sync makes the group fsync before this request is acknowledged whatever the policy:
	// transaction records (txlog.go) are promises to a transaction manager.
	sync bool
	// stale, when set, is asked by the flusher just before it encodes the request: true means
	// the request no longer applies and is dropped unwritten (skipped; applied is not run).
	stale   func() bool
	skipped bool
	// Decision batches (decisions.go): kind is batchDecision and decisions its records; with
	// decLimit >= 0 it is a compaction, whose records the flusher takes when it encodes it.
	decisions []DecisionRecord
	decLimit  int64

	hasKey bool
	key    dedupe.Key
	fp     uint64

	// Set by the flusher before done is closed (single node), or before outc answers.
	batchPos int64
	offsets  []Position
	err      error
	done     chan struct{} // closed by the flusher; cluster mode answers on outc instead

	// settled is closed by Produce when a keyed request has its final outcome (on a single node
	// when done is closed; in cluster mode when outc answered, at apply), with err set to it. A
	// retry with the same key waits for it (idemBegin).
	settled chan struct{}
}

// keyFits reports whether the idempotency store can remember a request of n messages in runs
// runs of one partition (dedupe.Fits); tests make it smaller.
var keyFits = dedupe.Fits

// Produce appends msgs to topic as one unit: all are appended or none, also across a crash.
// It returns after the messages are durable under the fsync policy. With a non-empty
// idempotencyKey a repeat within the idempotency window returns the first result with
// Duplicate set and appends nothing; a repeat with different messages gets ErrIdempotencyReused.
// Once the request is queued it is not abandoned when ctx ends (it may already be on disk).
// Errors: ErrUnknownTopic, ErrUnknownPartition, ErrMessageTooLarge, ErrInvalidArgument,
// ErrBackpressure, ErrIdempotencyReused, ErrClosed. ErrMessageTooLarge also answers a keyed
// request too large for its key to be remembered (dedupe.Fits), before anything is appended.
func (b *Broker) Produce(ctx context.Context, topicName string, msgs []Message, idempotencyKey string) (ProduceResult, error) {
	if b.closed.Load() {
		return ProduceResult{}, ErrClosed
	}
	if len(msgs) == 0 {
		return ProduceResult{}, fmt.Errorf("%w: a produce request needs at least one message", ErrInvalidArgument)
	}
	t, err := b.lookup(topicName)
	if err != nil {
		return ProduceResult{}, err
	}
	req := &produceReq{t: t, msgs: msgs, parts: make([]int, len(msgs)), size: batchHeaderSize, done: make(chan struct{}), kind: batchMessages, indexed: true}
	for i := range msgs {
		rs, err := b.checkMessage(i, &msgs[i])
		if err != nil {
			return ProduceResult{}, err
		}
		if req.parts[i], err = choosePartition(t, &msgs[i], i); err != nil {
			return ProduceResult{}, err
		}
		req.size += rs
	}
	if req.size > maxBatchBytes {
		return ProduceResult{}, fmt.Errorf("%w: request of %d bytes", ErrMessageTooLarge, req.size)
	}
	if idempotencyKey == "" {
		return b.submit(req)
	}
	runs := 1
	for i := 1; i < len(req.parts); i++ {
		if req.parts[i] != req.parts[i-1] {
			runs++
		}
	}
	if !keyFits(len(msgs), runs) {
		return ProduceResult{}, fmt.Errorf("%w: an Idempotency-Key cannot remember a request of %d messages that changes partition %d times: send it as several requests",
			ErrMessageTooLarge, len(msgs), runs-1)
	}
	req.hasKey = true
	req.settled = make(chan struct{})
	req.key = idemKey(t.name, idempotencyKey)
	req.fp = fingerprint(msgs)
	for {
		res, done, err := b.idemBegin(req)
		if done {
			return res, err
		}
		if err == nil {
			break
		}
	}
	res, err := b.submit(req)
	req.err = err
	close(req.settled)
	b.idemMu.Lock()
	delete(b.inflight, req.key)
	b.idemMu.Unlock()
	return res, err
}

// idemBegin checks req's key. done reports that the answer is final (a duplicate or an error);
// otherwise a nil err means req is now the key's in-flight request, and a non-nil err means
// an earlier in-flight request with the key failed and the caller should check again.
func (b *Broker) idemBegin(req *produceReq) (res ProduceResult, done bool, err error) {
	b.idemMu.Lock()
	if e, ok := b.dedupe.Get(req.key); ok {
		b.idemMu.Unlock()
		if e.Fingerprint != req.fp {
			return res, true, fmt.Errorf("%w: the key was first used %s", ErrIdempotencyReused, "with other messages")
		}
		if err := b.cutAtRestart(req.key); err != nil {
			return res, true, err
		}
		res.Duplicate = true
		res.Offsets = make([]Position, len(e.Offsets))
		for i, o := range e.Offsets {
			res.Offsets[i] = Position{Partition: int(o.Partition), Offset: o.Offset}
		}
		return res, true, nil
	}
	if other, ok := b.inflight[req.key]; ok {
		b.idemMu.Unlock()
		<-other.settled // not done: cluster mode answers on outc, and done is not closed
		if other.err != nil {
			return res, false, other.err
		}
		if other.fp != req.fp {
			return res, true, fmt.Errorf("%w: the key is in use by a request with other messages", ErrIdempotencyReused)
		}
		if err := b.cutAtRestart(req.key); err != nil {
			return res, true, err
		}
		return ProduceResult{Offsets: append([]Position(nil), other.offsets...), Duplicate: true}, true, nil
	}
	b.inflight[req.key] = req
	b.idemMu.Unlock()
	return res, false, nil
}

// cutAtRestart returns the broker's failure when the log has failed and the keyed request
// that key names lies past the log's durable end: with fsync interval or never it was
// acknowledged once written, and the restart cuts it (fail mark). A retry of it is then
// answered with the failure, not "duplicate" (which would tell the client it is stored), and
// retried after the restart it is stored.
func (b *Broker) cutAtRestart(key dedupe.Key) error {
	if !b.logFailed.Load() {
		return nil
	}
	b.stateMu.Lock()
	defer b.stateMu.Unlock()
	if pos, ok := b.unsyncedKeys[key]; ok && pos >= b.log.durable.Load() {
		return b.failed
	}
	return nil
}

// submit queues req for the flusher and waits for its outcome.
func (b *Broker) submit(req *produceReq) (ProduceResult, error) {
	if b.opts.Replicated && req.kind == batchDecision && req.decLimit >= 0 {
		return ProduceResult{}, fmt.Errorf("%w: decision compaction (retention keeps a replicated log)", ErrNotInCluster)
	}
	b.qmu.Lock()
	if b.closing {
		b.qmu.Unlock()
		return ProduceResult{}, ErrClosed
	}
	if b.qbytes > 0 && b.qbytes+int64(req.size) > b.opts.MaxPendingBytes {
		b.qmu.Unlock()
		return ProduceResult{}, ErrBackpressure
	}
	if b.opts.Replicated {
		req.outc = make(chan error, 1)
	}
	b.queue = append(b.queue, req)
	b.qbytes += int64(req.size)
	b.qmu.Unlock()
	b.signal()
	if b.opts.Replicated {
		return b.waitApplied(req)
	}
	<-req.done
	if req.err != nil {
		return ProduceResult{}, req.err
	}
	return ProduceResult{Offsets: req.offsets}, nil
}

// checkMessage checks one message's limits and returns its encoded size.
func (b *Broker) checkMessage(i int, m *Message) (int, error) {
	rs := recordSize(m)
	if rs-recordHeaderSize > b.opts.MaxMessageBytes {
		return 0, fmt.Errorf("%w: message %d has %d bytes of key, headers and value; the limit is %d",
			ErrMessageTooLarge, i, rs-recordHeaderSize, b.opts.MaxMessageBytes)
	}
	if len(m.Headers) > 0xffff {
		return 0, fmt.Errorf("%w: message %d has %d headers; the limit is 65535", ErrInvalidArgument, i, len(m.Headers))
	}
	for _, h := range m.Headers {
		if len(h.Key) > 0xffff {
			return 0, fmt.Errorf("%w: message %d has a header name of %d bytes; the limit is 65535", ErrInvalidArgument, i, len(h.Key))
		}
	}
	return rs, nil
}

func (r *produceReq) topicOf(i int) *topic {
	if r.topics != nil {
		return r.topics[i]
	}
	return r.t
}

func (b *Broker) signal() {
	select {
	case b.qsig <- struct{}{}:
	default:
	}
}

// idemKey scopes a client's key to its topic and hashes it to a fixed size.
func idemKey(topic, key string) dedupe.Key {
	h := sha256.New()
	h.Write([]byte(topic))
	h.Write([]byte{0})
	h.Write([]byte(key))
	var k dedupe.Key
	copy(k[:], h.Sum(nil))
	return k
}

// fingerprint identifies a request's content (requested partitions, keys, headers, values) so
// that a key reused for other messages is caught. Two CRCs of one length-prefixed encoding.
func fingerprint(msgs []Message) uint64 {
	c := crc32.New(castagnoli)
	d := crc32.NewIEEE()
	var n [8]byte
	put := func(b []byte) {
		binary.BigEndian.PutUint64(n[:], uint64(len(b)))
		c.Write(n[:])
		d.Write(n[:])
		c.Write(b)
		d.Write(b)
	}
	for i := range msgs {
		m := &msgs[i]
		flags := []byte{0, 0}
		if m.Key != nil {
			flags[0] = 1
		}
		if m.ValueJSON {
			flags[1] = 1
		}
		put(flags)
		var part [12]byte
		binary.BigEndian.PutUint64(part[:], uint64(int64(m.Partition)))
		binary.BigEndian.PutUint32(part[8:], uint32(len(m.Headers)))
		put(part[:])
		put(m.Key)
		for _, h := range m.Headers {
			put([]byte(h.Key))
			put([]byte(h.Value))
		}
		put(m.Value)
	}
	return uint64(c.Sum32())<<32 | uint64(d.Sum32())
}
