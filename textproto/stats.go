package textproto

import (
	"sort"
	"strconv"
	"sync/atomic"
	"time"
)

// counters are the door's own statistics; every field is updated atomically.
type counters struct {
	currConns, totalConns, rejected                     atomic.Int64
	cmdPut, cmdGet, cmdOffset, cmdTransaction, cmdStats atomic.Int64
	putFailed, getHits, getMiss, getMessages            atomic.Int64
	badRequests, authFailures                           atomic.Int64
	bytesIn, bytesOut                                   atomic.Int64
}

// statsHelp is the answer of "stats help": each item and what it shows.
var statsHelp = [][2]string{
	{"(none)", "the server: pid, broker_id, version, uptime, time, connections, command counts, bytes, fsyncs, topics, partitions"},
	{"topics", "a line per topic: partitions=<n>,messages=<n>,bytes=<n>"},
	{"offsets", "a line per partition <topic>:<partition>: start=<offset>,end=<offset>"},
	{"groups", "a line per <group>:<topic>:<partition>: offset=<committed>,lag=<end-committed>"},
	{"transactions", "open, prepared, heuristic, committed, rolled_back, timed_out, oldest_prepared_age_s"},
	{"help", "this list"},
}

// stat is one "STAT <name> <value>" line.
type stat struct{ name, value string }

func (c *conn) statsCmd(r request) {
	c.s.stats.cmdStats.Add(1)
	var lines []stat
	switch r.item {
	case "":
		lines = c.s.generalStats()
	case "topics":
		lines = c.s.topicStats()
	case "offsets":
		lines = c.s.offsetStats()
	case "groups":
		var err error
		if lines, err = c.s.groupStats(); err != nil {
			c.answerErr(r.opaque, fail(codeUnavailable, "the offset store failed: %v", err))
			return
		}
	case "transactions":
		lines = c.s.transactionStats()
	case "help":
		for _, h := range statsHelp {
			lines = append(lines, stat{h[0], h[1]})
		}
	default:
		c.answerErr(r.opaque, fail(codeBadRequest, "unknown stats item %s; the items are topics, offsets, groups, transactions and help", quoteWord(r.item)))
		return
	}
	c.send(appendResult(nil, codeOK, r.opaque, string(appendStats(nil, lines))))
}

// appendStats formats lines in memcached's shape: "STAT <name> <value>\r\n" each, then "END\r\n".
func appendStats(dst []byte, lines []stat) []byte {
	for _, l := range lines {
		dst = append(dst, "STAT "...)
		dst = append(dst, l.name...)
		dst = append(dst, ' ')
		dst = append(dst, l.value...)
		dst = append(dst, "\r\n"...)
	}
	return append(dst, "END\r\n"...)
}

func i64(n int64) string { return strconv.FormatInt(n, 10) }

// generalStats is the answer of "stats" without an item.
func (s *Server) generalStats() []stat {
	bs := s.b.Stats()
	now := time.Now()
	var p99 time.Duration
	if s.opts.FsyncP99 != nil {
		p99 = s.opts.FsyncP99()
	}
	c := &s.stats
	return []stat{
		{"pid", strconv.Itoa(s.pid)},
		{"broker_id", strconv.Itoa(s.opts.BrokerID)},
		{"version", s.opts.Version},
		{"uptime", i64(int64(now.Sub(s.started) / time.Second))},
		{"time", i64(now.Unix())},
		{"curr_connections", i64(c.currConns.Load())},
		{"total_connections", i64(c.totalConns.Load())},
		{"rejected_connections", i64(c.rejected.Load())},
		{"cmd_put", i64(c.cmdPut.Load())},
		{"cmd_get", i64(c.cmdGet.Load())},
		{"cmd_offset", i64(c.cmdOffset.Load())},
		{"cmd_transaction", i64(c.cmdTransaction.Load())},
		{"cmd_stats", i64(c.cmdStats.Load())},
		{"put_failed", i64(c.putFailed.Load())},
		{"get_hits", i64(c.getHits.Load())},
		{"get_miss", i64(c.getMiss.Load())},
		{"get_messages", i64(c.getMessages.Load())},
		{"bad_requests", i64(c.badRequests.Load())},
		{"auth_failures", i64(c.authFailures.Load())},
		{"bytes_in", i64(c.bytesIn.Load())},
		{"bytes_out", i64(c.bytesOut.Load())},
		{"broker_messages_in", i64(bs.MessagesIn)},
		{"broker_messages_out", i64(bs.MessagesOut)},
		{"broker_log_bytes", i64(bs.LogBytes)},
		{"broker_pending_bytes", i64(bs.PendingBytes)},
		{"fsync_count", i64(bs.Fsyncs)},
		{"fsync_p99_us", i64(p99.Microseconds())},
		{"topics", strconv.Itoa(bs.Topics)},
		{"partitions", strconv.Itoa(bs.Partitions)},
	}
}

func (s *Server) topicStats() []stat {
	var out []stat
	for _, t := range s.b.Topics() {
		var msgs, bytes int64
		for _, p := range t.Partitions {
			msgs += p.EndOffset - p.StartOffset
			bytes += p.Bytes
		}
		out = append(out, stat{t.Name, "partitions=" + strconv.Itoa(len(t.Partitions)) + ",messages=" + i64(msgs) + ",bytes=" + i64(bytes)})
	}
	return out
}

func (s *Server) offsetStats() []stat {
	var out []stat
	for _, t := range s.b.Topics() {
		for _, p := range t.Partitions {
			out = append(out, stat{t.Name + ":" + strconv.Itoa(p.Partition), "start=" + i64(p.StartOffset) + ",end=" + i64(p.EndOffset)})
		}
	}
	return out
}

func (s *Server) groupStats() ([]stat, error) {
	if s.opts.Offsets == nil {
		return nil, nil
	}
	offs, err := s.opts.Offsets.GroupOffsets(s.ctx)
	if err != nil {
		return nil, err
	}
	sort.Slice(offs, func(i, j int) bool {
		a, b := offs[i], offs[j]
		if a.Group != b.Group {
			return a.Group < b.Group
		}
		if a.Topic != b.Topic {
			return a.Topic < b.Topic
		}
		return a.Partition < b.Partition
	})
	ends := map[string][]int64{}
	out := make([]stat, 0, len(offs))
	for _, o := range offs {
		e, ok := ends[o.Topic]
		if !ok {
			if ti, err := s.b.Topic(o.Topic); err == nil {
				for _, p := range ti.Partitions {
					e = append(e, p.EndOffset)
				}
			}
			ends[o.Topic] = e
		}
		lag := "-" // the topic or partition is gone
		if o.Partition < len(e) {
			lag = i64(max(e[o.Partition]-o.Next, 0))
		}
		out = append(out, stat{o.Group + ":" + o.Topic + ":" + strconv.Itoa(o.Partition), "offset=" + i64(o.Next) + ",lag=" + lag})
	}
	return out, nil
}

func (s *Server) transactionStats() []stat {
	n := s.txCounts()
	return []stat{
		{"open", strconv.Itoa(n.open)},
		{"prepared", strconv.Itoa(n.prepared)},
		{"heuristic", strconv.Itoa(n.heuristic)},
		{"committed", i64(n.committed)},
		{"rolled_back", i64(n.rolledBack)},
		{"timed_out", i64(n.timeout)},
		{"oldest_prepared_age_s", i64(int64(n.oldestPrepared / time.Second))},
	}
}
