package cluster

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"time"
)

// The join question. A node that starts with --join-cluster and a data directory without raft
// state may be a new machine or one whose directory was wiped; only the group can tell, so
// before its raft node runs it asks the members what they know of its id, and starts only if
// the leader answers that the id is new (replica.Start decides). The question travels on the
// raft port like a snapshot file request: a hello of version helloJoin (from: the asking id,
// to: the member asked), one request frame and one answer frame, both JSON; over mutual TLS
// when the members' transports have it (AskJoin's peerTLS).

// helloJoin is the hello version of a join question.
const helloJoin = 3

// JoinInfo is a member's answer to the join question about id.
type JoinInfo struct {
	// Leader is the leader the answering member knows of (0: none), LeaderAddr its raft
	// address (empty when unknown), so the asking node can put the question to it.
	Leader     uint64 `json:"leader"`
	LeaderAddr string `json:"leader_addr,omitempty"`
	// Confirmed: the answering member is the serving leader and confirmed its leadership
	// with a quorum (a read barrier) after the question arrived, then read the fields below;
	// they hold every membership change committed before the question. Without it they are
	// not set.
	Confirmed bool `json:"confirmed"`
	Voter     bool `json:"voter,omitempty"`
	Learner   bool `json:"learner,omitempty"`
	// Removed: the id was a member and was removed (ids are never reused).
	Removed bool `json:"removed,omitempty"`
	// Match is the last index the leader knows the id to hold: more than 0 when a node under
	// this id has already acknowledged entries of this leader.
	Match uint64 `json:"match,omitempty"`
	// Error says why the member could not answer.
	Error string `json:"error,omitempty"`
}

// JoinSource answers the join question about id (TransportConfig.Join). ctx ends when the
// transport stops or the asking node could wait no longer.
type JoinSource func(ctx context.Context, id uint64) JoinInfo

type joinRequest struct {
	ID uint64 `json:"id"`
}

// joinAnswerTimeout bounds how long a member takes to answer (its read barrier).
const joinAnswerTimeout = 5 * time.Second

// serveJoin answers one join question (req, the request frame) on c.
func (t *Transport) serveJoin(c net.Conn, from uint64, req []byte) {
	var jr joinRequest
	var ans JoinInfo
	switch err := json.Unmarshal(req, &jr); {
	case err != nil:
		ans.Error = "bad request: " + err.Error()
	case jr.ID != from:
		ans.Error = fmt.Sprintf("the question is about node %d, asked by node %d", jr.ID, from)
	case t.cfg.Join == nil:
		ans.Error = "this node answers no join questions"
	default:
		ctx, cancel := context.WithTimeout(t.ctx, joinAnswerTimeout)
		ans = t.cfg.Join(ctx, jr.ID)
		cancel()
	}
	c.SetWriteDeadline(time.Now().Add(t.cfg.WriteTimeout))
	w := bufio.NewWriter(c)
	if err := writeFrame(w, ans); err == nil {
		_ = w.Flush()
	}
}

// AskJoin asks the member peerID, listening on addr, what the group knows of id; id is the
// asking node's own id. With peerTLS (the same as the transport's, TransportConfig.TLS) the
// question goes over mutual TLS; nil: plain TCP. It fails when the member cannot be reached
// or does not answer before ctx ends.
func AskJoin(ctx context.Context, peerTLS *PeerTLS, id, peerID uint64, addr string) (JoinInfo, error) {
	fail := func(err error) (JoinInfo, error) {
		return JoinInfo{}, fmt.Errorf("ask node %d (%s) about joining: %w", peerID, addr, err)
	}
	conn, err := dialPeer(ctx, peerTLS, addr, 0)
	if err != nil {
		return fail(err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	hello := []byte(helloMagic)
	hello = append(hello, helloJoin)
	hello = binary.BigEndian.AppendUint64(hello, id)
	hello = binary.BigEndian.AppendUint64(hello, peerID)
	bw := bufio.NewWriter(conn)
	bw.Write(hello)
	if err := writeFrame(bw, joinRequest{ID: id}); err != nil {
		return fail(err)
	}
	if err := bw.Flush(); err != nil {
		return fail(err)
	}
	r := bufio.NewReader(conn)
	var lenBuf [4]byte
	if _, err := io.ReadFull(r, lenBuf[:]); err != nil {
		if ctx.Err() != nil {
			return fail(ctx.Err())
		}
		return fail(fmt.Errorf("no answer (a member of an older version closes the connection): %w", err))
	}
	n := binary.BigEndian.Uint32(lenBuf[:])
	if n > 1<<20 {
		return fail(fmt.Errorf("answer of %d bytes", n))
	}
	raw := make([]byte, n)
	if _, err := io.ReadFull(r, raw); err != nil {
		return fail(err)
	}
	var ans JoinInfo
	if err := json.Unmarshal(raw, &ans); err != nil {
		return fail(err)
	}
	return ans, nil
}
