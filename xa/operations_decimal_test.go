package xa

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"testing"
)

// Decimal parameters against the real databases: a number parameter, and an any parameter
// given a fraction, are exact on DECIMAL/NUMERIC columns in MariaDB and PostgreSQL alike, in
// arithmetic, in comparisons and as inserted values, up to the documented limits. MariaDB
// computes with a text parameter as a DOUBLE: bound as plain text, debiting 0.01 from
// 12345678901234567.89 left 12345678901234568.00.

// decimalTable creates "xadec_<suffix>" (id, balance of myType / pgType) in both databases,
// with the rows given, and drops it at the end of the test.
func decimalTable(t *testing.T, e *env, myType, pgType string, rows map[string]string) string {
	t.Helper()
	ctx := context.Background()
	name := "xadec_" + e.suffix
	if _, err := e.my.ExecContext(ctx, "CREATE TABLE "+name+" (id VARCHAR(16) PRIMARY KEY, balance "+myType+" NOT NULL) ENGINE=InnoDB"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.pg.ExecContext(ctx, "CREATE TABLE "+name+" (id TEXT PRIMARY KEY, balance "+pgType+" NOT NULL)"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.my.Exec("DROP TABLE IF EXISTS " + name); e.pg.Exec("DROP TABLE IF EXISTS " + name) })
	for id, bal := range rows {
		q := "INSERT INTO " + name + " VALUES ('" + id + "', " + bal + ")"
		if _, err := e.my.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
		if _, err := e.pg.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	return name
}

// decimalBalances returns the balance of id as text in MariaDB and PostgreSQL.
func decimalBalances(t *testing.T, e *env, table, id string) (my, pg string) {
	t.Helper()
	if err := e.my.QueryRow("SELECT CAST(balance AS CHAR) FROM "+table+" WHERE id = ?", id).Scan(&my); err != nil {
		t.Fatal(err)
	}
	if err := e.pg.QueryRow("SELECT balance::text FROM "+table+" WHERE id = $1", id).Scan(&pg); err != nil {
		t.Fatal(err)
	}
	return my, pg
}

// runBoth compiles sqlText as wallet.op (MariaDB) and ledger.op (PostgreSQL) with params,
// binds values to both and runs them in one global transaction (the PostgreSQL step prepared
// with its statement). It returns the rows each affected.
func runBoth(t *testing.T, e *env, c *Coordinator, id, sqlText string, params map[string]string, values map[string]string) (my, pg int64) {
	t.Helper()
	ops, err := CompileOperations(map[string]OperationConfig{
		"wallet.op": {SQL: sqlText, Params: params},
		"ledger.op": {SQL: sqlText, Params: params},
	}, c.Driver)
	if err != nil {
		t.Fatal(err)
	}
	raw := map[string]json.RawMessage{}
	for k, v := range values {
		raw[k] = json.RawMessage(v)
	}
	wop, _ := ops.Lookup("wallet", "op")
	lop, _ := ops.Lookup("ledger", "op")
	wargs, err := wop.Bind(raw)
	if err != nil {
		t.Fatal(err)
	}
	largs, err := lop.Bind(raw)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Run(context.Background(), BeginOptions{ID: id}, func(ctx context.Context, tx *GlobalTx) error {
		if my, err = wop.Run(ctx, tx, 0, wargs); err != nil {
			return err
		}
		pg, err = lop.RunPrepare(ctx, tx, 1, largs)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return my, pg
}

// TestDecimalParamExact: UPDATE arithmetic, WHERE comparisons and INSERT values with a
// number parameter, and with an undeclared (any) one, are exact in both databases.
func TestDecimalParamExact(t *testing.T) {
	const debit = "UPDATE %s SET balance = balance - :amount WHERE id = :account AND balance >= :amount"
	for _, c := range []struct {
		name, myType, pgType, start, amount, want string
		params                                    map[string]string
	}{
		{"big", "DECIMAL(30,2)", "NUMERIC(30,2)", "12345678901234567.89", "0.01", "12345678901234567.88",
			map[string]string{"account": "string", "amount": "number"}},
		{"fraction", "DECIMAL(20,18)", "NUMERIC(20,18)", "0.3", "0.1", "0.200000000000000000",
			map[string]string{"account": "string", "amount": "number"}},
		{"exponent", "DECIMAL(30,2)", "NUMERIC(30,2)", "12345678901234567.89", "1e-2", "12345678901234567.88",
			map[string]string{"account": "string", "amount": "number"}},
		{"any", "DECIMAL(30,2)", "NUMERIC(30,2)", "12345678901234567.89", "0.01", "12345678901234567.88",
			map[string]string{"account": "string"}},
		{"limits", "DECIMAL(65,30)", "NUMERIC(65,30)", "99999999999999999999999999999999999.999999999999999999999999999999",
			"0.000000000000000000000000000001", "99999999999999999999999999999999999.999999999999999999999999999998",
			map[string]string{"account": "string", "amount": "number"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t)
			table := decimalTable(t, e, c.myType, c.pgType, map[string]string{"A": c.start})
			co := e.open(e.options(newNode(t)))
			my, pg := runBoth(t, e, co, "dec-"+e.suffix, fmt.Sprintf(debit, table), c.params, map[string]string{"account": `"A"`, "amount": c.amount})
			if my != 1 || pg != 1 {
				t.Fatalf("rows affected: MariaDB %d, PostgreSQL %d, want 1", my, pg)
			}
			gotMy, gotPg := decimalBalances(t, e, table, "A")
			if gotMy != c.want || gotPg != c.want {
				t.Errorf("after debiting %s from %s: MariaDB %s, PostgreSQL %s, want %s", c.amount, c.start, gotMy, gotPg, c.want)
			}
		})
	}

	// A debit one cent past the balance matches no row. In a DOUBLE both are
	// 12345678901234568, and their difference 0 (MariaDB compares a DECIMAL column with a text
	// parameter exactly; the difference is where it lost the cent).
	t.Run("comparison", func(t *testing.T) {
		e := newEnv(t)
		table := decimalTable(t, e, "DECIMAL(30,2)", "NUMERIC(30,2)", map[string]string{"A": "12345678901234567.88"})
		co := e.open(e.options(newNode(t)))
		i := 0
		for _, where := range []string{"balance >= :amount", "balance - :amount >= 0"} {
			for _, params := range []map[string]string{{"account": "string", "amount": "number"}, {"account": "string"}} {
				i++
				q := "UPDATE " + table + " SET balance = balance - :amount WHERE id = :account AND " + where
				my, pg := runBoth(t, e, co, "cmp-"+strconv.Itoa(i)+e.suffix, q, params,
					map[string]string{"account": `"A"`, "amount": "12345678901234567.89"})
				if my != 0 || pg != 0 {
					t.Errorf("%s, %v: a debit one cent past the balance affected MariaDB %d, PostgreSQL %d rows", where, params, my, pg)
				}
			}
		}
		if my, pg := decimalBalances(t, e, table, "A"); my != "12345678901234567.88" || pg != my {
			t.Errorf("balance MariaDB %s, PostgreSQL %s", my, pg)
		}
	})

	t.Run("insert", func(t *testing.T) {
		e := newEnv(t)
		table := decimalTable(t, e, "DECIMAL(30,2)", "NUMERIC(30,2)", nil)
		co := e.open(e.options(newNode(t)))
		insert := "INSERT INTO " + table + " (id, balance) VALUES (:account, :amount)"
		for i, c := range []struct {
			account string
			params  map[string]string
		}{{"N", map[string]string{"amount": "number"}}, {"Y", nil}} {
			runBoth(t, e, co, "ins-"+strconv.Itoa(i)+e.suffix, insert, c.params,
				map[string]string{"account": `"` + c.account + `"`, "amount": "12345678901234567.89"})
			if my, pg := decimalBalances(t, e, table, c.account); my != "12345678901234567.89" || pg != my {
				t.Errorf("inserted %v: MariaDB %s, PostgreSQL %s, want 12345678901234567.89", c.params, my, pg)
			}
		}
	})

	// A number beside an integer that MySQL needs bare (LIMIT ? takes no CAST).
	t.Run("limit", func(t *testing.T) {
		e := newEnv(t)
		table := decimalTable(t, e, "DECIMAL(30,2)", "NUMERIC(30,2)", map[string]string{"A": "12345678901234567.89"})
		co := e.open(e.options(newNode(t)))
		ops, err := CompileOperations(map[string]OperationConfig{"wallet.credit": {
			SQL:    "UPDATE " + table + " SET balance = balance + :amount WHERE id = :account ORDER BY id LIMIT :n",
			Params: map[string]string{"amount": "number", "n": "integer min=1"}}}, co.Driver)
		if err != nil {
			t.Fatal(err)
		}
		op, _ := ops.Lookup("wallet", "credit")
		args, err := op.Bind(map[string]json.RawMessage{"amount": json.RawMessage("0.01"), "account": json.RawMessage(`"A"`), "n": json.RawMessage("1")})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := co.Run(context.Background(), BeginOptions{ID: "lim-" + e.suffix}, func(ctx context.Context, tx *GlobalTx) error {
			_, err := op.Run(ctx, tx, 0, args)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if my, _ := decimalBalances(t, e, table, "A"); my != "12345678901234567.90" {
			t.Errorf("MariaDB balance %s, want 12345678901234567.90", my)
		}
	})
}
