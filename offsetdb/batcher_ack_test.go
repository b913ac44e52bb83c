package offsetdb

import (
	"context"
	"fmt"
	"sync"
	"testing"
)

// maxStore is a Store in memory with the databases' rule (the stored offset
// becomes the greater one), that also checks every batch it is given is
// coalesced and sorted as the Batcher promises.
type maxStore struct {
	Store // unused methods
	t     *testing.T
	mu    sync.Mutex
	rows  map[Key]int64
}

func (m *maxStore) Commit(_ context.Context, offsets []Offset) error {
	for i := 1; i < len(offsets); i++ {
		if compareKeys(offsets[i-1].Key(), offsets[i].Key()) >= 0 {
			m.t.Errorf("batch not sorted and coalesced at %d: %v", i, offsets)
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, o := range offsets {
		m.rows[o.Key()] = max(m.rows[o.Key()], o.Next)
	}
	return nil
}

func (m *maxStore) get(k Key) int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.rows[k]
}

func (m *maxStore) Close() error { return nil }

// A commit is acknowledged only once a write holding it has finished: at the
// moment Commit returns, the store already holds that offset or a higher one,
// for the committer's own partition and for a partition every committer
// shares (whose offsets from concurrent flushes finish in any order), with
// several flushers and a key in every flush. Run with -race.
func TestGroupCommitAcksOnlyWrittenOffsets(t *testing.T) {
	for _, flushers := range []int{1, 2, 3} {
		t.Run(fmt.Sprint("flushers=", flushers), func(t *testing.T) {
			st := &maxStore{t: t, rows: map[Key]int64{}}
			b := NewBatcher(st, GroupCommitConfig{Flushers: flushers}, quietLogger())
			defer b.Close()
			const committers, each = 32, 200
			var wg sync.WaitGroup
			for c := range committers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 1; i <= each; i++ {
						own := Offset{Group: "g", Topic: "own", Partition: c, Next: int64(i), CommittedBy: fmt.Sprint(c)}
						shared := Offset{Group: "g", Topic: "shared", Partition: 0, Next: int64(c*each + i)}
						if err := b.Commit(context.Background(), []Offset{own, shared}); err != nil {
							t.Error(err)
							return
						}
						for _, o := range []Offset{own, shared} {
							if got := st.get(o.Key()); got < o.Next {
								t.Errorf("commit of %v acknowledged, store holds %d", o, got)
								return
							}
						}
					}
				}()
			}
			wg.Wait()
			for c := range committers {
				if got := st.get(Key{"g", "own", c}); got != each {
					t.Errorf("partition %d: %d, want %d", c, got, each)
				}
			}
		})
	}
}
