package gateway

import (
	"context"
	"net/http"
	"testing"

	"github.com/imagomq/imago/api"
	"github.com/imagomq/imago/internal/testenv"
	"github.com/imagomq/imago/offsetdb"
)

// TestGroupPostgresStore runs a group against the PostgreSQL offset store: a commit's 200
// means the row is in imago.consumer_offsets, and a new server over the same database
// resumes from it.
func TestGroupPostgresStore(t *testing.T) {
	dsn := testenv.PostgresDSN(t)
	ctx := context.Background()
	open := func() offsetdb.Store {
		s, err := offsetdb.Open(ctx, offsetdb.Config{Store: "postgres", DSN: dsn, Migrate: true, Logger: quietLogger()})
		if err != nil {
			t.Fatalf("open postgres offset store: %v", err)
		}
		return s
	}
	group := uniqueName("gwtest-")
	store := open()
	t.Cleanup(func() {
		// Remove the rows this test wrote.
		pg, err := offsetdb.OpenPostgres(ctx, offsetdb.Config{DSN: dsn, Logger: quietLogger()})
		if err != nil {
			t.Errorf("clean up: %v", err)
			return
		}
		defer pg.Close()
		if _, err := pg.Pool().Exec(ctx, "DELETE FROM imago.consumer_offsets WHERE group_name = $1", group); err != nil {
			t.Errorf("clean up: %v", err)
		}
	})
	brokerDir := t.TempDir()
	ts := startServerDir(t, brokerDir, Options{Offsets: store})
	ts.createTopic("t", 2)
	ts.produceTo("t", 2, 3)
	m := ts.join(group, `{"topics":["t"]}`)
	if got := ts.poll(group, m.MemberID, ""); len(got.Messages) != 6 {
		t.Fatalf("polled %d", len(got.Messages))
	}
	ts.must(http.StatusOK, http.MethodPost, "/v1/groups/"+group+"/offsets", commitBodyOf(m.MemberID,
		api.GroupOffset{Topic: "t", Partition: 0, Offset: 3}, api.GroupOffset{Topic: "t", Partition: 1, Offset: 1}))
	// Durable in the table itself, read without the gateway.
	direct, err := offsetdb.OpenDirect(ctx, offsetdb.Config{Store: "postgres", DSN: dsn, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	o, ok, err := direct.Get(ctx, group, "t", 1)
	direct.Close()
	if err != nil || !ok || o.Next != 1 || o.CommittedBy != m.MemberID {
		t.Fatalf("row in imago.consumer_offsets: %+v %v %v", o, ok, err)
	}
	ts.stop()
	store.Close()

	store2 := open()
	t.Cleanup(func() { store2.Close() })
	ts2 := startServerDir(t, brokerDir, Options{Offsets: store2})
	m2 := ts2.join(group, `{"topics":["t"]}`)
	got := ts2.poll(group, m2.MemberID, "")
	if len(got.Messages) != 2 {
		t.Fatalf("after restart: %d messages, want t/1@1 and t/1@2", len(got.Messages))
	}
	for _, msg := range got.Messages {
		if msg.Partition != 1 || msg.Offset < 1 {
			t.Errorf("committed message delivered again: %+v", msg)
		}
	}
}
