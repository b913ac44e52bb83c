// Package groups is the consumer-group coordinator: membership with session timeouts,
// partition assignment and rebalancing, each member's fetch cursors, and the gate that orders
// commits against a rebalance. It knows nothing of HTTP: the gateway's /v1/groups endpoints
// adapt it (decode the request, check rights, map the errors of this package to statuses).
//
// Membership lives in memory, in one Coordinator: one process is the coordinator of every
// group that joins it. A Coordinator holds all of its state (no package-level variables), is
// started with Start and stopped with Close, so a cluster can run it on its leader only.
// Offsets live in the offset store (offsetdb.Store), so they survive a restart; members do
// not, and rejoin when they get ErrUnknownMember.
//
// Rules (the HTTP contract documents the same from the client's side):
//   - A group's mode is set by its first member; a member joining with the other mode gets
//     ErrModeConflict. When the last member leaves, the group is forgotten (its offsets stay
//     in the store) and the next join may choose any mode.
//   - Clustered: every member subscribes the same topics (ErrTopicsConflict otherwise). The
//     group's partitions are dealt by Assign, so each partition has exactly one owner. Every
//     join, leave and timeout bumps the generation and deals again. Offsets are stored under
//     the group's name. A partition with no committed offset starts at its start offset.
//   - Broadcast: every member owns every partition of its own topics and keeps its own
//     offsets, stored under the group name "<group>~<consumer>" (consumer = the join's
//     ConsumerID, else the member id; '~' cannot appear in a topic or group name, so this
//     never collides with a real group). Without a committed offset it starts at the
//     partition's end at join time (FromLatest, the default) or at its start (FromEarliest).
//     A member with a ConsumerID stores a FromLatest start as the consumer's offset before it
//     reads from there, so the consumer's next member (a restart) resumes at it: what came
//     meanwhile to a partition the consumer had not committed yet is not skipped.
//   - A member's cursor starts at the committed offset and moves past what a poll returned,
//     so polls without commits do not repeat messages. A poll's Positions (where the client
//     is) move it back, never below the member's own commits or where it started, so the
//     messages of an answer that never reached the client come again at the next poll. With
//     PositionsComplete, a partition without a position goes back to where the member started
//     it (the client got nothing of it yet). A partition that moves to another member starts
//     there again at the committed offset: uncommitted messages are delivered again (at least
//     once), committed ones never.
//   - Commits in clustered mode are accepted only from the partition's current owner
//     (*OwnerError, which wraps ErrNotOwner), so a member that lost a partition in a
//     rebalance cannot move its offset. A new owner reads the committed offset only after
//     every commit accepted under the previous assignment has reached the store (the commit
//     gate of the group's name, which a commit holds until the store has it: it outlives
//     the group when the last member goes or the coordinator is reset meanwhile, so the
//     group the next join creates waits for that commit too). A read during which the
//     partition changed hands (it moved to another member, which may have committed it,
//     and came back) is done again.
package groups
