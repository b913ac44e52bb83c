package main

// CLI tests of `imago groups`, `imago migrate` and `imago dlq` (usage) against a real server
// and real PostgreSQL and MariaDB.

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io/fs"
	"strings"
	"testing"
	"time"

	"github.com/imagomq/imago/client"
	"github.com/imagomq/imago/internal/testenv"
	"github.com/imagomq/imago/migrations"
)

// imagoOK runs the command line and fails the test unless it exits with code; it returns
// stdout.
func imagoExpect(t *testing.T, srv *serverProc, code int, args ...string) string {
	t.Helper()
	got, out, errOut := imago(t, srv, "", args...)
	if got != code {
		t.Fatalf("imago %s: exit %d, want %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), got, code, out, errOut)
	}
	return out + errOut
}

func wantContains(t *testing.T, out string, subs ...string) {
	t.Helper()
	for _, s := range subs {
		if !strings.Contains(out, s) {
			t.Fatalf("output lacks %q:\n%s", s, out)
		}
	}
}

// consumeAll runs a group consumer until the group's offsets reach want on every partition.
func consumeAll(t *testing.T, c *client.Client, group, topic string, parts int, want int64) (stop func() error) {
	t.Helper()
	cs := client.NewConsumer(c, group, []string{topic}, client.ConsumerPollWait(100*time.Millisecond), client.ConsumerLogger(testLogger(t)))
	stop = runConsumer(t, func(ctx context.Context) error {
		return cs.Run(ctx, func(context.Context, client.FetchedMessage) error { return nil })
	})
	waitFor(t, 20*time.Second, "group offsets at the end", func() bool {
		offs, _ := groupState(t, c, group, topic)
		for p := range parts {
			if offs[p] != want {
				return false
			}
		}
		return true
	})
	return stop
}

func TestGroupsCLIPostgresStore(t *testing.T) {
	srv, db, dsn, topic, group := pgGroupsServer(t)
	c := srv.client()
	imagoExpect(t, srv, exitOK, "topics", "create", topic, "--partitions", "2")
	produceN(t, c, topic, 2, 0, 20)
	stop := consumeAll(t, c, group, topic, 2, 10)

	wantContains(t, imagoExpect(t, srv, exitOK, "groups", "list"), "GROUP", group, "clustered")
	out := imagoExpect(t, srv, exitOK, "groups", "describe", group)
	wantContains(t, out, "group "+group+": mode clustered", "1 live members", "TOPIC", topic, "MEMBER")
	var desc client.GroupOffsets
	if err := json.Unmarshal([]byte(imagoExpect(t, srv, exitOK, "groups", "describe", group, "-o", "json")), &desc); err != nil {
		t.Fatal(err)
	}
	if len(desc.Offsets) != 2 || desc.Offsets[0].Offset != 10 || desc.Offsets[0].Lag != 0 {
		t.Fatalf("describe -o json: %+v", desc)
	}
	store := []string{"--store", "postgres", "--dsn", dsn}
	// Refused while the group has a live member.
	wantContains(t, imagoExpect(t, srv, exitFailure, append([]string{"groups", "reset", group, "--topic", topic, "--to-earliest"}, store...)...),
		"live members", "stop its consumers first")
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	// Usage errors.
	imagoExpect(t, srv, exitUsage, "groups", "reset", group, "--topic", topic)
	imagoExpect(t, srv, exitUsage, "groups", "reset", group, "--to-latest")
	imagoExpect(t, srv, exitUsage, "groups", "reset", group, "--topic", topic, "--to-latest", "--to-earliest")
	imagoExpect(t, srv, exitUsage, "groups", "describe")
	imagoExpect(t, srv, exitUsage, "groups", "list", "-o", "yaml")
	imagoExpect(t, srv, exitNotFound, "groups", "describe", "no-such-group-"+group)
	// Out of range, and dry run.
	imagoExpect(t, srv, exitFailure, append([]string{"groups", "reset", group, "--topic", topic, "--to-offset", "99"}, store...)...)
	wantContains(t, imagoExpect(t, srv, exitOK, append([]string{"groups", "reset", group, "--topic", topic, "--to-offset", "3", "--dry-run"}, store...)...),
		"would reset", "PARTITION", "10")
	if offs, _ := groupState(t, c, group, topic); offs[0] != 10 {
		t.Fatalf("dry run changed the offsets: %v", offs)
	}
	// Reset partition 1 to 4, then everything to the earliest; the group reads it again.
	wantContains(t, imagoExpect(t, srv, exitOK, append([]string{"groups", "reset", group, "--topic", topic, "--partition", "1", "--to-offset", "4"}, store...)...),
		"reset group "+group)
	if offs, _ := groupState(t, c, group, topic); offs[0] != 10 || offs[1] != 4 {
		t.Fatalf("after reset of partition 1 to 4: %v", offs)
	}
	out = imagoExpect(t, srv, exitOK, append([]string{"groups", "reset", group, "--topic", topic, "--to-earliest", "-o", "json"}, store...)...)
	wantContains(t, out, `"to": 0`, `"from": 4`)
	var n int
	if err := db.QueryRow("SELECT COUNT(*) FROM imago.consumer_offsets WHERE group_name = $1 AND next_offset = 0 AND committed_by = 'imago groups reset'", group).Scan(&n); err != nil || n != 2 {
		t.Fatalf("rows reset in imago.consumer_offsets: %d, %v", n, err)
	}
	stop = consumeAll(t, c, group, topic, 2, 10)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	// The store read directly, as a DBA would.
	wantContains(t, imagoExpect(t, srv, exitOK, append([]string{"groups", "list"}, store...)...), "LAST COMMIT", group)
}

func TestGroupsResetFileStoreNeedsServerStopped(t *testing.T) {
	dataDir := t.TempDir() + "/data"
	srv := startServer(t, dataDir)
	c := srv.client()
	topic, group := uniqueName(t, "cli."), uniqueName(t, "clig")
	imagoExpect(t, srv, exitOK, "topics", "create", topic, "--partitions", "1")
	produceN(t, c, topic, 1, 0, 5)
	if err := consumeAll(t, c, group, topic, 1, 5)(); err != nil {
		t.Fatal(err)
	}
	wantContains(t, imagoExpect(t, srv, exitFailure, "groups", "reset", group, "--topic", topic, "--to-offset", "1", "--data-dir", dataDir),
		"in use by a running imago serve")
	srv.stop()
	// Server down: --to-latest needs it, --to-offset does not.
	imagoExpect(t, srv, exitFailure, "groups", "reset", group, "--topic", topic, "--to-latest", "--data-dir", dataDir)
	wantContains(t, imagoExpect(t, srv, exitOK, "groups", "reset", group, "--topic", topic, "--to-offset", "2", "--data-dir", dataDir),
		"reset group", "5", "2")
	wantContains(t, imagoExpect(t, srv, exitOK, "groups", "list", "--data-dir", dataDir), group)
	srv = startServer(t, dataDir)
	if offs, _ := groupState(t, srv.client(), group, topic); offs[0] != 2 {
		t.Fatalf("after an offline reset to 2: %v", offs)
	}
}

func TestMigrateCLI(t *testing.T) {
	pg, my := testenv.PostgresDSN(t), testenv.MySQLDSN(t)
	srv := &serverProc{URL: "http://127.0.0.1:1"} // migrate does not talk to a server
	latest := func(dialect string) int {
		fsys, err := migrations.FS(dialect)
		if err != nil {
			t.Fatal(err)
		}
		names, _ := fs.Glob(fsys, "*.sql")
		return len(names)
	}
	wantContains(t, imagoExpect(t, srv, exitOK, "migrate", "--dsn", pg),
		fmt.Sprintf("postgres database postgres@127.0.0.1:5432/test is at migration version %d", latest(migrations.Postgres)))
	out := imagoExpect(t, srv, exitOK, "migrate", "--dsn", my, "-o", "json")
	wantContains(t, out, `"dialect": "mysql"`, fmt.Sprintf(`"version": %d`, latest(migrations.MySQL)))
	imagoExpect(t, srv, exitOK, "migrate", "--dsn", my, "--driver", "mariadb")
	imagoExpect(t, srv, exitUsage, "migrate")
	imagoExpect(t, srv, exitUsage, "migrate", "--dsn", "what is this")
	imagoExpect(t, srv, exitUsage, "migrate", "--dsn", pg, "--driver", "oracle")
	// A password in the DSN is never printed.
	wantContains(t, imagoExpect(t, srv, exitFailure, "migrate", "--dsn", "postgres://u:s3cr3t@127.0.0.1:1/x?connect_timeout=2"), "u@127.0.0.1:1/x")
	if _, out, errOut := imago(t, srv, "", "migrate", "--dsn", "postgres://u:s3cr3t@127.0.0.1:1/x?connect_timeout=2"); strings.Contains(out+errOut, "s3cr3t") {
		t.Fatalf("password printed: %s%s", out, errOut)
	}
}

func TestDLQCLIUsage(t *testing.T) {
	srv := startServer(t, t.TempDir()+"/data")
	imagoExpect(t, srv, exitUsage, "dlq")
	imagoExpect(t, srv, exitUsage, "dlq", "replay")
	imagoExpect(t, srv, exitUsage, "dlq", "replay", "t", "--from", "yesterday")
	imagoExpect(t, srv, exitUsage, "dlq", "replay", "t", "--partition", "-1")
	wantContains(t, imagoExpect(t, srv, exitNotFound, "dlq", "replay", "no-such-topic"), "no-such-topic.DLQ")
	wantContains(t, imagoExpect(t, srv, exitOK, "dlq", "replay", "--help"), "imago-replay-group", "Examples:")
}

// TestGroupsResetWarnsWhenLiveMembersUnchecked: with a database store the server may run
// while reset writes the store, and reset refuses while the group has live members. When the
// server it asks (--server) does not answer, it cannot know: the reset goes ahead (the server
// may be stopped), but it must say that the live members were not checked. Here a live member
// runs on a server --server does not name.
func TestGroupsResetWarnsWhenLiveMembersUnchecked(t *testing.T) {
	srv, _, dsn, topic, group := pgGroupsServer(t)
	c := srv.client()
	imagoExpect(t, srv, exitOK, "topics", "create", topic, "--partitions", "1")
	produceN(t, c, topic, 1, 0, 5)
	stop := consumeAll(t, c, group, topic, 1, 5)
	defer stop()

	elsewhere := &serverProc{URL: "http://127.0.0.1:1"} // nothing listens there
	code, out, stderr := imago(t, elsewhere, "", "groups", "reset", group, "--topic", topic, "--partition", "0", "--to-offset", "1", "--store", "postgres", "--dsn", dsn)
	if code != exitOK {
		t.Fatalf("reset with the server unreachable: exit %d\n%s%s", code, out, stderr)
	}
	wantContains(t, stderr, "warning", "does not answer", "not checked for live members")
}

// pgGroupsServer starts a server whose offsets are in the test PostgreSQL, opens that database,
// and names a topic and a group for the test, whose rows are deleted at its end.
func pgGroupsServer(t *testing.T) (srv *serverProc, db *sql.DB, dsn, topic, group string) {
	t.Helper()
	dsn = testenv.PostgresDSN(t)
	srv = startServerEnv(t, t.TempDir()+"/data", []string{"IMAGO_OFFSETS_STORE=postgres", "IMAGO_OFFSETS_DSN=" + dsn})
	topic, group = uniqueName(t, "cli."), uniqueName(t, "clig")
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = db.Exec("DELETE FROM imago.consumer_offsets WHERE group_name = $1", group)
		_, _ = db.Exec("DELETE FROM imago.partition_ends WHERE topic = $1", topic)
		db.Close()
	})
	return srv, db, dsn, topic, group
}
