package groups

import (
	"errors"
	"testing"
)

// Reset is a coordinator restart on a new cluster leader: members must join again, and the
// generations they get are above the base, so they only grow across failovers.
func TestResetDropsMembersAndRaisesGenerations(t *testing.T) {
	c, _ := newTestCoordinator(t)
	j, err := c.Join(clustered("g", "a"))
	if err != nil {
		t.Fatal(err)
	}
	const base = int64(7) << 32
	c.Reset(base)
	if _, err := c.Touch("g", j.MemberID); !errors.Is(err, ErrUnknownMember) {
		t.Fatalf("touch after reset: %v, want ErrUnknownMember", err)
	}
	j2, err := c.Join(clustered("g", "a"))
	if err != nil {
		t.Fatal(err)
	}
	if j2.Generation != base+1 {
		t.Fatalf("generation after reset: %d, want %d", j2.Generation, base+1)
	}
}
