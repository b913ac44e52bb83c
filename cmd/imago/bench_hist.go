package main

import (
	"math/bits"
	"time"
)

// histogram records durations in logarithmic buckets, HDR-style: values below 256 ns have a
// bucket each; above, each power of two is split into 128 buckets, so a reported percentile is
// within 1/128 (0.8%) of the true value. Recording is a few arithmetic operations and one
// increment, with no allocation; one histogram per goroutine, merged at the end.
type histogram struct {
	counts [histBuckets]uint64
	total  uint64
	max    time.Duration
}

const (
	histSubBits = 7
	histSub     = 1 << histSubBits // buckets per power of two
	// Shifts up to 63-histSubBits cover every int64; the index of the last is (shift+2)*histSub-1.
	histBuckets = (64-histSubBits+1)*histSub + histSub
)

// histIndex maps a non-negative value to its bucket.
func histIndex(v uint64) int {
	shift := bits.Len64(v) - (histSubBits + 1)
	if shift <= 0 {
		return int(v) // v < 256
	}
	return shift*histSub + int(v>>uint(shift))
}

// histValue returns the highest value that maps to bucket i.
func histValue(i int) uint64 {
	if i < 2*histSub {
		return uint64(i)
	}
	shift := i/histSub - 1
	m := uint64(i - shift*histSub)
	return (m+1)<<uint(shift) - 1
}

func (h *histogram) record(d time.Duration) {
	if d < 0 {
		d = 0
	}
	h.counts[histIndex(uint64(d))]++
	h.total++
	if d > h.max {
		h.max = d
	}
}

func (h *histogram) merge(o *histogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.total += o.total
	if o.max > h.max {
		h.max = o.max
	}
}

// quantile returns the duration below which a fraction q (0..1) of the recorded values fall
// (the upper edge of the bucket holding that rank, capped at the maximum seen).
func (h *histogram) quantile(q float64) time.Duration {
	if h.total == 0 {
		return 0
	}
	rank := uint64(q*float64(h.total) + 0.5)
	if rank < 1 {
		rank = 1
	}
	if rank > h.total {
		rank = h.total
	}
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			v := time.Duration(histValue(i))
			if v > h.max {
				v = h.max
			}
			return v
		}
	}
	return h.max
}
