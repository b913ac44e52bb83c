package xa

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imagomq/imago/broker"
	"github.com/imagomq/imago/internal/fsutil"
)

// TestBrokerBranchDurableUnderLazyFsync: with the broker's log.fsync at interval (or never), its
// prepare and commit must still be on disk when they are answered. Otherwise an OS crash after
// both databases committed takes the broker branch with it, and recovery, finding no prepared
// broker branch for a commit decision, counts it as committed: the settlement message is lost.
// The test records every fsync of the broker's log and checks, after each transaction, that no
// byte of the log is left unsynced.
func TestBrokerBranchDurableUnderLazyFsync(t *testing.T) {
	e := newEnv(t)
	if err := e.b.Close(); err != nil {
		t.Fatal(err)
	}
	bo := broker.NewOptions(filepath.Join(e.dir, "broker"))
	bo.Logger = quietLogger()
	bo.Fsync = broker.FsyncPolicy{Mode: broker.FsyncInterval, Interval: time.Hour}
	bo.CheckpointInterval = time.Hour
	var err error
	if e.b, err = broker.Open(bo); err != nil {
		t.Fatal(err)
	}
	table := e.tables(map[string]int64{"a": 100, "b": 0})
	topic := "xat." + e.suffix

	logDir := filepath.Join(bo.Dir, "log") + string(filepath.Separator)
	var mu sync.Mutex
	synced := map[string]int64{}
	restore := fsutil.SetHook(func(ev fsutil.Event, do func() error) error {
		err := do()
		if err == nil && ev.Kind == fsutil.File && strings.HasPrefix(ev.Path, logDir) {
			mu.Lock()
			synced[ev.Path] = max(synced[ev.Path], ev.Size)
			mu.Unlock()
		}
		return err
	})
	defer restore()

	ctx := context.Background()
	c := e.open(e.options(newNode(t)))
	for i := 0; i < 5; i++ {
		id := fmt.Sprintf("lazy-%s-%d", e.suffix, i)
		if _, err := c.Run(ctx, BeginOptions{ID: id}, func(ctx context.Context, tx *GlobalTx) error {
			return transfer(ctx, tx, table, "a", "b", 1, msg(topic, id, `{"amount":1}`))
		}); err != nil {
			t.Fatalf("transfer %s: %v", id, err)
		}
		segs, _ := filepath.Glob(logDir + "*.log")
		for _, s := range segs {
			fi, err := os.Stat(s)
			if err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			n := synced[s]
			mu.Unlock()
			if fi.Size() > n {
				t.Fatalf("transfer %s answered committed with %d bytes of %s never fsync'd", id, fi.Size()-n, s)
			}
		}
	}
	if got := len(e.messages(topic)); got != 5 {
		t.Fatalf("%d messages for 5 transfers", got)
	}
}
