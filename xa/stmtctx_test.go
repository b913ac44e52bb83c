package xa

import (
	"context"
	"sync"
	"testing"
	"time"
)

// Statements under one context share one deadline context; another parent replaces it (the
// old one is cancelled), and each is bounded by the transaction's deadline.
func TestStmtCtxShared(t *testing.T) {
	tx := &GlobalTx{deadline: time.Now().Add(time.Hour)}
	parent := context.Background()
	a, cancel := tx.stmtCtx(parent)
	cancel() // a no-op: the context is kept for the next statement
	if a.Err() != nil {
		t.Fatalf("statement context ended by its cancel: %v", a.Err())
	}
	if dl, ok := a.Deadline(); !ok || !dl.Equal(tx.deadline) {
		t.Fatalf("deadline %v %v, want the transaction's %v", dl, ok, tx.deadline)
	}
	if b, _ := tx.stmtCtx(parent); b != a {
		t.Fatal("second statement under the same parent got a new context")
	}
	other, stop := context.WithCancel(parent)
	defer stop()
	c, _ := tx.stmtCtx(other)
	if c == a || a.Err() == nil {
		t.Fatalf("another parent: same context %v, old one ended %v", c == a, a.Err())
	}
	stop()
	if c.Err() == nil {
		t.Fatal("statement context outlives its parent")
	}
}

// inParallel runs its calls at once, on the caller and helper goroutines, again and again.
func TestInParallelRunsAtOnce(t *testing.T) {
	for round := range 50 {
		n := 1 + round%4
		var started sync.WaitGroup
		started.Add(n)
		ran := make([]bool, n)
		done := make(chan struct{})
		go func() {
			defer close(done)
			inParallel(n, func(k int) {
				started.Done()
				started.Wait() // returns only when all n run at the same time
				ran[k] = true
			})
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("round %d: the %d calls did not all run at once", round, n)
		}
		for k, ok := range ran {
			if !ok {
				t.Fatalf("round %d: call %d did not run", round, k)
			}
		}
	}
}

// The statements after the first under the same context allocate no context or timer.
func TestStmtCtxReusedWithoutAllocation(t *testing.T) {
	tx := &GlobalTx{deadline: time.Now().Add(time.Hour)}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tx.stmtCtx(ctx)
	if n := testing.AllocsPerRun(100, func() {
		_, c := tx.stmtCtx(ctx)
		c()
	}); n != 0 {
		t.Errorf("stmtCtx: %v allocations per statement, want 0", n)
	}
}
