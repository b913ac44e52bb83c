package outbox

import (
	"context"
	"fmt"
	"strconv"
	"strings"
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
