package migrations

import (
	"context"
	"log/slog"
	"strconv"
	"sync"
	"testing"
)

// recordHandler keeps the records logged through it.
type recordHandler struct {
	mu      sync.Mutex
	records []slog.Record
}

func (h *recordHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *recordHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.records = append(h.records, r.Clone())
	return nil
}
func (h *recordHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *recordHandler) WithGroup(string) slog.Handler      { return h }

// TestApplyWarnsOfANewerSchema: an older binary against a database a newer binary migrated
// (a version above the highest it knows) goes on, as the package comment decides, and logs a
// Warn naming the set, the dialect and both versions. Not parallel: it swaps slog's default
// logger (parallel tests of the package run only after it).
func TestApplyWarnsOfANewerSchema(t *testing.T) {
	for _, d := range []string{Postgres, MySQL} {
		for _, s := range applySets(d) {
			t.Run(d+"/"+s.name, func(t *testing.T) {
				ctx := context.Background()
				driver, dsn := freshDatabase(t, d)
				db := openDB(t, driver, dsn)
				if err := s.apply(ctx, db, d); err != nil {
					t.Fatal(err)
				}
				var known int64
				if err := db.QueryRowContext(ctx, `SELECT MAX(version_id) FROM `+s.vt).Scan(&known); err != nil {
					t.Fatal(err)
				}
				h := &recordHandler{}
				prev := slog.Default()
				slog.SetDefault(slog.New(h))
				defer slog.SetDefault(prev)

				// Nothing to warn of at the known version.
				if err := s.apply(ctx, db, d); err != nil {
					t.Fatal(err)
				}
				if w := warnings(h); len(w) != 0 {
					t.Fatalf("warned at the known version: %v", w)
				}

				newer := known + 1
				if _, err := db.ExecContext(ctx, `INSERT INTO `+s.vt+` (version_id, is_applied) VALUES (`+
					strconv.FormatInt(newer, 10)+`, true)`); err != nil {
					t.Fatal(err)
				}
				if err := s.apply(ctx, db, d); err != nil {
					t.Fatalf("Apply refused a newer schema: %v", err)
				}
				w := warnings(h)
				if len(w) != 1 {
					t.Fatalf("want one Warn, got %d", len(w))
				}
				attrs := map[string]slog.Value{}
				w[0].Attrs(func(a slog.Attr) bool { attrs[a.Key] = a.Value; return true })
				if attrs["set"].String() != s.name || attrs["dialect"].String() != d ||
					attrs["database_version"].Int64() != newer || attrs["binary_version"].Int64() != known {
					t.Fatalf("Warn %q with %v; want set %s, dialect %s, database_version %d, binary_version %d",
						w[0].Message, attrs, s.name, d, newer, known)
				}
			})
		}
	}
}

func warnings(h *recordHandler) []slog.Record {
	h.mu.Lock()
	defer h.mu.Unlock()
	var w []slog.Record
	for _, r := range h.records {
		if r.Level >= slog.LevelWarn {
			w = append(w, r)
		}
	}
	return w
}
