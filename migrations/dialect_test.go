package migrations

import "testing"

func TestDialect(t *testing.T) {
	for name, want := range map[string]string{
		"postgres": Postgres, "PostgreSQL": Postgres, "pgx": Postgres, "mysql": MySQL, "MariaDB": MySQL,
		"": "", "oracle": "", "sqlite": "",
	} {
		got, ok := Dialect(name)
		if got != want || ok != (want != "") {
			t.Errorf("Dialect(%q) = %q, %v; want %q", name, got, ok, want)
		}
	}
}
