package xa

import (
	"context"
	"strings"
	"testing"

	"github.com/imagomq/imago/migrations"
)

// Two live coordinators with one node id (a shared configured node id, each with a directory
// of its own) would presume abort on each other's branches. The second Open is refused with an
// error naming the node id, with the file decision log and with the table log on either
// database; once the first closes, the node id is free again.
func TestSecondCoordinatorWithSameNodeIDRefused(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct{ name, dialect string }{{"file", ""}, {"table mysql", migrations.MySQL}, {"table postgres", migrations.Postgres}} {
		t.Run(tc.name, func(t *testing.T) {
			node := newNode(t)
			opts := func() Options {
				o := e.options(node)
				o.Dir = t.TempDir() // another directory: the directory lock does not see it
				switch tc.dialect {
				case migrations.MySQL:
					o.DecisionDB, o.DecisionDialect = e.my, tc.dialect
				case migrations.Postgres:
					o.DecisionDB, o.DecisionDialect = e.pg, tc.dialect
				}
				return o
			}
			if tc.dialect != "" {
				t.Cleanup(func() {
					e.my.Exec("DELETE FROM imago_xa_decisions WHERE node_id = ?", node)
					e.pg.Exec("DELETE FROM imago.xa_decisions WHERE node_id = $1", node)
				})
			}
			c1, err := Open(context.Background(), opts())
			if err != nil {
				t.Fatal(err)
			}
			defer c1.Close()
			c2, err := Open(context.Background(), opts())
			if err == nil {
				c2.Close()
				t.Fatal("a second coordinator with the same node id opened while the first is live")
			}
			if !strings.Contains(err.Error(), node) || !strings.Contains(err.Error(), "in use") {
				t.Fatalf("the refusal does not say the node id is in use: %v", err)
			}
			c1.Close()
			c3, err := Open(context.Background(), opts())
			if err != nil {
				t.Fatalf("the node id is not free after the first coordinator closed: %v", err)
			}
			c3.Close()
		})
	}
}
