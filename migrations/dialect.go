package migrations

import "strings"

// Dialect maps the driver names a configuration may use for a database to Postgres or MySQL:
// "postgres", "postgresql" and "pgx" (the database/sql driver's name) are PostgreSQL; "mysql"
// and "mariadb" are MySQL. It reports false for anything else. Every part of Imago that takes
// a driver name (resources, offsets.store, outbox sources, imago migrate) accepts these.
func Dialect(name string) (string, bool) {
	switch strings.ToLower(name) {
	case "postgres", "postgresql", "pgx":
		return Postgres, true
	case "mysql", "mariadb":
		return MySQL, true
	}
	return "", false
}
