#!/usr/bin/env bash
# scripts/figures.sh — the figures of the later issues, each group measured in one run on a
# fresh server (the foundation's figures are scripts/bench.sh):
#   text protocol (issue 7): durable puts, 1 KiB, 64 connections, 1 and 16 in flight, against
#     HTTP produce (64 connections, 1 per request) and NATS JetStream's default publish (64 in
#     flight); get MB/s from page cache (in-process benchmark)
#   XA (issue 4): branches/s (start, 1 message, end, prepare, commit; 32 connections), five
#     requests per branch and with a compound start, each against plain produce in the same run
#   offsets (issue 3): group commit against one UPDATE per commit, PostgreSQL and MariaDB
#   coordinator (issue 5): global transactions against each database's raw two-phase cycle
# Needs the services of scripts/services.sh (sources .services.env). Durations: FIG_DURATION;
# FIG_ONLY=protocol|xa|offsets|coordinator runs one group.
set -euo pipefail
cd "$(dirname "$0")/.."
D="${FIG_DURATION:-10s}"
WORK="$(mktemp -d /var/tmp/imago-figures.XXXXXX)"
trap 'if [[ -n "${PID:-}" ]]; then kill "$PID" 2>/dev/null || true; fi; rm -rf "$WORK"' EXIT
go build -o "$WORK/imago" ./cmd/imago
IMAGO="$WORK/imago"

start() {
	rm -rf "$WORK/data" "$WORK/ready"
	"$IMAGO" serve --data-dir "$WORK/data" --http-addr 127.0.0.1:0 --protocol-addr 127.0.0.1:0 \
		--ready-file "$WORK/ready" >>"$WORK/serve.log" 2>&1 &
	PID=$!
	for _ in $(seq 600); do [[ -s "$WORK/ready" ]] && break; sleep 0.1; done
	SERVER="$(head -n1 "$WORK/ready")"
	PROTO="$(sed -n 's/^protocol //p' "$WORK/ready")"
}
stop() { kill "$PID"; wait "$PID" 2>/dev/null || true; PID=; }

ONLY="${FIG_ONLY:-all}"
want() { [[ "$ONLY" == all || "$ONLY" == "$1" ]]; }

if want protocol; then
echo "== text protocol vs HTTP vs NATS JetStream (1 KiB, $D each)"
start
# JetStream's bench keeps 64 publishes in flight on one connection: the same shape first.
"$IMAGO" bench put --server "$SERVER" --protocol "$PROTO" --connections 1 --inflight 64 --duration "$D" --progress never
"$IMAGO" bench put --server "$SERVER" --protocol "$PROTO" --connections 64 --inflight 1 --duration "$D" --progress never
"$IMAGO" bench put --server "$SERVER" --protocol "$PROTO" --connections 64 --inflight 16 --duration "$D" --progress never
"$IMAGO" bench produce --server "$SERVER" --connections 64 --batch 1 --duration "$D" --progress never
stop
if [[ -x scripts/nats-bench.sh ]]; then bash scripts/nats-bench.sh -duration "$D"; fi
go test -run '^$' -bench 'BenchmarkGet' -benchtime 3s ./textproto | grep -E '^Benchmark'
fi

if want xa; then
echo "== XA branches vs plain produce (32 connections, $D each)"
start
"$IMAGO" bench xa --server "$SERVER" --duration "$D" --progress never
"$IMAGO" bench xa --server "$SERVER" --duration "$D" --compound --progress never
stop
fi

if want offsets; then
echo "== offset commits: group commit vs one UPDATE per commit (64 committers)"
set -a
# shellcheck disable=SC1091
[[ -f .services.env ]] && . ./.services.env
set +a
for db in "postgres|${IMAGO_TEST_PG_DSN:-postgres://postgres@127.0.0.1:5432/test?sslmode=disable}" \
	"mysql|${IMAGO_TEST_MYSQL_DSN:-root@tcp(127.0.0.1:3306)/test}"; do
	echo "-- ${db%%|*}"
	"$IMAGO" bench offsets --store "${db%%|*}" --dsn "${db#*|}" --duration "$D"
done
fi

if want coordinator; then
echo "== global transactions over HTTP vs each database's raw 2PC cycle (32 clients, $D each)"
set -a
# shellcheck disable=SC1091
[[ -f .services.env ]] && . ./.services.env
set +a
go test -count=1 ./cmd/imago -run GlobalThroughput -gbench.duration "$D" -v 2>&1 | grep -E 'clients|CPU per|FAIL' || true
fi
