package offsetdb

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"path"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/imagomq/imago/internal/testenv"
)

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// forEachMode runs the suite on the store as Open returns it (with group
// commit) and as OpenDirect does (without).
func forEachMode(t *testing.T, cfg Config) {
	cfg.Logger = quietLogger()
	t.Run("batched", func(t *testing.T) {
		runConformance(t, func(t *testing.T) Store {
			t.Helper()
			s, err := Open(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			return s
		})
	})
	t.Run("direct", func(t *testing.T) {
		runConformance(t, func(t *testing.T) Store {
			t.Helper()
			s, err := OpenDirect(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			return s
		})
	})
}

func TestFileStoreConformance(t *testing.T) {
	t.Parallel()
	forEachMode(t, Config{Store: "file", Dir: t.TempDir()})
}

func TestPostgresStoreConformance(t *testing.T) {
	t.Parallel()
	forEachMode(t, Config{Store: "postgres", DSN: testenv.PostgresDSN(t), Migrate: true})
}

func TestMySQLStoreConformance(t *testing.T) {
	t.Parallel()
	forEachMode(t, Config{Store: "mysql", DSN: testenv.MySQLDSN(t), Migrate: true})
}

func TestZooKeeperStoreConformance(t *testing.T) {
	t.Parallel()
	servers := testenv.ZooKeeperServers(t)
	root := fmt.Sprintf("/imago-test-%x", rand.Uint64())
	t.Cleanup(func() { zkDeleteAll(t, servers, root) })
	forEachMode(t, Config{Store: "zookeeper", ZooKeeper: servers, Root: root})
}

// TestZooKeeperLayout checks the documented znode path and data, and that a
// plain decimal (older tools) is read.
func TestZooKeeperLayout(t *testing.T) {
	t.Parallel()
	servers := testenv.ZooKeeperServers(t)
	root := fmt.Sprintf("/imago-test-%x", rand.Uint64())
	t.Cleanup(func() { zkDeleteAll(t, servers, root) })
	ctx := context.Background()
	s, err := OpenZooKeeper(ctx, Config{ZooKeeper: servers, Root: root, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	mustCommit(t, s, Offset{Group: "pay", Topic: "orders", Partition: 2, Next: 1042, CommittedBy: "m1"})
	data, _, err := s.conn.Get(root + "/consumers/pay/offsets/orders/2")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("znode data: %s", data)
	if _, err := s.conn.Set(root+"/consumers/pay/offsets/orders/2", []byte("2000"), -1); err != nil {
		t.Fatal(err)
	}
	if o := mustGet(t, s, "pay", "orders", 2); o.Next != 2000 {
		t.Fatalf("decimal znode read as %d", o.Next)
	}
	mustCommit(t, s, Offset{Group: "pay", Topic: "orders", Partition: 2, Next: 1500})
	if o := mustGet(t, s, "pay", "orders", 2); o.Next != 2000 {
		t.Fatalf("backwards over a decimal znode: %d", o.Next)
	}
}

func zkDeleteAll(t *testing.T, servers []string, root string) {
	conn, _, err := zk.Connect(servers, 5*time.Second, zk.WithLogger(zkLogger{quietLogger()}))
	if err != nil {
		t.Logf("cleanup %s: %v", root, err)
		return
	}
	defer conn.Close()
	var del func(p string)
	del = func(p string) {
		kids, _, err := conn.Children(p)
		if err != nil {
			return
		}
		for _, k := range kids {
			del(path.Join(p, k))
		}
		if err := conn.Delete(p, -1); err != nil && !errors.Is(err, zk.ErrNoNode) {
			t.Logf("cleanup %s: %v", p, err)
		}
	}
	del(root)
}
