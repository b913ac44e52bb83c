package xa

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imagomq/imago/broker"
	"github.com/imagomq/imago/internal/testenv"
)

// TestDatabaseRestartsDuringPhaseTwo runs the bank workload in this process (8 workers of
// random transfers between MariaDB and PostgreSQL accounts, each with a settlement message,
// each with a client id) while PostgreSQL and MariaDB are stopped and started again, two
// times each, at moments when transfers are in phase 2: a restart begins in the commit-decision
// hook of a transfer (the server goes down before that transfer's phase 2 and while others'
// run) and the server comes back a second later. Recovery runs every second and finished
// transactions are kept 10 s, so recovery passes, prunes and database outages overlap. Then:
// totals conserved, no transfer half-applied or published twice, nothing left prepared, and
// every answer matches the final state (a commit decision ⇒ applied everywhere; rolled_back
// or rolling_back ⇒ applied nowhere; no in_doubt). It restarts the shared servers, so it runs
// only with IMAGO_DISRUPTIVE=1 (make disruptive, serially, under
// flock /tmp/imago-dbrestart.lock).
func TestDatabaseRestartsDuringPhaseTwo(t *testing.T) {
	if os.Getenv("IMAGO_DISRUPTIVE") != "1" {
		t.Skip("restarts PostgreSQL and MariaDB; set IMAGO_DISRUPTIVE=1 to run (serially)")
	}
	t.Cleanup(func() { ensureDatabasesUp(t) })
	e := newEnv(t)
	n := e.bankSetup()
	node := newNode(t)
	o := e.options(node)
	o.RecoveryInterval = time.Second
	o.StatusRetention, o.Retention = 10*time.Second, 10*time.Second
	o.PhaseTimeout = 2 * time.Second
	o.Grace = 5 * time.Second
	e.rollbackLeftovers(node, o.Resources)
	c := e.open(o)
	ctx := context.Background()

	stops := []func() func(){stopPostgres(t), stopMariaDB(t), stopPostgres(t), stopMariaDB(t)}
	var restarting atomic.Bool
	var next atomic.Int32
	var nextAt atomic.Int64 // UnixNano of the earliest next restart
	nextAt.Store(time.Now().Add(3 * time.Second).UnixNano())
	var restarts sync.WaitGroup
	c.hookAfterDecision = func(string) error {
		i := int(next.Load())
		if i >= len(stops) || time.Now().UnixNano() < nextAt.Load() || !restarting.CompareAndSwap(false, true) {
			return nil
		}
		next.Add(1)
		start := stops[i]() // the server is down now, before this transfer's phase 2
		restarts.Add(1)
		go func() {
			defer restarts.Done()
			time.Sleep(time.Second) // the outage
			start()
			nextAt.Store(time.Now().Add(5 * time.Second).UnixNano())
			restarting.Store(false)
		}()
		return nil
	}

	type answer struct {
		status Status
		err    error
	}
	var mu sync.Mutex
	answers := map[string]answer{}
	stop := make(chan struct{})
	var workers sync.WaitGroup
	for w := 0; w < bankWorkers; w++ {
		workers.Add(1)
		go func(w int) {
			defer workers.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				tid := fmt.Sprintf("%s-%d-%d", e.suffix, w, i)
				myAcct, pgAcct := fmt.Sprint("m", mrand.IntN(bankAccounts)), fmt.Sprint("p", mrand.IntN(bankAccounts))
				amount, toPG := int64(1+mrand.IntN(400)), mrand.IntN(2) == 0
				in, err := c.Run(ctx, BeginOptions{ID: tid, Timeout: 5 * time.Second}, func(ctx context.Context, tx *GlobalTx) error {
					return bankTransfer(ctx, tx, n, tid, myAcct, pgAcct, amount, toPG)
				})
				mu.Lock()
				answers[tid] = answer{in.Status, err}
				mu.Unlock()
				var r *Reason
				if err != nil && !(errors.As(err, &r) && r.Code == "step_failed") {
					time.Sleep(20 * time.Millisecond) // a server may be down: do not spin
				}
			}
		}(w)
	}
	deadline := time.Now().Add(40 * time.Second)
	for int(next.Load()) < len(stops) && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	restarts.Wait()
	time.Sleep(2 * time.Second) // some load after the last restart
	close(stop)
	workers.Wait()
	if got := int(next.Load()); got < len(stops) {
		t.Errorf("only %d of %d restarts happened (too few transfers reached phase 2)", got, len(stops))
	}
	ensureDatabasesUp(t)

	waitFor(t, "recovery to finish every transfer", func() bool {
		s := c.Stats()
		return s.Pending == 0 && s.InDoubt == 0 && s.Active == 0 && len(e.prepared(node)) == 0
	})
	total, wj, lj, msgs := e.bankState(n)
	if want := int64(2 * bankAccounts * bankInitial); total != want {
		t.Errorf("total balance %d, want %d", total, want)
	}
	count := map[string]int{}
	for tid, a := range answers {
		inAll := wj[tid] && lj[tid] && msgs[tid] == 1
		inNone := !wj[tid] && !lj[tid] && msgs[tid] == 0
		kind := "other"
		switch {
		case a.err == nil:
			kind = "commit decided (" + string(a.status) + ")"
		case errors.Is(a.err, ErrRolledBack):
			kind = "rolled back (" + string(a.status) + ")"
		case errors.Is(a.err, ErrInDoubt):
			kind = "in_doubt"
		}
		count[kind]++
		switch {
		case msgs[tid] > 1:
			t.Errorf("transfer %s has %d messages", tid, msgs[tid])
		case !inAll && !inNone:
			t.Errorf("transfer %s half-applied: debit/credit %v/%v, %d messages (answer %s %v)", tid, wj[tid], lj[tid], msgs[tid], a.status, a.err)
		case a.err == nil && !inAll:
			t.Errorf("transfer %s answered %s but is applied nowhere", tid, a.status)
		case errors.Is(a.err, ErrRolledBack) && !inNone:
			t.Errorf("transfer %s answered %s (%v) but is applied", tid, a.status, a.err)
		case a.err != nil && !errors.Is(a.err, ErrRolledBack):
			t.Errorf("transfer %s answered %s: %v", tid, a.status, a.err)
		}
	}
	for tid := range wj {
		if _, ok := answers[tid]; !ok {
			t.Errorf("journal row %s of a transfer never run", tid)
		}
	}
	t.Logf("%d transfers: %v", len(answers), count)
}

// bankSetup creates the bank's tables (dropped at the end of the test) with the initial
// balances, and its topic.
func (e *env) bankSetup() bankNames {
	e.t.Helper()
	n := namesFor(e.suffix)
	for _, q := range []struct {
		db *sql.DB
		q  string
	}{
		{e.my, "CREATE TABLE " + n.wallet + " (id VARCHAR(16) PRIMARY KEY, balance BIGINT NOT NULL) ENGINE=InnoDB"},
		{e.my, "CREATE TABLE " + n.wjournal + " (tid VARCHAR(64) PRIMARY KEY, delta BIGINT NOT NULL) ENGINE=InnoDB"},
		{e.pg, "CREATE TABLE " + n.ledger + " (id TEXT PRIMARY KEY, balance BIGINT NOT NULL)"},
		{e.pg, "CREATE TABLE " + n.ljournal + " (tid TEXT PRIMARY KEY, delta BIGINT NOT NULL)"},
	} {
		if _, err := q.db.Exec(q.q); err != nil {
			e.t.Fatal(err)
		}
	}
	e.t.Cleanup(func() {
		e.my.Exec("DROP TABLE IF EXISTS " + n.wallet + ", " + n.wjournal)
		e.pg.Exec("DROP TABLE IF EXISTS " + n.ledger + ", " + n.ljournal)
	})
	for i := 0; i < bankAccounts; i++ {
		if _, err := e.my.Exec("INSERT INTO "+n.wallet+" VALUES (?, ?)", fmt.Sprint("m", i), bankInitial); err != nil {
			e.t.Fatal(err)
		}
		if _, err := e.pg.Exec("INSERT INTO "+n.ledger+" VALUES ($1, $2)", fmt.Sprint("p", i), bankInitial); err != nil {
			e.t.Fatal(err)
		}
	}
	if e.b != nil {
		if _, err := e.b.CreateTopic(n.topic, broker.TopicConfig{Partitions: 1}); err != nil {
			e.t.Fatal(err)
		}
	}
	return n
}

// bankState reads the bank's final state: the total balance over both databases, the
// journals' transfer ids, and the number of messages per transfer id in b.
func (e *env) bankState(n bankNames) (total int64, wj, lj map[string]bool, msgs map[string]int) {
	e.t.Helper()
	for _, q := range []struct {
		db *sql.DB
		q  string
	}{{e.my, "SELECT COALESCE(SUM(balance),0) FROM " + n.wallet}, {e.pg, "SELECT COALESCE(SUM(balance),0) FROM " + n.ledger}} {
		var v int64
		if err := q.db.QueryRow(q.q).Scan(&v); err != nil {
			e.t.Fatal(err)
		}
		total += v
	}
	journal := func(db *sql.DB, table string) map[string]bool {
		rows, err := db.Query("SELECT tid FROM " + table)
		if err != nil {
			e.t.Fatal(err)
		}
		defer rows.Close()
		m := map[string]bool{}
		for rows.Next() {
			var tid string
			if err := rows.Scan(&tid); err != nil {
				e.t.Fatal(err)
			}
			m[tid] = true
		}
		return m
	}
	wj, lj = journal(e.my, n.wjournal), journal(e.pg, n.ljournal)
	msgs = map[string]int{}
	for off := int64(0); ; {
		res, err := e.b.Fetch(context.Background(), n.topic, 0, broker.FetchOptions{Offset: off, MaxMessages: 1000})
		if err != nil {
			e.t.Fatal(err)
		}
		for _, m := range res.Messages {
			msgs[string(m.Key)]++
		}
		if res.NextOffset >= res.EndOffset || len(res.Messages) == 0 {
			break
		}
		off = res.NextOffset
	}
	return total, wj, lj, msgs
}

// stopPostgres returns a function that stops PostgreSQL at once (immediate mode: as a crash,
// prepared transactions survive in the WAL) and returns the function that starts it again.
func stopPostgres(t *testing.T) func() func() {
	return func() func() {
		run(t, "pg_ctlcluster", "--skip-systemctl-redirect", "15", "main", "stop", "--mode", "immediate")
		return func() { run(t, "pg_ctlcluster", "--skip-systemctl-redirect", "15", "main", "start") }
	}
}

// stopMariaDB returns a function that stops MariaDB (as restartMariaDB does) and returns the
// function that starts it again with the arguments it ran with.
func stopMariaDB(t *testing.T) func() func() {
	return func() func() {
		args := mariadbArgs(t)
		if args == nil {
			return func() {}
		}
		run(t, "start-stop-daemon", "--stop", "--exec", mariadbd, "--retry", "TERM/60/KILL/5")
		return func() {
			run(t, "start-stop-daemon", append([]string{"--start", "--oknodo", "--background", "--exec", mariadbd, "--"}, args...)...)
		}
	}
}

func run(t *testing.T, name string, args ...string) {
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Errorf("%s %v: %v: %s", name, args, err, out)
	}
}

// ensureDatabasesUp starts whichever server is down and waits until both answer.
func ensureDatabasesUp(t *testing.T) {
	exec.Command("pg_ctlcluster", "--skip-systemctl-redirect", "15", "main", "start").Run() // fails when running
	if mariadbArgs(nil) == nil {
		exec.Command("start-stop-daemon", "--start", "--oknodo", "--background", "--exec", mariadbd).Run()
	}
	my, err := OpenMySQLDB(testenv.MySQLDSN(t))
	if err != nil {
		t.Fatal(err)
	}
	defer my.Close()
	pg, err := sql.Open("pgx", testenv.PostgresDSN(t))
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close()
	waitFor(t, "both databases", func() bool { return my.Ping() == nil && pg.Ping() == nil })
}
