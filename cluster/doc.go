// Package cluster replicates Imago's shared commit log across three machines with etcd's raft
// library (go.etcd.io/raft/v3). It owns one raft group of three voters and everything between
// that group and the disk and the network: the storage adapter, the Ready loop, the peer
// transport. It decides nothing about topics, offsets or transactions; those change only when
// a committed entry is applied, through the Applier the caller gives it.
//
// # Ordering rules
//
// Raft is only as safe as the order in which its output is made durable and sent. The Ready
// loop (node.go) is one goroutine that handles each Ready in this order:
//
//  1. Entries are appended to the LogStore (a conflicting suffix is truncated first), then the
//     HardState is written if its term or vote changed, then the LogStore is synced: one write
//     and one fsync per round, however many proposals the round carries.
//  2. Messages are sent only after that sync. An append response or a vote therefore never
//     leaves a node before the entries and the term/vote it vouches for are on its disk.
//     The one exception is the one raft allows: while the node is leader and the round does not
//     change its term or vote, its messages (appends to followers, heartbeats) leave before its
//     own write, so followers write in parallel with the leader. The leader still counts itself
//     toward a quorum only after its own fsync: raft delivers its self-acknowledgement at
//     Advance, which comes after the sync.
//  3. Committed entries are applied, in index order, through Applier.Apply. Apply is the only
//     place state changes, on every node alike, so an uncommitted suffix that a new leader
//     truncates never has to be undone. An Apply error (for example an offset that does not
//     match what the leader assigned) stops the node loudly: it is logged, Err reports it, and
//     the node takes no further part in the group.
//  4. Advance.
//
// A leader overlaps its rounds (overlap.go): it syncs on a goroutine and meanwhile steps the
// acknowledgements of its previous round, applies what they commit of the entries already
// durable on its disk, and takes new proposal groups into raft for the next round.
//
// The HardState file is rewritten (atomically, with fsutil.WriteFileAtomic) only when the term
// or the vote changes; the commit index stored with it is a lower bound. Raft does not need the
// commit index to be durable: a restarted node learns it again from the leader, and the node
// raises it to the applied index it is given at start.
//
// # Safety settings
//
// PreVote and CheckQuorum are on: a partitioned node cannot disrupt the group when it returns,
// and a leader that cannot reach a quorum steps down. Followers do not forward proposals
// (DisableProposalForwarding): Propose on a follower returns ErrNotLeader, and the caller forwards
// the request to the leader itself, where it can tell the client what happened. Reads that
// decide something use ReadOnlySafe (a quorum round, never a lease). There is no unclean
// election and no mode that degrades to unreplicated writes: without a quorum nothing commits.
//
// A new leader does not know what earlier leaders committed until it has applied an entry of
// its own term (the empty entry raft commits on election). Status.Serving turns true only then;
// writes that assign offsets from applied state wait for it.
//
// A proposal is identified by the index and term the leader gave it. Propose returns when the
// entry is applied; if the node loses leadership (or its term changes) before that, the entry
// may or may not commit, and Propose returns ErrOutcomeUnknown so the caller answers
// outcome_unknown and the client retries with its idempotency key.
//
// # How this fits the final design
//
// The commit log will implement LogStore: one raft entry is one of today's batches, the batch
// header gains the entry's term and index, and a derived index (rebuilt at open like the
// partition indexes) maps a raft index to a log position and term. There is no second copy of
// a message. Until then, MemLog is an in-memory LogStore that models durability (what was not
// synced is lost by a simulated crash); the deterministic cluster test runs on it.
//
// Pieces:
//
//   - logstore.go: the LogStore interface the raft storage adapter needs.
//   - storage.go: raft.Storage over a LogStore, and the HardState/ConfState file.
//   - memlog.go: the in-memory LogStore with simulated crashes.
//   - node.go: Node, the Ready loop, Propose, Status.
//   - overlap.go: the leader's round whose fsync runs while the loop steps and applies.
//   - transport.go: the peer transport over TCP (a hello that names both ends, then
//     length-prefixed messages; one writer per peer with a bounded queue that drops).
//   - transport_tls.go: mutual TLS for everything on the raft port (PeerTLS): members prove
//     themselves with certificates of the cluster's CA, a dialler checks the host it dialled;
//     a member's certificate may be renewed while it runs (NewRenewablePeerTLS).
//   - logger.go: raft's log lines into slog.
//   - snapshotfile.go: snapshot files copied over the raft port (a hello of its own, one file
//     per connection), for a member whose log is behind the leader's compacted log.
//   - joinquery.go: the join question a new node asks over the raft port before it runs.
//
// Snapshots: the state machine compacts its own log (the broker deletes commit-log segments no
// partition needs, below its durable checkpoint) and implements Snapshotter. Storage.Snapshot
// answers raft with the Snapshotter's description of the applied state (a manifest, not the
// data); a node sent one stages it (the member copies the files the manifest names) and stops
// with ErrSnapshotStaged, without persisting or answering anything of that Ready: its process
// restarts and installs the staged state before it opens (replica.InstallStaged).
package cluster
