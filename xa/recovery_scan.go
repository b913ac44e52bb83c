package xa

import "context"

// Scans and staleness. A recovery pass scans its resources one after the other, and each call
// may take up to the phase timeout, so a scan's answer can be older than what the live path
// did since: a branch absent from a scan taken before its transaction prepared says nothing
// about it. Every scan therefore takes a number from c.scanSeq before it asks its resource,
// and every transaction takes one when its outcome last changed (its GlobalTx let go of it,
// or recovery settled it final). Recovery reads a branch's absence as finished only from a
// scan whose number is larger, that is, a scan begun after the transaction stopped changing;
// and a final transaction is forgotten (prune) only once a successful scan of every resource
// it used, begun after it finished, lists none of its branches. Until then a resource that
// stays down keeps the transaction in memory (and its status visible) past its retention:
// forgetting it would leave a still-prepared branch to presumed abort.

// scan is one resource's successful recovery scan.
type scan struct {
	seq    uint64          // taken before the resource was asked; 0: no scan
	gtrids map[string]bool // this node's transactions with a branch prepared there
}

// after reports whether s is a successful scan begun after the moment numbered seq.
func (s scan) after(seq uint64) bool { return s.seq > seq }

// scan lists the gtrids of this node with a branch prepared on resource name.
func (c *Coordinator) scan(ctx context.Context, name string) (scan, error) {
	seq := c.scanSeq.Add(1)
	sctx, cancel := context.WithTimeout(ctx, c.opts.PhaseTimeout)
	defer cancel()
	xids, err := c.rms[name].recover(sctx)
	if err != nil {
		return scan{}, err
	}
	set := map[string]bool{}
	for _, x := range xids {
		g, node, res, ok := parseXid(x)
		if !ok || node != c.node || res != name {
			continue
		}
		set[g] = true
	}
	return scan{seq: seq, gtrids: set}, nil
}

// noteScans keeps the pass's successful scans as each resource's last one, for prune.
func (c *Coordinator) noteScans(scans map[string]scan) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for name, s := range scans {
		if s.seq > c.lastScan[name].seq {
			c.lastScan[name] = s
		}
	}
}

// confirmedGone reports whether the last successful scan of every resource st used began
// after st finished and lists none of its branches. The caller holds c.mu.
func (c *Coordinator) confirmedGone(st *txState) bool {
	for _, bs := range st.branches {
		if _, ok := c.rms[bs.resource]; !ok {
			continue // a resource no longer configured (read from the log) is never scanned
		}
		s := c.lastScan[bs.resource]
		if !s.after(st.quiet) || s.gtrids[st.gtrid] {
			return false
		}
	}
	return true
}
