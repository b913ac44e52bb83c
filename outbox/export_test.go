package outbox

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// PGPlans opens a PostgreSQL session as a relay does (its session settings; no lock taken)
// and returns, for each statement the relay runs on the outbox table, its plan as EXPLAIN
// (FORMAT JSON) prints it, both as a custom plan and as the generic plan PostgreSQL may
// switch a cached statement to. The batch is (cur, end]; ids are the ids it removes.
func PGPlans(ctx context.Context, opts Options, curTxid uint64, curID int64, endTxid uint64, endID int64, ids []int64) (map[string]string, error) {
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	s, err := openPG(ctx, &opts)
	if err != nil {
		return nil, err
	}
	defer s.close()
	ct, et := "'"+strconv.FormatUint(curTxid, 10)+"'", "'"+strconv.FormatUint(endTxid, 10)+"'"
	ci, ei := strconv.FormatInt(curID, 10), strconv.FormatInt(endID, 10)
	arr := make([]string, len(ids))
	for i, id := range ids {
		arr[i] = strconv.FormatInt(id, 10)
	}
	stmts := []struct{ name, sql, args string }{
		{"next", s.sqlNext(), ct + ", " + ci + ", 1000"},
		{"open rows", s.sqlOpenRows(), ct + ", " + ci},
		{"claimed", s.sqlClaimed(), ct + ", " + ci + ", " + et + ", " + ei},
		{"remove", s.sqlRemove(), "ARRAY[" + strings.Join(arr, ",") + "]::bigint[]"},
		{"range count", s.sqlRangeCount(), ct + ", " + ci + ", " + et + ", " + ei},
		{"backlog", s.sqlBacklog(), ct + ", " + ci},
	}
	out := map[string]string{}
	for i, st := range stmts {
		name := "imago_plan_" + strconv.Itoa(i)
		if _, err := s.conn.Exec(ctx, `PREPARE `+name+` AS `+st.sql); err != nil {
			return nil, fmt.Errorf("prepare %s: %w", st.name, err)
		}
		for _, mode := range []string{"force_custom_plan", "force_generic_plan"} {
			if _, err := s.conn.Exec(ctx, `SET plan_cache_mode = `+mode); err != nil {
				return nil, err
			}
			var plan string
			if err := s.conn.QueryRow(ctx, `EXPLAIN (FORMAT JSON) EXECUTE `+name+`(`+st.args+`)`).Scan(&plan); err != nil {
				return nil, fmt.Errorf("explain %s: %w", st.name, err)
			}
			out[st.name+" ("+strings.TrimPrefix(mode, "force_")+")"] = plan
		}
	}
	return out, nil
}

// StepTrxClock makes the MySQL gap check see the trx_started of thread's transaction shift
// later than InnoDB reports it, as when the database server's clock was set back by shift
// after that transaction started (the gap check's sentinel starting after the step). views
// counts the views of innodb_trx the check has read from the first that showed a sentinel
// on: the first is the one the check decides on, a later one means it waits. Call restore
// once the relay has stopped.
func StepTrxClock(thread int64, shift time.Duration) (views func() int64, restore func()) {
	var n atomic.Int64
	trxViewHook = func(view []trxRow, sentinel int64) []trxRow {
		counted := n.Load() > 0
		for i := range view {
			switch view[i].key.thread {
			case thread:
				view[i].key.started = view[i].key.started.Add(shift)
			case sentinel:
				counted = true
			}
		}
		if counted {
			n.Add(1)
		}
		return view
	}
	return n.Load, func() { trxViewHook = nil }
}

// HideTrxOnce makes the MySQL gap check's first fresh view of innodb_trx (the first to show
// a sentinel with its trx_id) miss thread's transaction, as if that writer had allocated its
// outbox id and been descheduled before InnoDB listed it. after counts the views the check
// reads after its second fresh view (the second round's decision): one means the check
// waits. Call restore once the relay has stopped.
func HideTrxOnce(thread int64) (after func() int64, restore func()) {
	var fresh, n atomic.Int64
	trxViewHook = func(view []trxRow, sentinel int64) []trxRow {
		isFresh := false
		for _, t := range view {
			if t.key.thread == sentinel && t.hasTrxID() {
				isFresh = true
			}
		}
		if !isFresh {
			if fresh.Load() >= 2 {
				n.Add(1)
			}
			return view
		}
		if fresh.Add(1) > 1 {
			if fresh.Load() > 2 {
				n.Add(1)
			}
			return view
		}
		out := view[:0:0]
		for _, t := range view {
			if t.key.thread != thread {
				out = append(out, t)
			}
		}
		return out
	}
	return n.Load, func() { trxViewHook = nil }
}

// SetLateChecks sets the delays of the MySQL relay's late-row rechecks (mysql_late.go).
func SetLateChecks(o *Options, d ...time.Duration) { o.lateChecks = d }

// SetLateScanRows sets how many rows one late-row recheck statement reads.
func SetLateScanRows(o *Options, n int) { o.lateScanRows = n }

// OnLateChecked calls f for each range a late-row recheck read to its end without finding a
// row, with the round (from 0) that read it.
func OnLateChecked(o *Options, f func(lo, hi int64, round int)) { o.lateChecked = f }
