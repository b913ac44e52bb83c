// Package testenv holds test helpers that locate the real services started by
// scripts/services.sh: MariaDB, PostgreSQL and ZooKeeper on loopback. Imago's
// tests never mock a database; they ask this package where the real one is.
//
// scripts/services.sh writes the addresses to .services.env, which `make test`
// sources before running `go test`:
//
//	IMAGO_TEST_MYSQL_DSN    go-sql-driver/mysql DSN, e.g. root@tcp(127.0.0.1:3306)/test
//	IMAGO_TEST_PG_DSN       PostgreSQL URL, e.g. postgres://postgres@127.0.0.1:5432/test?sslmode=disable
//	IMAGO_TEST_ZK           comma-separated ZooKeeper servers, e.g. 127.0.0.1:2181
//	IMAGO_REQUIRE_SERVICES  1: a missing address fails the test instead of skipping it
//
// Without IMAGO_REQUIRE_SERVICES=1 (a plain `go test ./...` on a laptop), a test
// that needs a service that is not configured is skipped, with a hint.
package testenv

import (
	"os"
	"strings"
	"testing"
)

// Names of the environment variables written by scripts/services.sh.
const (
	EnvMySQLDSN        = "IMAGO_TEST_MYSQL_DSN"
	EnvPostgresDSN     = "IMAGO_TEST_PG_DSN"
	EnvZooKeeper       = "IMAGO_TEST_ZK"
	EnvRequireServices = "IMAGO_REQUIRE_SERVICES"
)

// MySQLDSN returns the go-sql-driver/mysql DSN of the MariaDB server to test
// against (user root, database test). It skips the test, or fails it when
// IMAGO_REQUIRE_SERVICES=1, if IMAGO_TEST_MYSQL_DSN is not set.
func MySQLDSN(t testing.TB) string {
	t.Helper()
	return lookup(t, EnvMySQLDSN, "MariaDB")
}

// PostgresDSN returns the URL of the PostgreSQL database to test against (user
// postgres, database test, max_prepared_transactions >= 64). It skips the test,
// or fails it when IMAGO_REQUIRE_SERVICES=1, if IMAGO_TEST_PG_DSN is not set.
func PostgresDSN(t testing.TB) string {
	t.Helper()
	return lookup(t, EnvPostgresDSN, "PostgreSQL")
}

// ZooKeeperServers returns the host:port addresses of the ZooKeeper ensemble to
// test against. It skips the test, or fails it when IMAGO_REQUIRE_SERVICES=1,
// if IMAGO_TEST_ZK is not set.
func ZooKeeperServers(t testing.TB) []string {
	t.Helper()
	v := lookup(t, EnvZooKeeper, "ZooKeeper")
	var servers []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			servers = append(servers, s)
		}
	}
	if len(servers) == 0 {
		t.Fatalf("testenv: %s=%q names no ZooKeeper server", EnvZooKeeper, v)
	}
	return servers
}

// Required reports whether IMAGO_REQUIRE_SERVICES=1, that is whether a test
// must fail rather than skip when a service is not configured.
func Required() bool {
	return os.Getenv(EnvRequireServices) == "1"
}

func lookup(t testing.TB, env, service string) string {
	t.Helper()
	if v := strings.TrimSpace(os.Getenv(env)); v != "" {
		return v
	}
	if Required() {
		t.Fatalf("testenv: %s is not set but %s=1: %s must be running; "+
			"run `make services` and source .services.env, or `make test`", env, EnvRequireServices, service)
	}
	t.Skipf("testenv: %s is not set, skipping the test that needs %s; "+
		"run `make services` (and source .services.env) or `make test`", env, service)
	return ""
}
