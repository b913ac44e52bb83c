package outbox

import (
	"strconv"
	"strings"
)

// The operator commands the relay logs when it stops (docs/outbox.md is the runbook). They are
// SQL for the application's database, so an operator can run them with the tools at hand; the
// source name, quoted as a string literal, and row ids are the only values in them; the table
// name is a checked identifier (ValidTable).

// sqlString quotes s as an SQL string literal of dialect.
func sqlString(dialect, s string) string {
	s = strings.ReplaceAll(s, "'", "''")
	if dialect == MySQL {
		s = strings.ReplaceAll(s, `\`, `\\`)
	}
	return "'" + s + "'"
}

// epochSQL moves a source to a new epoch: the next batches are published under keys no earlier
// batch used. The cursor stays.
func epochSQL(dialect, source string) string {
	if dialect == MySQL {
		return "UPDATE " + mysqlStateTable + " SET epoch = epoch + 1 WHERE source = " + sqlString(dialect, source)
	}
	return "UPDATE " + pgStateTable + " SET epoch = epoch + 1 WHERE source = " + sqlString(dialect, source)
}

// resetSQL resets a PostgreSQL source's cursor to the start of the outbox, in a new epoch, and
// forgets the cluster it belonged to (the relay records the current one).
func resetSQL(dialect, source string) string {
	if dialect == MySQL {
		return "UPDATE " + mysqlStateTable + " SET cursor_id = 0, claim_id = NULL, epoch = epoch + 1 WHERE source = " + sqlString(dialect, source)
	}
	return "UPDATE " + pgStateTable + " SET cursor_txid = '0', cursor_id = 0, claim_txid = NULL, claim_id = NULL, system_id = NULL, epoch = epoch + 1 WHERE source = " +
		sqlString(dialect, source)
}

// removeRowSQL takes one row out of what the relay publishes: it deletes it (delete mode) or
// stamps it relayed (mark mode). The relay logs it for a row the broker refuses for its size.
func removeRowSQL(dialect, table string, mode Mode, id int64) string {
	where := " WHERE id = " + strconv.FormatInt(id, 10)
	if mode == ModeMark {
		now := "now()"
		if dialect == MySQL {
			now = "NOW(6)"
		}
		return "UPDATE " + table + " SET relayed_at = " + now + where + " AND relayed_at IS NULL"
	}
	return "DELETE FROM " + table + where
}
