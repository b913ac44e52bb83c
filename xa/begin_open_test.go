package xa

import (
	"context"
	"errors"
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

// A client id repeated with the digest it first ran under is a duplicate (the first outcome);
// with another digest it is refused before anything runs, since answering the first outcome
// would report work that never ran; without a digest it stays a duplicate.
func TestClientIDReusedForOtherWork(t *testing.T) {
	o := NewOptions(t.TempDir())
	o.Logger = quietLogger()
	c, err := Open(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	tx, err := c.Begin(ctx, BeginOptions{ID: "pay-1", Digest: "a"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Rollback(ctx, nil); err != nil {
		t.Fatal(err)
	}
	var dup *DuplicateError
	if _, err := c.Begin(ctx, BeginOptions{ID: "pay-1", Digest: "a"}); !errors.As(err, &dup) || dup.Info.Status != StatusRolledBack {
		t.Errorf("repeat with the same digest: %v, want a duplicate of the rolled-back first", err)
	}
	if _, err := c.Begin(ctx, BeginOptions{ID: "pay-1", Digest: "b"}); !errors.Is(err, ErrIDReused) {
		t.Errorf("repeat with another digest: %v, want ErrIDReused", err)
	}
	if _, err := c.Begin(ctx, BeginOptions{ID: "pay-1"}); !errors.As(err, &dup) {
		t.Errorf("repeat without a digest: %v, want a duplicate", err)
	}
}
