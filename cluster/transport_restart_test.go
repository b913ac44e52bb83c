package cluster

import (
	"context"
	"net"
	"testing"
	"time"

	pb "go.etcd.io/raft/v3/raftpb"

	"github.com/imagomq/imago/internal/testenv"
)

// A peer that restarts (kill -9 and start, the same address) must get the next message sent
// to it. Node 1's connection to the old process is dead (its peer closed it), but a writer
// that only writes does not see that until a write fails, and the first write after the
// restart goes into the dead connection and is lost. Between followers, whose links are idle
// until an election, that is the first pre-vote after a failover: found by the three-process
// cluster test (TestClusterKillLeader: after the previous leader was restarted, the pre-vote
// messages from one follower to it were lost for two election rounds, and writes resumed only
// 3.3 s after the kill).
func TestTransportDeliversFirstMessageAfterPeerRestart(t *testing.T) {
	// Outside the ephemeral range (testenv.FreeAddr), so that no outgoing connection takes the
	// port while node 2 is down.
	ln, err := net.Listen("tcp", testenv.FreeAddr(t))
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	start2 := func(ln net.Listener) (*Transport, *countingHandler) {
		tr, err := NewTransport(TransportConfig{ID: 2, Listener: ln, Peers: map[uint64]string{1: "127.0.0.1:1"}, Logger: quietLogger()})
		if err != nil {
			t.Fatal(err)
		}
		h := &countingHandler{stepped: make(chan *pb.Message, 16)}
		tr.Start(context.Background(), h)
		return tr, h
	}
	tr2, h2 := start2(ln)
	tr1, err := NewTransport(TransportConfig{ID: 1, Listen: "127.0.0.1:0", Peers: map[uint64]string{2: addr}, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	tr1.Start(context.Background(), &countingHandler{stepped: make(chan *pb.Message, 16)})
	defer tr1.Stop()
	msg := func() []*pb.Message {
		return []*pb.Message{{Type: pb.MsgPreVote.Enum(), To: new(uint64(2)), From: new(uint64(1))}}
	}
	tr1.Send(msg())
	select {
	case <-h2.stepped:
	case <-time.After(5 * time.Second):
		t.Fatal("the first message never arrived")
	}

	// Node 2 goes away and comes back on the same address.
	tr2.Stop()
	deadline := time.Now().Add(time.Second)
	for tr1.Connected(2) && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond) // give node 1 every chance to notice the close
	}
	ln2, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("address %s taken meanwhile: %v", addr, err)
	}
	tr2, h2 = start2(ln2)
	defer tr2.Stop()

	tr1.Send(msg())
	select {
	case <-h2.stepped:
	case <-time.After(3 * time.Second):
		t.Fatal("the first message to a restarted peer was lost: the writer wrote it into the connection the old process had closed")
	}
}
