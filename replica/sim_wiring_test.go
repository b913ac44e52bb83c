package replica

import (
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// The simulation's stand-ins for the transport, the applier and the proposer (sim_test.go).

// simSender puts a node's messages on the simulated network, marshalled as the wire would.
type simSender struct {
	s    *sim
	from uint64
}

func (ss simSender) Send(msgs []*pb.Message) {
	s := ss.s
	for _, m := range msgs {
		b, err := proto.Marshal(m)
		if err != nil {
			s.fatalf("marshal: %v", err)
		}
		s.net = append(s.net, simMsg{from: ss.from, to: m.GetTo(), data: b, at: s.now + s.rng.IntN(3)})
		if m.GetType() == pb.MessageType_MsgSnap {
			// As the transport does: a snapshot on its way counts as sent (reported to the
			// sender's raft before its next round, not inside this one).
			s.snapSent = append(s.snapSent, [2]uint64{ss.from, m.GetTo()})
		}
	}
}

// simApplier checks every application against the first application of that index anywhere,
// then applies it to the broker.
type simApplier struct {
	s     *sim
	nd    *simNode
	inner applier
}

func (a simApplier) Apply(index, term uint64, data []byte) error {
	s := a.s
	if c, ok := s.applied[index]; ok {
		if c.term != term || c.data != string(data) {
			s.fatalf("node %d applies index %d term %d (%d bytes); another node applied term %d (%d bytes)",
				a.nd.id, index, term, len(data), c.term, len(c.data))
		}
	} else {
		s.applied[index] = appliedEntry{term: term, data: string(data)}
		s.maxIndex = max(s.maxIndex, index)
	}
	if err := a.inner.Apply(index, term, data); err != nil {
		if s.diskOf(a.nd) == diskDead {
			return err // a storage error: the node stops, the power is gone
		}
		s.fatalf("node %d: apply entry %d term %d: %v", a.nd.id, index, term, err)
	}
	return nil
}

// simProposer is the broker's Proposer: replica's proposer, with each entry's outcome passed
// through a link the simulation forwards, and a report to the simulation once raft answered.
type simProposer struct {
	s     *sim
	inner proposer
}

func (p simProposer) Serving() (uint64, bool) { return p.inner.Serving() }

func (p simProposer) Propose(term uint64, entries [][]byte, outs []chan<- error) error {
	ins := make([]chan<- error, len(entries))
	var links []*link
	for i := range entries {
		in := make(chan error, 1)
		ins[i] = in
		links = append(links, &link{in: in, out: outs[i]})
	}
	err := p.inner.Propose(term, entries, ins)
	if err != nil {
		links = nil // nothing proposed: nothing will come to forward
	}
	p.s.proposed <- proposed{links: links, err: err}
	return err
}
