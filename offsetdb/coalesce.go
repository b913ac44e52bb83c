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
