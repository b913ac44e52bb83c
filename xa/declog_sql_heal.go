package xa

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/imagomq/imago/migrations"
)

// Healing the decision table after a write of unknown outcome (a connection lost mid-COMMIT,
// a PostgreSQL PANIC, a server killed or failed over while a batch was in flight). The write
// fails the log (no transaction prepares, Ping reports it), as it fails the file log; but
// unlike a failed fsync, the table can be read back. The writer then does in the process what
// a restart does, on a fresh session, tried again with a growing pause (sqlHealPause doubling
// to sqlMaxHealPause) until the database answers:
//
//  1. it ends the session that carried the write (PostgreSQL's pg_terminate_backend, MySQL's
//     KILL) and waits until the server no longer lists it, unless the server restarted since:
//     then no statement of it can still commit after the rows are read;
//  2. it reads back the rows of the records whose write outcome is unknown: a row holding the
//     record means the record is durable; a row holding an older one (or none) means it was
//     not written;
//  3. a commit decision that was not written is a rollback: its rollback decision is written
//     first (presumed abort records every outcome before acting on it), and the log holds it,
//     so the first decision wins from then on (declog_first.go);
//  4. it un-fails the log, and hands the outcomes to the coordinator (takeHealed), whose
//     recovery turns each transaction left in_doubt with decision_log_failed into committing
//     or rolling back and finishes its branches, as after a restart.
//
// The file log and the commit log's decisions do not heal: an fsync that failed leaves the
// file's state unknown to the process (the kernel may have dropped the pages).

const (
	sqlHealPause    = 100 * time.Millisecond
	sqlMaxHealPause = 5 * time.Second
)

// sqlSession names the writer's session on the server, so that healing can end it: the
// backend's pid and start (PostgreSQL), the connection id and the server's uptime when it
// was opened (MySQL/MariaDB, whose connection ids start again after a server restart).
type sqlSession struct {
	id     int64
	start  time.Time // PostgreSQL: backend_start
	uptime int64     // MySQL: the server's Uptime in seconds at open
	opened time.Time // MySQL: when it was opened (monotonic)
}

// sqlHeal is the state of healing: the writer's part (writer goroutine only) and the outcomes
// the coordinator has not taken yet (healMu).
type sqlHeal struct {
	sess    sqlSession        // the writer's last session (writerConn)
	unknown map[string]record // the records of a write of unknown outcome, by gtrid; nil: none

	healMu sync.Mutex
	healed map[string]record // gtrid → the record the table holds after healing (zero Kind: none)
}

// identify records which session conn is (writerConn, at open).
func (l *sqlDecisionLog) identify(ctx context.Context, conn *sql.Conn) error {
	var s sqlSession
	if l.cfg.dialect == migrations.Postgres {
		if err := conn.QueryRowContext(ctx, "SELECT pg_backend_pid(), backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()").Scan(&s.id, &s.start); err != nil {
			return err
		}
	} else {
		if err := conn.QueryRowContext(ctx, "SELECT CONNECTION_ID()").Scan(&s.id); err != nil {
			return err
		}
		up, err := mysqlUptime(ctx, conn)
		if err != nil {
			return err
		}
		s.uptime, s.opened = up, time.Now()
	}
	l.sess = s
	return nil
}

func mysqlUptime(ctx context.Context, conn *sql.Conn) (int64, error) {
	var name, value string
	if err := conn.QueryRowContext(ctx, "SHOW GLOBAL STATUS LIKE 'Uptime'").Scan(&name, &value); err != nil {
		return 0, err
	}
	return strconv.ParseInt(value, 10, 64)
}

// endSession ends the session s (from conn, another one) and returns once the server no
// longer lists it: whatever it was running has then committed or rolled back.
func (l *sqlDecisionLog) endSession(ctx context.Context, conn *sql.Conn, s sqlSession) error {
	if s.id == 0 {
		return nil
	}
	listed := func() (bool, error) {
		var n int
		var err error
		if l.cfg.dialect == migrations.Postgres {
			err = conn.QueryRowContext(ctx, "SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND backend_start = $2", s.id, s.start).Scan(&n)
		} else {
			err = conn.QueryRowContext(ctx, "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = ?", s.id).Scan(&n)
		}
		return n > 0, err
	}
	if l.cfg.dialect == migrations.MySQL {
		up, err := mysqlUptime(ctx, conn)
		if err != nil {
			return err
		}
		if up+2 < s.uptime+int64(time.Since(s.opened).Seconds()) {
			return nil // the server restarted since the session opened: it is gone, and its id may be another's
		}
	}
	for killed := false; ; {
		on, err := listed()
		if err != nil {
			return err
		}
		if !on {
			return nil
		}
		if !killed {
			l.cfg.log.Warn("decision log: ending the session of the write of unknown outcome before reading the table back", "table", l.table, "session", s.id)
			if l.cfg.dialect == migrations.Postgres {
				_, err = conn.ExecContext(ctx, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid = $1 AND backend_start = $2", s.id, s.start)
			} else {
				_, err = conn.ExecContext(ctx, "KILL CONNECTION "+strconv.FormatInt(s.id, 10))
				var me *mysql.MySQLError
				if errors.As(err, &me) && me.Number == 1094 { // unknown thread id: gone meanwhile
					err = nil
				}
			}
			if err != nil {
				return err
			}
			killed = true
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("session %d still listed: %w", s.id, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// noteUnknown keeps rows, written by a write of unknown outcome, for healing.
func (l *sqlDecisionLog) noteUnknown(rows []record) {
	if l.unknown == nil {
		l.unknown = make(map[string]record, len(rows))
	}
	for _, r := range rows {
		l.unknown[r.Gtrid] = r
	}
}

// tryHeal makes one attempt to heal the log (see above) and reports whether it did.
func (l *sqlDecisionLog) tryHeal(attempt int) bool {
	ctx, cancel := context.WithTimeout(context.Background(), l.cfg.writeTimeout+sqlClientSlack)
	defer cancel()
	durable, rolledBack, err := l.heal(ctx)
	if err != nil {
		if attempt == 1 || attempt%10 == 0 {
			l.cfg.log.Warn("decision log: cannot read the table back yet after a write of unknown outcome; trying again", "table", l.table, "attempt", attempt, "err", err)
		}
		return false
	}
	l.unfail()
	l.cfg.log.Info("decision log healed: the table was read back after a write of unknown outcome; global transactions decide again",
		"table", l.table, "durable", durable, "not_written", len(rolledBack), "rolled_back", strings.Join(rolledBack, ","))
	if l.cfg.onHeal != nil {
		l.cfg.onHeal()
	}
	return true
}

// heal reads back the records of l.unknown, writes the rollback decision of each commit
// decision not written, and updates entries and healed. It returns the number of records
// found durable and the gtrids rolled back.
func (l *sqlDecisionLog) heal(ctx context.Context) (durable int, rolledBack []string, err error) {
	old := l.sess
	conn, err := l.writerConn(ctx)
	if err != nil {
		return 0, nil, err
	}
	if err := l.endSession(ctx, conn, old); err != nil {
		l.dropWriterConn()
		l.sess = old
		return 0, nil, fmt.Errorf("end the session of the write: %w", err)
	}
	gtrids := make([]string, 0, len(l.unknown))
	for g := range l.unknown {
		gtrids = append(gtrids, g)
	}
	frames, err := l.readBack(ctx, conn, gtrids)
	if err != nil {
		l.dropWriterConn()
		return 0, nil, err
	}
	held := make(map[string]record, len(gtrids))
	var rollbacks []record
	for _, g := range gtrids {
		u := l.unknown[g]
		frame, found := frames[g]
		if found && bytes.Equal(frame, appendRecord(nil, &u)) {
			held[g] = u
			durable++
			continue
		}
		var cur record
		if found {
			r, n, err := decodeFrame(frame)
			if err == nil && (n != len(frame) || r.Gtrid != g) {
				err = errBadRecord
			}
			if err != nil {
				l.dropWriterConn()
				return 0, nil, fmt.Errorf("decision log table %s, gtrid %s: %w", l.table, g, err)
			}
			cur = r
			held[g] = r
		}
		// A commit decision not written is a rollback, recorded first, when the table holds
		// no decision for it (one it holds, say from an earlier record, stands: the first
		// decision wins). Other records not written (a resolve, "done") were answered as
		// failed, or are written again by whoever needs them: the table keeps what it holds.
		if u.Kind == recCommit && decisionOf(&cur) == decideNone {
			rollbacks = append(rollbacks, healRollback(u, l.cfg.now()))
		}
	}
	if len(rollbacks) > 0 {
		if _, err := l.upsert(rollbacks); err != nil {
			l.dropWriterConn()
			return 0, nil, fmt.Errorf("write the rollback decisions of %d commit decisions not written: %w", len(rollbacks), err)
		}
		for _, r := range rollbacks {
			held[r.Gtrid] = r
			rolledBack = append(rolledBack, r.Gtrid)
		}
	}
	l.healMu.Lock()
	if l.healed == nil {
		l.healed = map[string]record{}
	}
	for _, g := range gtrids {
		r, ok := held[g]
		if ok {
			l.entries[g] = r
			l.ages.written(r)
		} else {
			delete(l.entries, g)
			l.ages.forget(g)
		}
		l.healed[g] = r
	}
	l.healMu.Unlock()
	l.unknown = nil
	return durable, rolledBack, nil
}

// healRollback is the rollback decision of u, a commit decision that was not written.
func healRollback(u record, now time.Time) record {
	r := u
	r.Kind, r.Status, r.Decided, r.Finished = recRollback, StatusRollingBack, now, time.Time{}
	r.Code = CodeDecisionLogFailed
	r.Message = "the decision log did not write the commit decision (read back after its write's outcome was unknown); rolled back"
	r.Branches = make([]recBranch, len(u.Branches))
	for i, b := range u.Branches {
		b.CommitSent = false
		r.Branches[i] = b
	}
	return r
}

// readBack returns the record column of this node's rows of gtrids.
func (l *sqlDecisionLog) readBack(ctx context.Context, conn *sql.Conn, gtrids []string) (map[string][]byte, error) {
	out := make(map[string][]byte, len(gtrids))
	for len(gtrids) > 0 {
		chunk := gtrids[:min(len(gtrids), mysqlDecisionRows)]
		gtrids = gtrids[len(chunk):]
		var rows *sql.Rows
		var err error
		if l.cfg.dialect == migrations.Postgres {
			rows, err = conn.QueryContext(ctx, "SELECT gtrid, record FROM imago.xa_decisions WHERE node_id = $1 AND gtrid = ANY($2::text[])", l.cfg.node, chunk)
		} else {
			args := make([]any, 0, len(chunk)+1)
			args = append(args, l.cfg.node)
			for _, g := range chunk {
				args = append(args, g)
			}
			rows, err = conn.QueryContext(ctx, "SELECT gtrid, record FROM imago_xa_decisions WHERE node_id = ? AND gtrid IN (?"+strings.Repeat(",?", len(chunk)-1)+")", args...)
		}
		if err != nil {
			return nil, fmt.Errorf("read back decision log table %s: %w", l.table, err)
		}
		for rows.Next() {
			var g string
			var frame []byte
			if err := rows.Scan(&g, &frame); err != nil {
				rows.Close()
				return nil, fmt.Errorf("read back decision log table %s: %w", l.table, err)
			}
			out[g] = frame
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return nil, fmt.Errorf("read back decision log table %s: %w", l.table, err)
		}
	}
	return out, nil
}

// takeHealed returns the outcomes healing found (gtrid → the record the table holds; a zero
// Kind when none) that the coordinator has not taken yet, and forgets them.
func (l *sqlDecisionLog) takeHealed() map[string]record {
	l.healMu.Lock()
	defer l.healMu.Unlock()
	h := l.healed
	l.healed = nil
	return h
}
