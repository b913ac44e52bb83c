package textproto

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"strconv"
	"unicode/utf8"

	"github.com/imagomq/imago/broker"
	"github.com/imagomq/imago/internal/jsontext"
)

// handle executes one request line and queues its answer. It reports false when the
// connection must end.
func (c *conn) handle(line []byte) bool {
	r, perr := parseLine(line)
	if r.cmd == cmdNone && perr == nil {
		return true // an empty line: Enter after a payload typed into nc
	}
	if !c.authed && r.cmd != cmdAuth {
		if r.cmd == cmdQuit {
			return false
		}
		c.s.stats.authFailures.Add(1)
		c.send(appendResult(nil, codeUnauthorized, r.opaque, "this server needs auth: the first request must be auth <token> <opaque>; closing the connection"))
		c.linger = true
		return false
	}
	if r.cmd == cmdPut {
		switch {
		case r.lengthOver || r.lengthOK && r.length > c.s.opts.MaxPayloadBytes:
			// The payload is not read, so the stream can no longer be trusted.
			c.s.stats.putFailed.Add(1)
			n := strconv.Itoa(r.length)
			if r.lengthOver {
				n = shortWord(r.lengthWord)
			}
			c.send(appendResult(nil, codeTooLarge, r.opaque, "put length "+n+
				" is over the limit of "+strconv.Itoa(c.s.opts.MaxPayloadBytes)+" bytes; closing the connection"))
			c.linger = true
			return false
		case !r.lengthOK:
			// Where the payload ends is unknown: what follows cannot be told from requests.
			c.s.stats.putFailed.Add(1)
			c.s.stats.badRequests.Add(1)
			c.send(appendResult(nil, codeBadRequest, r.opaque, perr.Error()+
				"; without a valid length the payload cannot be skipped, closing the connection"))
			c.linger = true
			return false
		case perr != nil:
			c.s.stats.putFailed.Add(1)
			return c.skipAndAnswer(r, perr)
		}
		return c.put(r)
	}
	if perr != nil {
		if r.cmd == cmdAuth {
			c.s.stats.authFailures.Add(1)
			c.send(appendResult(nil, codeBadRequest, r.opaque, perr.Error()))
			return c.authed // before auth, a malformed auth ends the connection
		}
		c.answerErr(r.opaque, perr)
		return true
	}
	switch r.cmd {
	case cmdQuit:
		return false
	case cmdAuth:
		return c.authenticate(r)
	case cmdVersion:
		c.send(appendResult(nil, codeOK, r.opaque, c.s.opts.Version))
	case cmdGet:
		c.get(r)
	case cmdOffset:
		c.commitOffset(r)
	case cmdTransaction:
		c.transaction(r)
	case cmdStats:
		c.statsCmd(r)
	}
	return true
}

// answerErr queues err's answer.
func (c *conn) answerErr(opaque int64, err error) {
	f := failureFor(err)
	if f.code >= 500 && f.code != codeUnavailable {
		c.s.log.Error("text protocol command failed", "remote", c.remote, "code", f.code, "err", err)
	}
	if f.code == codeBadRequest {
		c.s.stats.badRequests.Add(1)
	}
	c.send(appendResult(nil, f.code, opaque, f.text))
}

// skipAndAnswer reads past the payload of a put that will not run and answers perr.
func (c *conn) skipAndAnswer(r request, perr error) bool {
	got, err := c.skipPayload(r.length)
	switch {
	case errors.Is(err, errTruncated):
		return c.truncated(r, got)
	case err != nil:
		return false
	default:
		c.answerErr(r.opaque, perr)
	}
	return true
}

// truncated answers a put whose payload did not arrive in time and ends the connection: the
// bytes that come late cannot be told from requests, so none of them may be read as one.
func (c *conn) truncated(r request, got int) bool {
	c.s.stats.putFailed.Add(1)
	c.s.log.Debug("text protocol payload truncated; closing", "remote", c.remote, "got", got, "want", r.length)
	c.answerErr(r.opaque, fail(codeBadRequest, "truncated payload: %d of %d bytes arrived (the server waits %s for the next bytes of a payload and %s for all of it); closing the connection",
		got, r.length, c.s.opts.PayloadTimeout, c.s.opts.PayloadMaxTime))
	c.linger = true
	return false
}

func (c *conn) authenticate(r request) bool {
	if c.s.auth == nil {
		c.authed = true
		c.send(appendResult(nil, codeOK, r.opaque, "auth is off on this server; every command is allowed"))
		return true
	}
	t := c.s.auth.Lookup(r.token)
	if t == nil {
		c.s.stats.authFailures.Add(1)
		c.s.log.Info("text protocol auth failed", "remote", c.remote)
		c.send(appendResult(nil, codeUnauthorized, r.opaque, "the token is not valid; check the token configured for your service; closing the connection"))
		c.linger = true
		return false
	}
	c.token, c.authed = t, true
	c.send(appendResult(nil, codeOK, r.opaque, "authenticated as "+t.Name))
	return true
}

// allowed checks the connection's token for need on topic, answering 403 when it lacks it.
func (c *conn) allowed(need right, topic string, opaque int64) bool {
	if allows(c.token, need, topic) {
		return true
	}
	on := " right on topic " + strconv.Quote(topic)
	if need == rightProducer {
		on = " right that the transaction verbs need"
	}
	c.send(appendResult(nil, codeForbidden, opaque, "token "+strconv.Quote(c.token.Name)+" lacks the "+need.String()+
		on+"; ask an operator to extend its patterns"))
	return false
}

// pendingPut is one put of a batch; its key and value are ranges of the batch's arena.
type pendingPut struct {
	opaque    int64
	partition int
	flag      uint32
	start     int // payload in the arena
	end       int
	err       error // set when the put is answered without running
	pos       broker.Position
}

// putBatch holds the pipelined puts of one topic that go to the broker as one Produce.
type putBatch struct {
	topic string
	puts  []pendingPut
	arena []byte
	msgs  []broker.Message
	idx   []int // msgs[i] belongs to puts[idx[i]]
}

// Limits of one batch.
const (
	maxBatchPuts  = 1024
	maxBatchBytes = 4 << 20
)

// put runs a put and, when it is outside a transaction, the puts of the same topic that the
// client has already pipelined behind it, as one Produce.
func (c *conn) put(r request) bool {
	c.s.stats.cmdPut.Add(1)
	if r.txkey != "" {
		return c.txPut(r)
	}
	b := &c.puts
	b.topic, b.puts = r.topic, b.puts[:0]
	var stop, keep bool
	if b.arena, stop, keep = c.readPutPayload(b.arena[:0], r); stop {
		return keep
	}
	b.puts = append(b.puts, pendingPut{opaque: r.opaque, partition: r.partition, flag: r.flag, start: 0, end: len(b.arena)})
	for len(b.puts) < maxBatchPuts && len(b.arena) < maxBatchBytes && c.nextPut(b) {
	}
	c.producePuts(b)
	return true
}

// readPutPayload appends a put's payload to dst and checks the token's produce right. When
// the put cannot run, stop is true and keep is what handle reports: a missing right has been
// answered (keep true); a truncated payload has been answered and ends the connection, as
// does any other read error.
func (c *conn) readPutPayload(dst []byte, r request) (_ []byte, stop, keep bool) {
	dst, got, err := c.readPayload(dst, r.length)
	switch {
	case errors.Is(err, errTruncated):
		return dst, true, c.truncated(r, got)
	case err != nil:
		return dst, true, false
	}
	if !c.allowed(rightProduce, r.topic, r.opaque) {
		c.s.stats.putFailed.Add(1)
		return dst, true, true
	}
	return dst, false, true
}

// nextPut adds the next request to the batch when it is a put for the batch's topic outside a
// transaction that has fully arrived (line and payload). Anything else is left for the
// normal path. It skips the blank lines before it as handle does, and only those: a put must
// mean the same whether or not it arrived behind another one.
func (c *conn) nextPut(b *putBatch) bool {
	buf, _ := c.br.Peek(c.br.Buffered())
	skip := 0
	for !bytes.HasPrefix(buf[skip:], []byte("put ")) {
		i := bytes.IndexByte(buf[skip:], '\n')
		if i < 0 || i+1 > c.s.opts.MaxLineBytes || !blankLine(buf[skip:skip+i]) {
			return false
		}
		skip += i + 1
	}
	buf = buf[skip:]
	i := bytes.IndexByte(buf, '\n')
	if i < 0 || i+1 > c.s.opts.MaxLineBytes {
		return false
	}
	r, err := parseLine(buf[:i+1])
	if err != nil || r.cmd != cmdPut || r.txkey != "" || r.topic != b.topic || r.length > c.s.opts.MaxPayloadBytes ||
		len(buf) < i+1+r.length {
		return false
	}
	c.br.Discard(skip + i + 1)
	c.s.stats.bytesIn.Add(int64(skip + i + 1))
	c.s.stats.cmdPut.Add(1)
	start := len(b.arena)
	b.arena, _, _ = c.readPayload(b.arena, r.length) // fully buffered: cannot fail
	b.puts = append(b.puts, pendingPut{opaque: r.opaque, partition: r.partition, flag: r.flag, start: start, end: len(b.arena)})
	return true
}

// blankLine reports whether a request line (without its "\n") is one that handle ignores: one
// that parseLine finds empty.
func blankLine(line []byte) bool {
	r, err := parseLine(line)
	return r.cmd == cmdNone && err == nil
}

// message builds the broker message of a put from its payload and flag.
func putMessage(payload []byte, flag uint32, partition int) (broker.Message, error) {
	m := broker.Message{Partition: partition, Value: payload}
	if flag&FlagKey != 0 {
		if len(payload) < 4 {
			return m, fail(codeBadRequest, "flag %d says the payload starts with a key, but the payload has only %d bytes; it must start with a 4-byte big-endian key length", flag, len(payload))
		}
		kl := binary.BigEndian.Uint32(payload)
		if int64(kl) > int64(len(payload)-4) {
			return m, fail(codeBadRequest, "key length %d is longer than the %d bytes after it in the payload", kl, len(payload)-4)
		}
		m.Key = payload[4 : 4+kl : 4+kl]
		m.Value = payload[4+kl:]
	}
	if flag&FlagJSON != 0 {
		// JSON text is UTF-8 (RFC 8259), and json.Valid does not check it inside strings: a
		// value with other bytes would make the HTTP door's fetch answer invalid JSON.
		if !utf8.Valid(m.Value) {
			return m, fail(codeBadRequest, "flag %d says the value is JSON text, but it is not valid UTF-8; send JSON as UTF-8, or the bytes without the JSON flag", flag)
		}
		if !json.Valid(m.Value) {
			return m, fail(codeBadRequest, "flag %d says the value is JSON text, but it is not valid JSON", flag)
		}
		m.Value = jsontext.Compact(m.Value) // stored compact, as the HTTP door stores it
		m.ValueJSON = true
	}
	return m, nil
}

// producePuts appends the batch and answers each put in order.
func (c *conn) producePuts(b *putBatch) {
	b.msgs, b.idx = b.msgs[:0], b.idx[:0]
	for i := range b.puts {
		p := &b.puts[i]
		m, err := putMessage(b.arena[p.start:p.end], p.flag, p.partition)
		if err != nil {
			p.err = err
			continue
		}
		b.msgs = append(b.msgs, m)
		b.idx = append(b.idx, i)
	}
	if len(b.msgs) > 0 {
		res, err := c.s.b.Produce(c.s.ctx, b.topic, b.msgs, "")
		switch {
		case err == nil:
			for j, pos := range res.Offsets {
				b.puts[b.idx[j]].pos = pos
			}
		case len(b.msgs) > 1 && perMessage(err):
			// One message spoiled the batch (nothing was appended): run each alone so that
			// the others succeed and the culprit gets its own answer.
			for j := range b.msgs {
				one, err := c.s.b.Produce(c.s.ctx, b.topic, b.msgs[j:j+1], "")
				if err != nil {
					b.puts[b.idx[j]].err = err
				} else {
					b.puts[b.idx[j]].pos = one.Offsets[0]
				}
			}
		default:
			for _, i := range b.idx {
				b.puts[i].err = err
			}
		}
	}
	ans := make([]byte, 0, len(b.puts)*40)
	for i := range b.puts {
		p := &b.puts[i]
		if p.err != nil {
			c.s.stats.putFailed.Add(1)
			f := failureFor(p.err)
			if f.code >= 500 && f.code != codeUnavailable {
				c.s.log.Error("text protocol put failed", "remote", c.remote, "topic", b.topic, "err", p.err)
			}
			ans = appendResult(ans, f.code, p.opaque, f.text)
			continue
		}
		ans = appendPutResult(ans, p.opaque, p.pos.Partition, p.pos.Offset)
	}
	c.send(ans)
	for i := range b.msgs {
		b.msgs[i] = broker.Message{} // do not keep payloads alive through the scratch slice
	}
}

// perMessage reports whether a Produce error may belong to one message of a batch.
func perMessage(err error) bool {
	return errors.Is(err, broker.ErrMessageTooLarge) || errors.Is(err, broker.ErrInvalidArgument) ||
		errors.Is(err, broker.ErrUnknownPartition)
}

// get reads messages by offset. The group is checked and counted; MetaQ's get reads the
// offset it is given, not the group's committed one.
func (c *conn) get(r request) {
	c.s.stats.cmdGet.Add(1)
	if !c.allowed(rightConsume, r.topic, r.opaque) {
		return
	}
	maxBytes := min(r.maxBytes, c.s.opts.MaxGetBytes)
	res, err := c.s.b.Fetch(c.s.ctx, r.topic, r.partition, broker.FetchOptions{
		Offset: r.offset, MaxBytes: maxBytes, MaxMessages: maxGetMessages(maxBytes)})
	if err != nil {
		c.s.stats.getMiss.Add(1)
		c.answerErr(r.opaque, err)
		return
	}
	size := 0
	for i := range res.Messages {
		size += frameSize(&res.Messages[i])
	}
	if size == 0 {
		c.s.stats.getMiss.Add(1)
	} else {
		c.s.stats.getHits.Add(1)
		c.s.stats.getMessages.Add(int64(len(res.Messages)))
	}
	ans := make([]byte, 0, maxAnswerHeaderSize+size+len(answerTrailer))
	ans = append(ans, "value "...)
	ans = strconv.AppendInt(ans, int64(size), 10)
	ans = append(ans, ' ')
	ans = strconv.AppendInt(ans, r.opaque, 10)
	ans = append(ans, "\r\n"...)
	for i := range res.Messages {
		ans = appendFrame(ans, &res.Messages[i])
	}
	c.send(append(ans, answerTrailer...))
}

// maxGetMessages bounds the message count of a get: the smallest record is 43 bytes.
func maxGetMessages(maxBytes int) int { return min(max(maxBytes/43, 1), 100000) }

// commitOffset commits a group's offset through the OffsetStore.
func (c *conn) commitOffset(r request) {
	c.s.stats.cmdOffset.Add(1)
	if !c.allowed(rightConsume, r.topic, r.opaque) {
		return
	}
	if c.s.opts.Offsets == nil {
		c.send(appendResult(nil, codeUnavailable, r.opaque, "no offset store is configured on this server"))
		return
	}
	ti, err := c.s.b.Topic(r.topic)
	if err != nil {
		c.answerErr(r.opaque, err)
		return
	}
	if r.partition >= len(ti.Partitions) {
		c.answerErr(r.opaque, fail(codeNotFound, "unknown partition: topic %q has partitions 0..%d, not %d", r.topic, len(ti.Partitions)-1, r.partition))
		return
	}
	if p := ti.Partitions[r.partition]; r.offset > p.EndOffset {
		c.answerErr(r.opaque, fail(codeOutOfRange, "offset %d is past the end offset %d of %s/%d; commit the next offset to read, at most the end",
			r.offset, p.EndOffset, r.topic, r.partition))
		return
	}
	if err := c.s.opts.Offsets.CommitOffset(c.s.ctx, r.group, r.topic, r.partition, r.offset); err != nil {
		c.s.log.Warn("offset commit failed", "group", r.group, "topic", r.topic, "partition", r.partition, "offset", r.offset, "err", err)
		c.answerErr(r.opaque, fail(codeUnavailable, "the offset store failed: %v", err))
		return
	}
	c.send(appendResult(nil, codeOK, r.opaque, "ok"))
}
