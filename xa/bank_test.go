package xa

import (
	"bufio"
	"context"
	"database/sql"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/imagomq/imago/broker"
	"github.com/imagomq/imago/internal/testenv"
)

// The bank test of the Go library (issue 5, acceptance 3): accounts split between MariaDB
// (wallet) and PostgreSQL (ledger), concurrent random transfers across the two, each with a
// settlement message in the broker, run by a child process (this test binary re-executed)
// that is SIGKILLed at random moments and restarted. Short by default (5 kills);
// IMAGO_XA_BANK_LONG=1 runs 30.

const bankChildEnv = "IMAGO_XA_BANK_CHILD"

func TestMain(m *testing.M) {
	closeInheritedOnExec()
	if os.Getenv(bankChildEnv) != "" {
		os.Exit(bankChild())
	}
	os.Exit(m.Run())
}

const (
	bankAccounts = 5
	bankInitial  = 1000
	bankWorkers  = 8
)

type bankNames struct{ wallet, wjournal, ledger, ljournal, topic string }

func namesFor(s string) bankNames {
	return bankNames{wallet: "xab_w_" + s, wjournal: "xab_wj_" + s, ledger: "xab_l_" + s, ljournal: "xab_lj_" + s, topic: "xab." + s}
}

// TestBankCrash runs the bank with each decision log: the file, the broker's commit log and a
// table (in PostgreSQL).
func TestBankCrash(t *testing.T) {
	for _, declog := range []string{"file", "commitlog", "table"} {
		t.Run(declog, func(t *testing.T) { bankCrash(t, declog) })
	}
}

func bankCrash(t *testing.T, declog string) {
	e := newEnv(t)
	e.b.Close() // the children own the broker directory (and create the topic)
	e.b = nil
	s := e.suffix
	n := e.bankSetup()
	node := newNode(t)
	kills := 5
	if os.Getenv("IMAGO_XA_BANK_LONG") == "1" {
		kills = 30
	}
	started, committed, rolledBack := map[string]bool{}, map[string]bool{}, map[string]bool{}
	var mu sync.Mutex
	run := func(mode string, kill bool) {
		cmd := exec.Command(os.Args[0], "-test.run=^TestBankCrash$")
		cmd.Env = append(os.Environ(), bankChildEnv+"="+mode, "XAB_SUFFIX="+s, "XAB_NODE="+node, "XAB_DECLOG="+declog, "XAB_DIR="+e.dir,
			"XAB_MY="+testenv.MySQLDSN(t), "XAB_PG="+testenv.PostgresDSN(t))
		cmd.Stderr = os.Stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		ready := make(chan struct{})
		scanned := make(chan struct{})
		go func() {
			defer close(scanned)
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				f := strings.Fields(sc.Text())
				if len(f) == 0 {
					continue
				}
				mu.Lock()
				switch f[0] {
				case "READY":
					close(ready)
				case "S":
					started[f[1]] = true
				case "C":
					committed[f[1]] = true
				case "R":
					rolledBack[f[1]] = true
				}
				mu.Unlock()
			}
		}()
		select {
		case <-ready:
		case <-time.After(60 * time.Second):
			cmd.Process.Kill()
			t.Fatalf("child %s never got ready", mode)
		}
		if kill {
			time.Sleep(time.Duration(300+mrand.IntN(1200)) * time.Millisecond) // a random moment, not a synchronisation
			cmd.Process.Signal(syscall.SIGKILL)
		}
		<-scanned
		err = cmd.Wait()
		if !kill && err != nil {
			t.Fatalf("child %s: %v", mode, err)
		}
	}
	for i := 0; i < kills; i++ {
		run("run", true)
	}
	run("drain", false)

	e.b = openQuietBroker(t, e.dir+"/broker", nil)
	total, wj, lj, msgs := e.bankState(n)
	if want := int64(2 * bankAccounts * bankInitial); total != want {
		t.Errorf("total balance %d, want %d", total, want)
	}
	cut := 0
	for tid := range started {
		inAll := wj[tid] && lj[tid] && msgs[tid] == 1
		inNone := !wj[tid] && !lj[tid] && msgs[tid] == 0
		switch {
		case msgs[tid] > 1:
			t.Errorf("transfer %s has %d messages", tid, msgs[tid])
		case committed[tid] && !inAll:
			t.Errorf("committed transfer %s: debit/credit %v/%v, %d messages", tid, wj[tid], lj[tid], msgs[tid])
		case rolledBack[tid] && !inNone:
			t.Errorf("rolled-back transfer %s: debit/credit %v/%v, %d messages", tid, wj[tid], lj[tid], msgs[tid])
		case !committed[tid] && !rolledBack[tid]:
			cut++
			if !inAll && !inNone {
				t.Errorf("cut transfer %s is partial: debit/credit %v/%v, %d messages", tid, wj[tid], lj[tid], msgs[tid])
			}
		}
	}
	for tid := range wj {
		if !started[tid] {
			t.Errorf("journal row %s of a transfer never started", tid)
		}
	}
	if p := e.prepared(node); len(p) != 0 {
		t.Errorf("prepared branches left: %v", p)
	}
	t.Logf("decision log %s, %d kills: %d transfers started, %d committed, %d rolled back, %d cut by a kill", declog, kills, len(started), len(committed), len(rolledBack), cut)
	if len(committed) == 0 || len(rolledBack) == 0 {
		t.Errorf("the load did not exercise both outcomes")
	}
}

// bankChild is the child process: "run" transfers until killed; "drain" recovers and exits.
func bankChild() int {
	mode := os.Getenv(bankChildEnv)
	n := namesFor(os.Getenv("XAB_SUFFIX"))
	dir := os.Getenv("XAB_DIR")
	fail := func(err error) int { fmt.Fprintln(os.Stderr, "bank child:", err); return 2 }
	my, err := sql.Open("mysql", os.Getenv("XAB_MY"))
	if err != nil {
		return fail(err)
	}
	pg, err := sql.Open("pgx", os.Getenv("XAB_PG"))
	if err != nil {
		return fail(err)
	}
	bo := broker.NewOptions(dir + "/broker")
	bo.Logger = quietLogger()
	b, err := broker.Open(bo)
	if err != nil {
		return fail(err)
	}
	if _, err := b.CreateTopic(n.topic, broker.TopicConfig{Partitions: 1}); err != nil {
		return fail(err)
	}
	o := NewOptions(dir + "/coord")
	o.NodeID = os.Getenv("XAB_NODE")
	o.Resources = []Resource{MySQL("wallet", my), Postgres("ledger", pg), Broker("broker", b)}
	o.Grace = time.Second
	o.RecoveryInterval = 200 * time.Millisecond
	o.Logger = quietLogger()
	switch os.Getenv("XAB_DECLOG") {
	case "commitlog":
		o.DecisionBroker = b
	case "table":
		o.DecisionDB, o.DecisionDialect = pg, "postgres"
	}
	ctx := context.Background()
	c, err := Open(ctx, o)
	if err != nil {
		return fail(err)
	}
	var outMu sync.Mutex
	say := func(format string, args ...any) {
		outMu.Lock()
		fmt.Fprintf(os.Stdout, format+"\n", args...)
		outMu.Unlock()
	}
	if mode == "drain" {
		say("READY")
		deadline := time.Now().Add(60 * time.Second)
		for {
			rerr := c.Recover(ctx)
			st := c.Stats()
			left := 0
			for _, r := range o.Resources {
				xids, _ := r.rm().recover(ctx)
				for _, x := range xids {
					if _, node, _, _ := parseXid(x); node == o.NodeID {
						left++
					}
				}
			}
			if rerr == nil && st.Pending == 0 && st.InDoubt == 0 && left == 0 {
				break
			}
			if time.Now().After(deadline) {
				return fail(fmt.Errorf("not drained: %+v, %d prepared, %v", st, left, rerr))
			}
			time.Sleep(100 * time.Millisecond)
		}
		c.Close()
		b.Close()
		return 0
	}
	nonce := strconv.FormatUint(mrand.Uint64(), 36)
	say("READY")
	var wg sync.WaitGroup
	for w := 0; w < bankWorkers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; ; i++ {
				tid := fmt.Sprintf("%s-%d-%d", nonce, w, i)
				myAcct, pgAcct := fmt.Sprint("m", mrand.IntN(bankAccounts)), fmt.Sprint("p", mrand.IntN(bankAccounts))
				amount := int64(1 + mrand.IntN(400))
				if i%8 == 7 {
					// More than the bank holds: rolls back whatever the balances, so a short
					// or slow run still sees both outcomes.
					amount = 2*bankAccounts*bankInitial + 1
				}
				toPG := mrand.IntN(2) == 0
				say("S %s", tid)
				_, err := c.Run(ctx, BeginOptions{ID: tid, Timeout: 5 * time.Second}, func(ctx context.Context, tx *GlobalTx) error {
					return bankTransfer(ctx, tx, n, tid, myAcct, pgAcct, amount, toPG)
				})
				switch {
				case err == nil:
					say("C %s", tid)
				case errors.Is(err, ErrRolledBack):
					say("R %s", tid)
				default:
					say("E %s %v", tid, strings.ReplaceAll(err.Error(), "\n", " "))
				}
			}
		}(w)
	}
	wg.Wait()
	return 0
}

// bankTransfer moves amount between a wallet account (MariaDB) and a ledger account
// (PostgreSQL), toPG giving the direction, journals it on both sides under tid and publishes
// its settlement message (key tid).
func bankTransfer(ctx context.Context, tx *GlobalTx, n bankNames, tid, myAcct, pgAcct string, amount int64, toPG bool) error {
	// MariaDB first, then PostgreSQL, in every transfer: no cross-database deadlock.
	wb, _ := tx.Enlist(ctx, "wallet")
	lb, _ := tx.Enlist(ctx, "ledger")
	myDelta, pgDelta := -amount, amount
	if !toPG {
		myDelta, pgDelta = amount, -amount
	}
	k, err := wb.Exec(ctx, "UPDATE "+n.wallet+" SET balance = balance + ? WHERE id = ? AND balance + ? >= 0", myDelta, myAcct, myDelta)
	if err != nil {
		return err
	}
	if k != 1 {
		return &Reason{Code: "step_failed", Message: "insufficient funds in " + myAcct}
	}
	if _, err := wb.Exec(ctx, "INSERT INTO "+n.wjournal+" VALUES (?, ?)", tid, myDelta); err != nil {
		return err
	}
	k, err = lb.Exec(ctx, "UPDATE "+n.ledger+" SET balance = balance + $1 WHERE id = $2 AND balance + $1 >= 0", pgDelta, pgAcct)
	if err != nil {
		return err
	}
	if k != 1 {
		return &Reason{Code: "step_failed", Message: "insufficient funds in " + pgAcct}
	}
	if _, err := lb.Exec(ctx, "INSERT INTO "+n.ljournal+" VALUES ($1, $2)", tid, pgDelta); err != nil {
		return err
	}
	return tx.Publish(ctx, broker.TxMessage{Topic: n.topic, Message: broker.Message{
		Key: []byte(tid), Value: []byte(`{"amount":` + strconv.FormatInt(amount, 10) + `}`), ValueJSON: true, Partition: -1}})
}
