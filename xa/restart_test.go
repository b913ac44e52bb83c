package xa

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

const mariadbd = "/usr/sbin/mariadbd"

// restartMariaDB stops the running mariadbd and starts it again with the arguments it ran
// with, the way scripts/services.sh starts it (start-stop-daemon, no systemd).
func restartMariaDB(t *testing.T) {
	t.Helper()
	stopMariaDB(t)()()
}

// mariadbArgs returns the arguments of the running mariadbd, nil (and a test error when t is
// not nil) when none runs.
func mariadbArgs(t *testing.T) []string {
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		if exe, err := os.Readlink(d + "/exe"); err != nil || exe != mariadbd {
			continue
		}
		raw, err := os.ReadFile(d + "/cmdline")
		if err != nil {
			continue
		}
		return strings.Split(string(bytes.TrimRight(raw, "\x00")), "\x00")[1:]
	}
	if t != nil {
		t.Errorf("no running %s found", mariadbd)
	}
	return nil
}

// MariaDB restarts after the commit decision: the prepared branch survives the restart, the
// phase-2 commit on the pinned (now dead) connection fails, and recovery commits the branch
// from a new session.
func TestMariaDBRestartBetweenPrepareAndCommit(t *testing.T) {
	if os.Getenv("IMAGO_DISRUPTIVE") != "1" {
		t.Skip("restarts MariaDB; set IMAGO_DISRUPTIVE=1 to run (serially)")
	}
	e := newEnv(t)
	table := e.tables(map[string]int64{"a": 100, "b": 0})
	node := newNode(t)
	c := e.open(e.options(node))
	c.hookAfterDecision = func(string) error {
		restartMariaDB(t)
		return nil
	}
	ctx := context.Background()
	id := "myrestart-" + e.suffix
	in, err := c.Run(ctx, BeginOptions{ID: id}, func(ctx context.Context, tx *GlobalTx) error {
		return transfer(ctx, tx, table, "a", "b", 40, msg("xat."+e.suffix, "a", `{}`))
	})
	if err != nil {
		t.Fatalf("the decision was commit; Run must not fail: %+v %v", in, err)
	}
	t.Logf("status right after commit: %s", in.Status)
	waitFor(t, "MariaDB", func() bool { return e.my.Ping() == nil })
	waitFor(t, "recovery to finish the commit", func() bool {
		got, _ := c.Get(id)
		return got.Status == StatusCommitted
	})
	if e.balance(e.my, table, "a") != 60 || e.balance(e.pg, table, "b") != 40 || len(e.messages("xat."+e.suffix)) != 1 {
		t.Fatal("the restart lost a branch")
	}
	if p := e.prepared(node); len(p) != 0 {
		t.Fatalf("left prepared: %v", p)
	}
}

// closeInheritedOnExec marks every file descriptor this process inherited (beyond stdin,
// stdout and stderr) close-on-exec. The disruptive tests run under
// flock /tmp/imago-dbrestart.lock, whose descriptor the test process inherits; without this, a
// database server a test starts (pg_ctlcluster, start-stop-daemon) would inherit it too and
// hold the lock for as long as it runs.
func closeInheritedOnExec() {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return
	}
	for _, e := range ents {
		if fd, err := strconv.Atoi(e.Name()); err == nil && fd > 2 {
			syscall.CloseOnExec(fd)
		}
	}
}
