package offsetdb

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/imagomq/imago/internal/faultproxy"
	"github.com/imagomq/imago/internal/testenv"
)

// The SQL stores' Ping (what /readyz asks) fails, within its bound, while the database does
// not answer, and succeeds again once it does: before it, /readyz said ready through a
// database outage while every group commit answered 503. The outage is a fault proxy
// blackholing the link to the shared server (never touched).
func TestSQLStorePing(t *testing.T) {
	for _, store := range []string{"postgres", "mysql"} {
		t.Run(store, func(t *testing.T) {
			dsn, addr := testenv.PostgresDSN(t), ""
			if store == "mysql" {
				dsn = testenv.MySQLDSN(t)
			}
			for _, a := range []string{"127.0.0.1:5432", "127.0.0.1:3306", "localhost:5432", "localhost:3306"} {
				if strings.Contains(dsn, a) {
					addr = a
				}
			}
			if addr == "" {
				t.Skipf("cannot find the server's address in the DSN")
			}
			proxy, err := faultproxy.New(addr, 1)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { proxy.Close() })
			b, err := Open(context.Background(), Config{Store: store, DSN: strings.Replace(dsn, addr, proxy.Addr(), 1), Migrate: true, Logger: quietLogger()})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { b.Close() })
			if err := b.Ping(context.Background()); err != nil {
				t.Fatalf("ping with the database up: %v", err)
			}
			proxy.DropConnections()
			proxy.Blackhole(faultproxy.Forward | faultproxy.Backward)
			start := time.Now()
			err = b.Ping(context.Background())
			if err == nil {
				t.Fatal("ping succeeded with the database unreachable")
			}
			if took := time.Since(start); took > sqlPingTimeout+2*time.Second {
				t.Errorf("ping took %v with the database unreachable, want about %v", took, sqlPingTimeout)
			}
			proxy.Heal()
			proxy.DropConnections()
			waitFor(t, 10*time.Second, "ping after the database is reachable again", func() bool {
				return b.Ping(context.Background()) == nil
			})
		})
	}
}
