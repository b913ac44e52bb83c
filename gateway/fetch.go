package gateway

import (
	"context"
	"errors"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/imagomq/imago/api"
	"github.com/imagomq/imago/broker"
	"github.com/imagomq/imago/groups"
)

// This file holds GET /v1/topics/{topic}/partitions/{partition}/messages: pull with
// long-poll.
//
// Parameters: offset (required: a consumer always says where it is, so a forgotten offset
// never replays a partition by accident), max_messages (1..10000, default 100), max_bytes
// (1..64 MiB, default 1 MiB; at least one message is returned even when it is larger),
// wait_ms (0..Options.MaxWait, default 0). Unknown parameters are ignored.

const (
	defaultMaxMessages = 100
	maxMaxMessages     = 10000
	defaultMaxBytes    = 1 << 20
	maxMaxBytes        = 64 << 20
)

// fetchParams are a fetch's parameters: its offset and the bounds it shares with a member's
// poll.
type fetchParams struct {
	offset int64
	pollParams
}

// parseFetchQuery parses a fetch's query string; offset is required.
func (s *Server) parseFetchQuery(raw string) (fetchParams, error) {
	return s.parseReadQuery(raw, true)
}

// parsePollQuery parses max_messages, max_bytes, wait_ms, position and positions_complete of
// a member's poll (a poll reads at the member's cursors: offset is ignored like any unknown
// parameter).
func (s *Server) parsePollQuery(raw string) (pollParams, error) {
	p, err := s.parseReadQuery(raw, false)
	return p.pollParams, err
}

// addPosition adds one position parameter of a poll, "<topic>:<partition>:<offset>": where
// the client is in a partition (the next offset it expects). See groups.Limits.
func (p *pollParams) addPosition(v string) error {
	topic, rest, ok1 := strings.Cut(v, ":")
	part, off, ok2 := strings.Cut(rest, ":")
	if !ok1 || !ok2 {
		return paramError("position", "must be <topic>:<partition>:<offset> (the next offset the client expects), not %q", v)
	}
	if !broker.ValidName(topic) {
		return paramError("position", "names an invalid topic %q: a topic matches ^[A-Za-z0-9._-]{1,249}$", topic)
	}
	pn, err := strconv.ParseInt(part, 10, 32)
	if err != nil || pn < 0 {
		return paramError("position", "has partition %q in %q: want an integer from 0", part, v)
	}
	on, err := strconv.ParseInt(off, 10, 64)
	if err != nil || on < 0 {
		return paramError("position", "has offset %q in %q: want an integer from 0", off, v)
	}
	if p.positions == nil {
		p.positions = map[groups.Partition]int64{}
	}
	key := groups.Partition{Topic: topic, Partition: int(pn)}
	if _, dup := p.positions[key]; dup {
		return paramError("position", "names partition %d of topic %q twice; send one position per partition", pn, topic)
	}
	p.positions[key] = on
	return nil
}

// parseReadQuery parses the query string of a fetch (withOffset) or a poll by hand (no
// url.Values map per request).
func (s *Server) parseReadQuery(raw string, withOffset bool) (fetchParams, error) {
	p := fetchParams{offset: -1, pollParams: pollParams{maxMessages: defaultMaxMessages, maxBytes: defaultMaxBytes}}
	var seen [4]bool
	seenComplete := false
	for raw != "" {
		var kv string
		kv, raw, _ = strings.Cut(raw, "&")
		if kv == "" {
			continue
		}
		k, v, _ := strings.Cut(kv, "=")
		if strings.ContainsAny(k, "%+") || strings.ContainsAny(v, "%+") {
			var err error
			if k, err = url.QueryUnescape(k); err != nil {
				return p, newError(http.StatusBadRequest, api.CodeInvalidParameter, "the query string is malformed: %v", err)
			}
			if v, err = url.QueryUnescape(v); err != nil {
				return p, newError(http.StatusBadRequest, api.CodeInvalidParameter, "the query string is malformed: %v", err)
			}
		}
		idx := -1
		var lo, hi int64
		switch {
		case k == "offset" && withOffset:
			idx, lo, hi = 0, 0, math.MaxInt64
		case k == "max_messages":
			idx, lo, hi = 1, 1, maxMaxMessages
		case k == "max_bytes":
			idx, lo, hi = 2, 1, maxMaxBytes
		case k == "wait_ms":
			idx, lo, hi = 3, 0, s.opts.MaxWait.Milliseconds()
		case k == "position" && !withOffset:
			if err := p.addPosition(v); err != nil {
				return p, err
			}
			continue
		case k == "positions_complete" && !withOffset:
			if seenComplete {
				return p, paramError(k, "appears twice; send it once")
			}
			seenComplete = true
			switch v {
			case "true":
				p.positionsComplete = true
			case "false":
			default:
				return p, paramError(k, "must be true or false, not %q", v)
			}
			continue
		default:
			continue
		}
		if seen[idx] {
			return p, paramError(k, "appears twice; send it once")
		}
		seen[idx] = true
		n, err := parseBounded(k, v, lo, hi)
		if err != nil {
			return p, err
		}
		switch idx {
		case 0:
			p.offset = n
		case 1:
			p.maxMessages = int(n)
		case 2:
			p.maxBytes = int(n)
		case 3:
			p.wait = time.Duration(n) * time.Millisecond
		}
	}
	if withOffset && !seen[0] {
		return p, paramError("offset", "is required: add ?offset=N (GET /v1/topics/{topic} shows each partition's start_offset and end_offset)")
	}
	return p, nil
}

// parseBounded parses a decimal integer in [lo, hi].
func parseBounded(name, v string, lo, hi int64) (int64, error) {
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		var ne *strconv.NumError
		if errors.As(err, &ne) && ne.Err == strconv.ErrRange && v != "" && v[0] != '-' {
			return 0, paramError(name, "is too large: %q; the maximum is %d", v, hi)
		}
		return 0, paramError(name, "must be an integer between %d and %d, not %q", lo, hi, v)
	}
	if n < lo || n > hi {
		return 0, paramError(name, "must be between %d and %d, not %d", lo, hi, n)
	}
	return n, nil
}

func partitionParam(r *http.Request) (int, error) {
	v := chi.URLParam(r, "partition")
	n, err := parseBounded("partition", v, 0, math.MaxInt32)
	if err != nil {
		return 0, err
	}
	return int(n), nil
}

func (s *Server) handleFetch(w http.ResponseWriter, r *http.Request) error {
	topic, err := nameParam(r, "topic")
	if err != nil {
		return err
	}
	partition, err := partitionParam(r)
	if err != nil {
		return err
	}
	q, err := s.parseFetchQuery(r.URL.RawQuery)
	if err != nil {
		return err
	}
	fo := broker.FetchOptions{Offset: q.offset, MaxMessages: q.maxMessages, MaxBytes: q.maxBytes, Wait: q.wait}
	ctx := r.Context()
	if q.wait > 0 {
		// A long poll also ends when the server closes, so shutdown does not wait it out.
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(ctx)
		defer cancel()
		stop := context.AfterFunc(s.closing, cancel)
		defer stop()
	}
	res, err := s.b.Fetch(ctx, topic, partition, fo)
	if err != nil && q.wait > 0 && ctx.Err() != nil && r.Context().Err() == nil {
		// The server is closing: answer with what is there now.
		fo.Wait = 0
		res, err = s.b.Fetch(r.Context(), topic, partition, fo)
	}
	if err != nil {
		if errors.Is(err, broker.ErrUnknownTopic) {
			return unknownTopicError(topic)
		}
		if errors.Is(err, broker.ErrUnknownPartition) {
			return newError(http.StatusNotFound, api.CodeUnknownPartition,
				"topic %q has no partition %d; GET /v1/topics/%s lists its partitions", topic, partition, topic)
		}
		return err
	}
	out := getBuf()
	defer putBuf(out)
	*out = appendFetchResponse(*out, topic, partition, res)
	writeBody(w, http.StatusOK, *out)
	return nil
}
