package main

// The global transaction throughput figure, gated: with 32 concurrent clients, global
// transactions per second through POST /v1/global-transactions (one MariaDB step, one
// PostgreSQL step, one message) against the raw rate of each database's own two-phase cycle
// at the same concurrency with the same statement (MariaDB: XA START, UPDATE, XA END,
// XA PREPARE, XA COMMIT; PostgreSQL: BEGIN, UPDATE, PREPARE TRANSACTION, COMMIT PREPARED),
// all measured in one run. The bound is what the two cycles' CPU, measured apart, allows;
// a third load runs both cycles in each client (both prepared, then both committed: a
// coordinator with no log, no HTTP and no broker), which is the same work with the two
// databases sharing the CPUs as they do under Imago.
//
//	go test ./cmd/imago -run GlobalThroughput -gbench.duration 10s -v
//
// Each client updates an account of its own, so the figure is the protocol's cost, not
// lock waits.

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imagomq/imago/api"
	"github.com/imagomq/imago/client"
	"github.com/imagomq/imago/internal/testenv"
)

var (
	gbenchDuration = flag.Duration("gbench.duration", 0, "global transaction throughput test: duration of each load (0 skips the test)")
	gbenchClients  = flag.Int("gbench.clients", 32, "global transaction throughput test: concurrent clients")
	gbenchProfile  = flag.String("gbench.serverprofile", "", "global transaction throughput test: write the server's CPU profile over the global load to this file (with several decision logs, the log's name is added)")
	gbenchDeclogs  = flag.String("gbench.declog", "file,commitlog", "global transaction throughput test: the coordinator.decision_log values to measure, comma-separated, each against the same raw cycles")
)

func TestGlobalThroughput(t *testing.T) {
	d := *gbenchDuration
	if d <= 0 {
		t.Skip("set -gbench.duration (e.g. 10s) to measure global transactions/s")
	}
	clients := *gbenchClients
	sfx := gbankSuffix(t)
	wallet, ledger, topic := "gbn_w_"+sfx, "gbn_l_"+sfx, "gbench."+sfx
	my, err := sql.Open("mysql", testenv.MySQLDSN(t))
	if err != nil {
		t.Fatal(err)
	}
	pg, err := sql.Open("pgx", testenv.PostgresDSN(t))
	if err != nil {
		t.Fatal(err)
	}
	my.SetMaxIdleConns(clients + 4)
	pg.SetMaxIdleConns(clients + 4)
	t.Cleanup(func() {
		my.Exec("DROP TABLE IF EXISTS " + wallet)
		pg.Exec("DROP TABLE IF EXISTS " + ledger)
		my.Close()
		pg.Close()
	})
	if _, err := my.Exec("CREATE TABLE " + wallet + " (id VARCHAR(16) PRIMARY KEY, balance BIGINT NOT NULL) ENGINE=InnoDB"); err != nil {
		t.Fatal(err)
	}
	if _, err := pg.Exec("CREATE TABLE " + ledger + " (id TEXT PRIMARY KEY, balance BIGINT NOT NULL)"); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < clients; i++ {
		my.Exec("INSERT INTO "+wallet+" VALUES (?, 1000000000)", fmt.Sprint("a", i))
		pg.Exec("INSERT INTO "+ledger+" VALUES ($1, 0)", fmt.Sprint("a", i))
	}
	myStmt := "UPDATE " + wallet + " SET balance = balance - ? WHERE id = ?"
	pgStmt := "UPDATE " + ledger + " SET balance = balance + $1 WHERE id = $2"

	// Raw two-phase cycles, each database alone, then both in one client loop.
	ctx := context.Background()
	var seq atomic.Int64
	// A cycle is one database's two-phase cycle on one connection of its own. MariaDB's
	// prepare runs XA START, the statement, XA END and XA PREPARE, its commit XA COMMIT; the
	// statement is prepared once per connection, as the coordinator's MariaDB pool keeps it
	// (plain go-sql-driver would prepare and close it on every call, a slower baseline).
	type cycle struct {
		prepare, commit func() error
		close           func()
	}
	// steps runs qs in order on exec, and stmt (the cycle's statement) where qs has "".
	steps := func(qs []string, stmt func() error, exec func(q string) error) error {
		for _, q := range qs {
			var err error
			if q == "" {
				err = stmt()
			} else {
				err = exec(q)
			}
			if err != nil {
				return err
			}
		}
		return nil
	}
	myCycle := func(i int) cycle {
		conn, err := my.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		stmt, err := conn.PrepareContext(ctx, myStmt)
		if err != nil {
			t.Fatal(err)
		}
		exec := func(q string) error { _, err := conn.ExecContext(ctx, q); return err }
		var xid string
		return cycle{
			prepare: func() error {
				xid = fmt.Sprintf("X'%s'", hex.EncodeToString([]byte(fmt.Sprintf("gbn%s-%d", sfx, seq.Add(1)))))
				return steps([]string{"XA START " + xid, "", "XA END " + xid, "XA PREPARE " + xid},
					func() error { _, err := stmt.ExecContext(ctx, 1, fmt.Sprint("a", i)); return err }, exec)
			},
			commit: func() error { return exec("XA COMMIT " + xid) },
			close:  func() { stmt.Close(); conn.Close() },
		}
	}
	pgCycle := func(i int) cycle {
		conn, err := pg.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		exec := func(q string) error { _, err := conn.ExecContext(ctx, q); return err }
		var gid string
		return cycle{
			prepare: func() error {
				gid = fmt.Sprintf("'gbn_%s_%d'", sfx, seq.Add(1))
				return steps([]string{"BEGIN", "", "PREPARE TRANSACTION " + gid},
					func() error { _, err := conn.ExecContext(ctx, pgStmt, 1, fmt.Sprint("a", i)); return err }, exec)
			},
			commit: func() error { return exec("COMMIT PREPARED " + gid) },
			close:  func() { conn.Close() },
		}
	}
	// run is a client loop's operation: every cycle prepared in turn, then every one committed.
	run := func(cs ...cycle) (func() error, func()) {
		return func() error {
				for _, c := range cs {
					if err := c.prepare(); err != nil {
						return err
					}
				}
				for _, c := range cs {
					if err := c.commit(); err != nil {
						return err
					}
				}
				return nil
			}, func() {
				for _, c := range cs {
					c.close()
				}
			}
	}
	probe := gbenchProbe{my: my, pg: pg}
	rawMy := gbenchLoad(t, clients, d, probe, func(i int) (func() error, func()) { return run(myCycle(i)) })
	rawPg := gbenchLoad(t, clients, d, probe, func(i int) (func() error, func()) { return run(pgCycle(i)) })
	// Both cycles in one client: what a coordinator with no decision log, no HTTP and no
	// broker would cost, with the two databases sharing the CPUs as they do under Imago.
	rawBoth := gbenchLoad(t, clients, d, probe, func(i int) (func() error, func()) { return run(myCycle(i), pgCycle(i)) })

	// Global transactions through the HTTP API, once per decision log.
	runGlobal := func(declog, profile string) gbenchResult {
		dir := t.TempDir()
		cfg := fmt.Sprintf(`coordinator: {decision_log: %s}
resources:
  wallet: {driver: mysql, dsn: %q}
  ledger: {driver: postgres, dsn: %q}
operations:
  wallet.debit: {sql: "UPDATE %s SET balance = balance - :amount WHERE id = :account", expect_rows: 1, params: {account: string, amount: integer}}
  ledger.credit: {sql: "UPDATE %s SET balance = balance + :amount WHERE id = :account", expect_rows: 1, params: {account: string, amount: integer}}
`, declog, testenv.MySQLDSN(t), testenv.PostgresDSN(t), wallet, ledger)
		cfgPath := filepath.Join(dir, "imago.yaml")
		if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		args := []string{"--config", cfgPath}
		const pprofAddr = "127.0.0.1:16061"
		if profile != "" {
			args = append(args, "--pprof-addr", pprofAddr)
		}
		srv := startServer(t, filepath.Join(dir, "data"), args...)
		if _, err := srv.client().CreateTopic(ctx, topic, client.TopicConfig{Partitions: 4}); err != nil {
			t.Fatal(err)
		}
		hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: clients + 4}}
		profiled := make(chan error, 1)
		if profile != "" {
			go func() {
				secs := max(1, int(d.Seconds())-1)
				resp, err := http.Get(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", pprofAddr, secs))
				if err == nil {
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					err = os.WriteFile(profile, b, 0o644)
				}
				profiled <- err
			}()
		} else {
			profiled <- nil
		}
		pid := srv.cmd.Process.Pid
		global := gbenchLoad(t, clients, d, gbenchProbe{server: pid, my: my, pg: pg}, func(i int) (func() error, func()) {
			acct := fmt.Sprint("a", i)
			body, _ := json.Marshal(api.GlobalTxRequest{Steps: []api.GlobalTxStep{
				{Resource: "wallet", Operation: "debit", Params: map[string]any{"account": acct, "amount": 1}},
				{Resource: "ledger", Operation: "credit", Params: map[string]any{"account": acct, "amount": 1}},
			}, Messages: []api.TxMessage{{Topic: topic, ProduceMessage: api.ProduceMessage{Key: &acct, Value: json.RawMessage(`{"amount":1}`)}}}})
			return func() error {
				resp, err := hc.Post(srv.URL+"/v1/global-transactions", "application/json", bytes.NewReader(body))
				if err != nil {
					return err
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					return fmt.Errorf("HTTP %d: %s", resp.StatusCode, b)
				}
				return nil
			}, func() {}
		})
		if resp, err := hc.Get(srv.URL + "/metrics"); err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			var fsyncs float64 // fsync calls of the broker and, with the file log, of the decision file
			for _, l := range bytes.Split(b, []byte("\n")) {
				if bytes.HasPrefix(l, []byte("imago_xa_phase_duration_seconds_sum")) || bytes.HasPrefix(l, []byte("imago_xa_phase_duration_seconds_count")) ||
					bytes.HasPrefix(l, []byte("imago_xa_decision_log_fsync_seconds_sum")) || bytes.HasPrefix(l, []byte("imago_xa_decision_log_fsync_seconds_count")) {
					t.Logf("%s", l)
				}
				f := strings.Fields(string(l))
				if len(f) == 2 && (f[0] == "imago_fsync_duration_seconds_count" || declog == "file" && f[0] == "imago_xa_decision_log_fsync_seconds_count") {
					n, _ := strconv.ParseFloat(f[1], 64)
					fsyncs += n
				}
			}
			global.fsyncs = fsyncs / (global.rate * d.Seconds())
		}
		if err := <-profiled; err != nil {
			t.Errorf("server profile: %v", err)
		}
		srv.stop()
		return global
	}

	slower := min(rawMy.rate, rawPg.rate)
	// On one machine the databases share the CPUs with each other and with Imago. A global
	// transaction runs one cycle on each database, so if each raw cycle already keeps the CPUs
	// busy, the CPU time of the two cycles added is what one global transaction needs at least
	// (less only by the round trips Imago saves), before HTTP, the broker and the decision log.
	both := rawMy.cpuPerOp() + rawPg.cpuPerOp()
	bound := float64(runtime.NumCPU()) / both
	for _, declog := range strings.Split(*gbenchDeclogs, ",") {
		profile := *gbenchProfile
		if profile != "" && strings.Contains(*gbenchDeclogs, ",") {
			profile += "." + declog
		}
		global := runGlobal(declog, profile)
		t.Logf("%d clients, %s each: MariaDB XA cycle %.0f/s (CPUs %.0f%% busy), PostgreSQL 2PC cycle %.0f/s (%.0f%% busy), global transactions over HTTP (decision_log %s) %.0f/s (%.0f%% busy, %.2f fsync calls of Imago each): %.0f%% of the slower database, %.0f%% of the bound the two cycles allow",
			clients, d, rawMy.rate, 100*rawMy.busy, rawPg.rate, 100*rawPg.busy, declog, global.rate, 100*global.busy, global.fsyncs, 100*global.rate/slower, 100*global.rate/bound)
		t.Logf("CPU per operation (decision_log %s): MariaDB cycle %.0f µs, PostgreSQL cycle %.0f µs, global transaction %.0f µs (Imago's own, load generator included: %.0f µs = %.0f%% of the two cycles); "+
			"the two cycles alone allow %.0f/s = %.0f%% of the slower database on this machine",
			declog, 1e6*rawMy.cpuPerOp(), 1e6*rawPg.cpuPerOp(), 1e6*global.cpuPerOp(), 1e6*(global.cpuPerOp()-both), 100*(global.cpuPerOp()-both)/both,
			bound, 100*bound/slower)
		t.Logf("CPU per operation by process (decision_log %s): MariaDB cycle: %s; PostgreSQL cycle: %s; global transaction: %s",
			declog, rawMy.split(), rawPg.split(), global.split())
		t.Logf("Database counters per operation (decision_log %s): MariaDB cycle: %s; PostgreSQL cycle: %s; global transaction: %s",
			declog, rawMy.counts(), rawPg.counts(), global.counts())
		// The loop with both cycles is a coordinator that costs nothing: its own share of the
		// bound is as far as any coordinator could go on this machine.
		t.Logf("Both cycles in one client loop, no Imago (decision_log %s): %.0f/s = %.0f%% of the bound, %.0f µs each (%s; %s): global transactions are %.0f%% of its rate, and Imago's own CPU against it, load generator included, is %.0f µs = %.0f%%",
			declog, rawBoth.rate, 100*rawBoth.rate/bound, 1e6*rawBoth.cpuPerOp(), rawBoth.split(), rawBoth.counts(), 100*global.rate/rawBoth.rate,
			1e6*(global.cpuPerOp()-rawBoth.cpuPerOp()), 100*(global.cpuPerOp()-rawBoth.cpuPerOp())/rawBoth.cpuPerOp())
	}
}

// gbenchLoad runs clients loops of one operation each for d and returns operations/s. setup
// returns client i's operation and its cleanup. An operation's error fails the test.
// probe names what is measured apart: the server's CPU time and the databases' counters.
func gbenchLoad(t *testing.T, clients int, d time.Duration, probe gbenchProbe, setup func(i int) (func() error, func())) gbenchResult {
	t.Helper()
	var done atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	ops := make([]func() error, clients)
	cleanups := make([]func(), clients)
	for i := range clients {
		ops[i], cleanups[i] = setup(i)
	}
	cpu0, procs0, db0 := readCPUTicks(), readProcCPU(probe.server), probe.read()
	began := time.Now()
	stop := began.Add(d)
	for i := 0; i < clients; i++ {
		op, cleanup := ops[i], cleanups[i]
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer cleanup()
			for time.Now().Before(stop) {
				if err := op(); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	if err, ok := firstErr.Load().(error); ok {
		t.Fatalf("load failed: %v", err)
	}
	rate := float64(done.Load()) / time.Since(began).Seconds()
	cpu1, procs1, db1 := readCPUTicks(), readProcCPU(probe.server), probe.read()
	return gbenchResult{rate: rate, busy: cpu1.busySince(cpu0), ops: done.Load(), busyTicks: (cpu1.total - cpu1.idle) - (cpu0.total - cpu0.idle),
		procs: procs1.minus(procs0), db: db1.minus(db0)}
}

// gbenchResult is one load's rate and how busy the machine's CPUs were meanwhile (0..1).
type gbenchResult struct {
	rate, busy, fsyncs float64 // fsyncs: per operation (global transactions only)
	ops                int64
	busyTicks          uint64  // the machine's busy clock ticks (all CPUs) over the load
	procs              procCPU // the CPU ticks of the processes named apart
	db                 dbCounters
}

// gbenchProbe is what a load measures besides its rate and the machine's CPU: the Imago
// server's CPU time (server: its pid, 0 for none) and the databases' counters.
type gbenchProbe struct {
	server int
	my, pg *sql.DB
}

// dbCounters are server-wide counters of MariaDB (statements, statements executed as
// prepared, InnoDB fsyncs) and PostgreSQL (WAL fsyncs, transactions committed in every
// database). They count other programs' work on the same servers too (the machine may be
// shared): read them against the raw cycles' figures of the same run.
type dbCounters struct{ myQuestions, myExecute, myFsyncs, pgWALSyncs, pgCommits float64 }

func (p gbenchProbe) read() dbCounters {
	var c dbCounters
	ctx := context.Background()
	rows, err := p.my.QueryContext(ctx, "SHOW GLOBAL STATUS WHERE Variable_name IN ('Questions', 'Com_stmt_execute', 'Innodb_data_fsyncs')")
	if err == nil {
		for rows.Next() {
			var k string
			var v float64
			if rows.Scan(&k, &v) == nil {
				switch k {
				case "Questions":
					c.myQuestions = v
				case "Com_stmt_execute":
					c.myExecute = v
				case "Innodb_data_fsyncs":
					c.myFsyncs = v
				}
			}
		}
		rows.Close()
	}
	// Backends publish their statistics within a second of a transaction's end: a few
	// transactions at the edges of a load may be counted in the next one.
	p.pg.QueryRowContext(ctx, "SELECT (SELECT wal_sync FROM pg_stat_wal), (SELECT sum(xact_commit) FROM pg_stat_database)").Scan(&c.pgWALSyncs, &c.pgCommits)
	return c
}

func (c dbCounters) minus(d dbCounters) dbCounters {
	return dbCounters{c.myQuestions - d.myQuestions, c.myExecute - d.myExecute, c.myFsyncs - d.myFsyncs, c.pgWALSyncs - d.pgWALSyncs, c.pgCommits - d.pgCommits}
}

// counts is the databases' counters per operation.
func (r gbenchResult) counts() string {
	n := float64(max(1, r.ops))
	c := r.db
	return fmt.Sprintf("MariaDB %.2f statements (%.2f as prepared), %.2f InnoDB fsyncs; PostgreSQL %.2f WAL fsyncs, %.2f commits",
		c.myQuestions/n, c.myExecute/n, c.myFsyncs/n, c.pgWALSyncs/n, c.pgCommits/n)
}

// split is where an operation's CPU went, in µs per operation: the load generator (this
// test process: the raw cycles' database client, or the HTTP client of the global load), the
// Imago server, MariaDB, PostgreSQL, and everything else (the kernel's work outside those
// processes' system time, other programs on the machine).
func (r gbenchResult) split() string {
	us := func(ticks uint64) float64 { return 1e6 * float64(ticks) / clockTicks / float64(max(1, r.ops)) }
	p := r.procs
	named := p.self + p.server + p.mariadb + p.postgres
	other := 0.0
	if r.busyTicks > named {
		other = us(r.busyTicks - named)
	}
	s := fmt.Sprintf("load generator %.0f µs, MariaDB %.0f µs, PostgreSQL %.0f µs", us(p.self), us(p.mariadb), us(p.postgres))
	if p.server > 0 {
		s += fmt.Sprintf(", Imago server %.0f µs", us(p.server))
	}
	return s + fmt.Sprintf(", other %.0f µs", other)
}

// clockTicks is USER_HZ, the unit of /proc/stat and /proc/<pid>/stat (100 on Linux).
const clockTicks = 100

// procCPU is CPU time in clock ticks (user + system, with that of reaped children) of this
// process, the Imago server, MariaDB (mariadbd or mysqld) and PostgreSQL (every postgres
// process: a backend that exits is counted in the postmaster's children's time).
type procCPU struct{ self, server, mariadb, postgres uint64 }

func (p procCPU) minus(q procCPU) procCPU {
	sub := func(a, b uint64) uint64 {
		if a < b {
			return 0
		}
		return a - b
	}
	return procCPU{sub(p.self, q.self), sub(p.server, q.server), sub(p.mariadb, q.mariadb), sub(p.postgres, q.postgres)}
}

func readProcCPU(server int) procCPU {
	var c procCPU
	c.self, _ = procTicks("self")
	if server > 0 {
		c.server, _ = procTicks(strconv.Itoa(server))
	}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if e.Name()[0] < '0' || e.Name()[0] > '9' {
			continue
		}
		comm, _ := os.ReadFile("/proc/" + e.Name() + "/comm")
		switch strings.TrimSpace(string(comm)) {
		case "mariadbd", "mysqld":
			n, _ := procTicks(e.Name())
			c.mariadb += n
		case "postgres":
			n, _ := procTicks(e.Name())
			c.postgres += n
		}
	}
	return c
}

// procTicks is utime + stime + cutime + cstime of /proc/<pid>/stat.
func procTicks(pid string) (uint64, bool) {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return 0, false
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(string(b[i+1:])) // f[0] is field 3 (state)
	if len(f) < 15 {
		return 0, false
	}
	var n uint64
	for _, k := range []int{11, 12, 13, 14} {
		v, _ := strconv.ParseUint(f[k], 10, 64)
		n += v
	}
	return n, true
}

// cpuPerOp is the machine CPU time one operation took, in CPU-seconds: the CPUs' busy time
// over the load (steal left out) per operation.
func (r gbenchResult) cpuPerOp() float64 {
	return float64(r.busyTicks) / clockTicks / float64(max(1, r.ops))
}

// cpuTicks is the first line of /proc/stat: total and idle (idle + iowait) jiffies of all CPUs.
// The total leaves out steal (time the hypervisor gave to other machines: on a shared virtual
// machine it can be a tenth of the time under load, and counted as busy it would be charged to
// whatever ran, the global transactions' "other" above all) and guest time (already in user).
type cpuTicks struct{ total, idle uint64 }

func readCPUTicks() cpuTicks {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuTicks{}
	}
	line, _, _ := strings.Cut(string(b), "\n")
	var c cpuTicks
	// user nice system idle iowait irq softirq steal guest guest_nice
	for i, f := range strings.Fields(line)[1:] {
		if i >= 7 {
			break
		}
		v, _ := strconv.ParseUint(f, 10, 64)
		c.total += v
		if i == 3 || i == 4 {
			c.idle += v
		}
	}
	return c
}

func (c cpuTicks) busySince(prev cpuTicks) float64 {
	if c.total <= prev.total {
		return 0
	}
	return 1 - float64(c.idle-prev.idle)/float64(c.total-prev.total)
}
