package offsetdb

import (
	"cmp"
	"slices"
	"strings"
)

// compareOffsetKeys orders offsets by key like compareKeys, without copying
// them: every flush sorts its batch, so this is on the group commit's path.
// Equal names (the common case: one group, one topic) cost a length check.
func compareOffsetKeys(a, b *Offset) int {
	if a.Group != b.Group {
		return strings.Compare(a.Group, b.Group)
	}
	if a.Topic != b.Topic {
		return strings.Compare(a.Topic, b.Topic)
	}
	return cmp.Compare(a.Partition, b.Partition)
}

// coalesceValid is Coalesce for offsets already validated. It sorts a
// permutation (4-byte indexes, ties broken by input position) instead of the
// offsets themselves, so a sort moves no 88-byte structs, and copies each
// kept offset once.
func coalesceValid(offsets []Offset) []Offset {
	sorted := true
	for i := 1; i < len(offsets); i++ {
		if compareOffsetKeys(&offsets[i-1], &offsets[i]) >= 0 {
			sorted = false
			break
		}
	}
	if sorted {
		// One offset, or rows a flush already coalesced: nothing to sort or merge.
		return slices.Clone(offsets)
	}
	if sameNames(offsets) && uint64(len(offsets)) < 1<<32 {
		return coalesceByPartition(offsets)
	}
	idx := make([]int32, len(offsets))
	for i := range idx {
		idx[i] = int32(i)
	}
	slices.SortFunc(idx, func(i, j int32) int {
		return cmp.Or(compareOffsetKeys(&offsets[i], &offsets[j]), cmp.Compare(i, j))
	})
	out := make([]Offset, 0, len(offsets))
	for _, i := range idx {
		o := &offsets[i]
		if n := len(out); n > 0 && compareOffsetKeys(&out[n-1], o) == 0 {
			// Same key, later in the input: the higher offset wins, the later
			// one among equals (its CommittedBy is kept).
			if o.Next >= out[n-1].Next {
				out[n-1] = *o
			}
			continue
		}
		out = append(out, *o)
	}
	return out
}

// sameNames reports whether every offset has the group and topic of the
// first: the common batch (one consumer group reading one topic).
func sameNames(offsets []Offset) bool {
	g, t := offsets[0].Group, offsets[0].Topic
	for i := 1; i < len(offsets); i++ {
		if offsets[i].Group != g || offsets[i].Topic != t {
			return false
		}
	}
	return true
}

// coalesceByPartition is coalesceValid for offsets of one group and topic:
// the key is the partition alone, so the permutation is sorted as integers
// (partition in the high 32 bits, input position in the low ones, which
// keeps the later of equal keys after the earlier) instead of with a
// comparison function: on a flush of 64 commits, several times faster.
func coalesceByPartition(offsets []Offset) []Offset {
	keys := make([]uint64, len(offsets))
	for i := range offsets {
		keys[i] = uint64(offsets[i].Partition)<<32 | uint64(i)
	}
	slices.Sort(keys)
	out := make([]Offset, 0, len(offsets))
	last := -1
	for _, k := range keys {
		o := &offsets[uint32(k)]
		if n := len(out); n > 0 && o.Partition == last {
			// Same key, later in the input: the higher offset wins, the later
			// one among equals (its CommittedBy is kept).
			if o.Next >= out[n-1].Next {
				out[n-1] = *o
			}
			continue
		}
		out = append(out, *o)
		last = o.Partition
	}
	return out
}
