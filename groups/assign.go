package groups

import "slices"

// Assign deals the partitions of a clustered group to its members: partitions sorted by
// (topic, partition) go round-robin to the members sorted by id, so every partition has
// exactly one owner, the counts differ by at most one, and the deal depends only on the two
// sets (every member of a generation computes the same one). A member with no partition is
// absent from the result. Neither argument is modified.
//
// Round-robin over sorted lists is a decision for predictability, not stickiness: a member
// joining or leaving can move partitions between members that stay. Uncommitted messages of
// a moved partition are delivered again to its new owner (at least once).
func Assign(members []string, partitions []Partition) map[string][]Partition {
	out := map[string][]Partition{}
	if len(members) == 0 {
		return out
	}
	ids := slices.Clone(members)
	slices.Sort(ids)
	ids = slices.Compact(ids)
	parts := slices.Clone(partitions)
	slices.SortFunc(parts, comparePartition)
	parts = slices.CompactFunc(parts, func(a, b Partition) bool { return a == b })
	for i, p := range parts {
		id := ids[i%len(ids)]
		out[id] = append(out[id], p)
	}
	return out
}
