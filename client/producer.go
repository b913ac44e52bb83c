package client

import (
	"context"
	"errors"
	"hash/fnv"
	"sync"
	"sync/atomic"
	"time"
)

// This file holds the batching Producer (see "The batching producer" in the package doc).

// ErrProducerClosed is returned by Send after Close.
var ErrProducerClosed = errors.New("imago client: producer is closed")

// Delivery is the outcome of one message sent with a Producer.
type Delivery struct {
	Topic   string
	Message Message
	// Position is where the message was stored (when Err is nil).
	Position Position
	// Duplicate is set when the server had already stored the batch (a retry after a lost
	// answer): Position is the first store's, and nothing was stored twice.
	Duplicate bool
	// Err is why the message's batch was not acknowledged. After a network error or a timeout
	// (errors.Is(Err, ErrOutcomeUnknown) once retries followed one) the batch may still have
	// been stored, with idempotency too (its answers were lost until ProducerDeliveryTimeout
	// or the context ended, or its retries were refused): sending the message again makes a new
	// batch with a new idempotency key, which stores it a second time if the first was stored.
	// Find out first (fetch the partition), or send such messages with Client.Produce and an
	// IdempotencyKey of your own that a retry reuses.
	Err error
}

// ProducerOption configures a Producer.
type ProducerOption func(*producerConfig)

type producerConfig struct {
	linger          time.Duration
	maxBatch        int
	maxBatchBytes   int
	lanes           int
	buffer          int
	idempotent      bool
	deliveryTimeout time.Duration
}

func defaultProducerConfig() producerConfig {
	return producerConfig{
		linger:          5 * time.Millisecond,
		maxBatch:        500,
		maxBatchBytes:   1 << 20,
		lanes:           4,
		buffer:          1000,
		idempotent:      true,
		deliveryTimeout: 30 * time.Second,
	}
}

// ProducerLinger is how long a batch waits for more messages after its first (default 5 ms).
// 0 sends whatever has queued as soon as the lane is free: batches then form only under load.
func ProducerLinger(d time.Duration) ProducerOption {
	return func(c *producerConfig) {
		if d >= 0 {
			c.linger = d
		}
	}
}

// ProducerMaxBatch caps the messages of one request (default 500).
func ProducerMaxBatch(n int) ProducerOption {
	return func(c *producerConfig) {
		if n > 0 {
			c.maxBatch = n
		}
	}
}

// ProducerMaxBatchBytes caps the approximate size of one request (default 1 MiB; keep it well
// under the server's body limit, 16 MiB by default). A message larger than this is sent alone.
func ProducerMaxBatchBytes(n int) ProducerOption {
	return func(c *producerConfig) {
		if n > 0 {
			c.maxBatchBytes = n
		}
	}
}

// ProducerLanes sets the number of lanes, the requests in flight at most (default 4). The
// messages of a key, or of an explicit partition, always take the same lane.
func ProducerLanes(n int) ProducerOption {
	return func(c *producerConfig) {
		if n > 0 {
			c.lanes = n
		}
	}
}

// ProducerBuffer caps the messages queued per lane before Send blocks (default 1000).
func ProducerBuffer(n int) ProducerOption {
	return func(c *producerConfig) {
		if n > 0 {
			c.buffer = n
		}
	}
}

// ProducerIdempotent, on by default, gives every batch an idempotency key so that it is retried
// safely (never stored twice). Off, a batch is sent once and a network error goes to its
// callbacks: the batch may or may not have been stored.
func ProducerIdempotent(on bool) ProducerOption {
	return func(c *producerConfig) { c.idempotent = on }
}

// ProducerDeliveryTimeout bounds the time one batch may take, retries included (default 30 s).
func ProducerDeliveryTimeout(d time.Duration) ProducerOption {
	return func(c *producerConfig) {
		if d > 0 {
			c.deliveryTimeout = d
		}
	}
}

// Producer batches messages in the background. It is safe for concurrent use; Close it to
// send what is queued and stop its goroutines.
type Producer struct {
	c      *Client
	cfg    producerConfig
	lanes  []*lane
	rr     atomic.Uint64
	ctx    context.Context // ends when Close gives up waiting: in-flight requests are canceled
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.RWMutex // held for reading while a Send enqueues; Close takes it to close the lanes
	closed bool
}

// NewProducer starts a batching producer that sends with c.
func (c *Client) NewProducer(opts ...ProducerOption) *Producer {
	cfg := defaultProducerConfig()
	for _, o := range opts {
		o(&cfg)
	}
	p := &Producer{c: c, cfg: cfg}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	for range cfg.lanes {
		l := &lane{p: p, in: make(chan laneOp, cfg.buffer)}
		p.lanes = append(p.lanes, l)
		p.wg.Go(l.run)
	}
	return p
}

// Send queues m for topic and returns once it is queued (it blocks while the lane's buffer is
// full, until ctx ends). done, when not nil, is called once with the outcome, on the lane's
// goroutine: keep it short. The producer holds m until then; do not modify it.
func (p *Producer) Send(ctx context.Context, topic string, m Message, done func(Delivery)) error {
	return p.enqueue(ctx, laneOp{topic: topic, m: m, done: done})
}

// SendCh is Send with the outcome on a channel, which receives exactly one Delivery (also when
// the message could not be queued).
func (p *Producer) SendCh(ctx context.Context, topic string, m Message) <-chan Delivery {
	ch := make(chan Delivery, 1)
	if err := p.Send(ctx, topic, m, func(d Delivery) { ch <- d }); err != nil {
		ch <- Delivery{Topic: topic, Message: m, Err: err}
	}
	return ch
}

// SendSync sends m and waits for its outcome; it shares batches with concurrent senders.
func (p *Producer) SendSync(ctx context.Context, topic string, m Message) (Position, error) {
	select {
	case d := <-p.SendCh(ctx, topic, m):
		return d.Position, d.Err
	case <-ctx.Done():
		return Position{}, ctx.Err() // the message may still be sent
	}
}

func (p *Producer) enqueue(ctx context.Context, op laneOp) error {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return ErrProducerClosed
	}
	l := p.laneFor(op.topic, &op.m)
	select {
	case l.in <- op:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// laneFor picks the lane: by partition, else by key, else round-robin.
func (p *Producer) laneFor(topic string, m *Message) *lane {
	n := uint64(len(p.lanes))
	switch {
	case m.Partition != nil:
		return p.lanes[uint64(*m.Partition)%n]
	case m.Key != nil:
		h := fnv.New64a()
		h.Write([]byte(topic))
		h.Write([]byte{0})
		h.Write([]byte(*m.Key))
		return p.lanes[h.Sum64()%n]
	}
	return p.lanes[p.rr.Add(1)%n]
}

// Flush sends every message queued before it was called and waits for their outcomes (the
// callbacks have run when it returns nil).
func (p *Producer) Flush(ctx context.Context) error {
	p.mu.RLock()
	if p.closed {
		p.mu.RUnlock()
		return ErrProducerClosed
	}
	dones := make([]chan struct{}, len(p.lanes))
	for i, l := range p.lanes {
		dones[i] = make(chan struct{})
		select {
		case l.in <- laneOp{flushed: dones[i]}:
		case <-ctx.Done():
			p.mu.RUnlock()
			return ctx.Err()
		}
	}
	p.mu.RUnlock()
	for _, d := range dones {
		select {
		case <-d:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// Close sends what is queued, waits for the outcomes and stops the producer. When ctx ends
// first, requests in flight are canceled (their callbacks get the error) and Close returns
// ctx's error once the lanes have stopped.
func (p *Producer) Close(ctx context.Context) error {
	p.mu.Lock()
	if !p.closed {
		p.closed = true
		for _, l := range p.lanes {
			close(l.in)
		}
	}
	p.mu.Unlock()
	done := make(chan struct{})
	go func() { p.wg.Wait(); close(done) }()
	select {
	case <-done:
		p.cancel()
		return nil
	case <-ctx.Done():
		p.cancel()
		<-done
		return ctx.Err()
	}
}

// laneOp is a message to send, or (flushed set) a request to send everything queued before it.
type laneOp struct {
	topic   string
	m       Message
	done    func(Delivery)
	flushed chan struct{}
}

// lane collects messages per topic and sends them one request at a time.
type lane struct {
	p       *Producer
	in      chan laneOp
	pending map[string]*laneBatch
	order   []string // topics with a pending batch, oldest first
}

type laneBatch struct {
	ops   []laneOp
	bytes int
}

func (l *lane) run() {
	l.pending = map[string]*laneBatch{}
	var timer *time.Timer
	var timerC <-chan time.Time
	stopTimer := func() {
		if timer != nil {
			timer.Stop()
		}
		timerC = nil
	}
	defer stopTimer()
	for {
		select {
		case op, ok := <-l.in:
			if !ok {
				l.sendAll()
				return
			}
			if op.flushed != nil {
				stopTimer()
				l.sendAll()
				close(op.flushed)
				continue
			}
			sentFull := l.add(op)
			switch {
			case l.p.cfg.linger == 0:
				// Send what is pending once nothing more is queued, also when add has just
				// sent a full batch: other topics' batches may be waiting in the lane.
				if len(l.in) == 0 {
					l.sendAll()
				}
			case sentFull:
				// Nothing of op is pending; the timer started for what else is pending runs on.
			case timerC == nil:
				if timer == nil {
					timer = time.NewTimer(l.p.cfg.linger)
				} else {
					timer.Reset(l.p.cfg.linger)
				}
				timerC = timer.C
			}
		case <-timerC:
			timerC = nil
			l.sendAll()
		}
	}
}

// add puts op in its topic's batch and sends the batch when it is full; it reports whether it
// sent one.
func (l *lane) add(op laneOp) bool {
	b := l.pending[op.topic]
	size := messageSize(&op.m)
	if b != nil && b.bytes+size > l.p.cfg.maxBatchBytes {
		l.sendTopic(op.topic) // op would overflow it: send what is there first
		b = nil
	}
	if b == nil {
		b = &laneBatch{}
		l.pending[op.topic] = b
		l.order = append(l.order, op.topic)
	}
	b.ops = append(b.ops, op)
	b.bytes += size
	if len(b.ops) >= l.p.cfg.maxBatch || b.bytes >= l.p.cfg.maxBatchBytes {
		l.sendTopic(op.topic)
		return true
	}
	return false
}

func (l *lane) sendAll() {
	for len(l.order) > 0 {
		l.sendTopic(l.order[0])
	}
}

func (l *lane) sendTopic(topic string) {
	b := l.pending[topic]
	delete(l.pending, topic)
	for i, t := range l.order {
		if t == topic {
			l.order = append(l.order[:i], l.order[i+1:]...)
			break
		}
	}
	if b == nil || len(b.ops) == 0 {
		return
	}
	l.send(topic, b.ops)
}

// send makes one request of ops and reports the outcome to each.
func (l *lane) send(topic string, ops []laneOp) {
	msgs := make([]Message, len(ops))
	for i := range ops {
		msgs[i] = ops[i].m
	}
	ctx, cancel := context.WithTimeout(l.p.ctx, l.p.cfg.deliveryTimeout)
	res, err := l.p.c.Produce(ctx, topic, msgs, ProduceOptions{Idempotent: l.p.cfg.idempotent})
	cancel()
	if err == nil && len(res.Offsets) != len(ops) {
		err = errors.New("imago client: the server answered a different number of offsets than messages sent")
	}
	for i := range ops {
		if ops[i].done == nil {
			continue
		}
		d := Delivery{Topic: topic, Message: ops[i].m, Err: err}
		if err == nil {
			d.Position, d.Duplicate = res.Offsets[i], res.Duplicate
		}
		ops[i].done(d)
	}
}

// messageSize estimates the bytes a message adds to a request body.
func messageSize(m *Message) int {
	n := 32 + len(m.Value)
	if m.ValueBase64 != nil {
		n += len(*m.ValueBase64)
	}
	if m.Key != nil {
		n += len(*m.Key) + 8
	}
	for k, v := range m.Headers {
		n += len(k) + len(v) + 6
	}
	return n
}
