package xa

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

// A timeout short enough to fire before Begin returns: the timer's rollback must find the
// timer Begin stored (finish stops it), never a nil one. Run with -race, the store and the
// read are ordered by the transaction's lock or the detector reports them.
func TestTimeoutFiringDuringBegin(t *testing.T) {
	o := NewOptions(t.TempDir())
	o.Logger = quietLogger()
	c, err := Open(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	txs := make([]*GlobalTx, 2000)
	for i := range txs {
		if txs[i], err = c.Begin(context.Background(), BeginOptions{Timeout: time.Nanosecond}); err != nil {
			t.Fatal(err)
		}
	}
	for _, tx := range txs {
		waitFor(t, "the timed-out transaction to roll back", func() bool {
			return tx.Info().Status == StatusRolledBack
		})
	}
}

// A decision record holds at most maxBranches branches: a coordinator with more resources,
// which could enlist them all in one transaction, is refused at Open rather than writing
// records that leave branches out.
func TestTooManyResourcesRefused(t *testing.T) {
	o := NewOptions(t.TempDir())
	o.Logger = quietLogger()
	for i := range maxBranches + 1 {
		o.Resources = append(o.Resources, MySQL(fmt.Sprintf("db%d", i), nil))
	}
	c, err := Open(context.Background(), o)
	if err == nil {
		c.Close()
		t.Fatal("Open accepted more resources than a decision record can list")
	}
	if !strings.Contains(err.Error(), "at most 32") {
		t.Errorf("error %q does not name the limit", err)
	}
}
