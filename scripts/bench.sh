#!/usr/bin/env bash
# scripts/bench.sh — the figures of the foundation issue (acceptance 7), measured in one run.
#
# Builds imago, starts a fresh `imago serve` (fsync: always) on a temporary data directory and a
# free port, and runs, in order:
#   1. durable produce: 1 KiB messages, 64 connections, 1 message per request
#   2. batched durable produce: 100 x 1 KiB per request, 64 connections
#   3. bench disk: sequential 1 MiB writes + fsync in the same data directory, right before and
#      right after the batched run (this VM's disk rate drifts; the mean of the two is the baseline)
#   4. fetch of a 1 GiB partition over HTTP (filled first, then read from page cache)
#   5. restart with ~10 GiB of log: fill, SIGKILL, time `imago serve` until its ready file
#      appears and until /healthz answers
#   6. the NATS JetStream baseline, when scripts/nats-bench.sh exists (BENCH_NATS=0 skips it)
# and prints a summary table with the targets of the issue. Exit status: 0 when the run
# completed (whatever the figures), 1 when something failed to run.
#
# Environment (sizes accept 1GiB-style units, as imago does):
#   BENCH_DURATION       duration of each produce/disk run (default 10s)
#   BENCH_CONNECTIONS    connections for produce (default 64)
#   BENCH_BATCH_CONNECTIONS  connections for batched produce (default: BENCH_CONNECTIONS)
#   BENCH_FETCH_BYTES    size of the fetched partition (default 1GiB)
#   BENCH_RESTART_BYTES  log size for the restart figure (default 10GiB; 0 skips it)
#   BENCH_DIR            parent of the temporary data directory (default /var/tmp: disk, not tmpfs)
#   BENCH_NATS           auto (default: run scripts/nats-bench.sh if present) or 0
#   BENCH_QUICK=1        a quick smoke run: 2s runs, 64MiB fetch, 512MiB restart log
#   IMAGO_BIN            use this imago binary instead of building one
#
# Example: BENCH_QUICK=1 scripts/bench.sh        make bench
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ "${BENCH_QUICK:-0}" == 1 ]]; then
	: "${BENCH_DURATION:=2s}" "${BENCH_FETCH_BYTES:=64MiB}" "${BENCH_RESTART_BYTES:=512MiB}"
fi
DURATION="${BENCH_DURATION:-10s}"
CONNS="${BENCH_CONNECTIONS:-64}"
BATCH_CONNS="${BENCH_BATCH_CONNECTIONS:-$CONNS}"
FETCH_BYTES="${BENCH_FETCH_BYTES:-1GiB}"
RESTART_BYTES="${BENCH_RESTART_BYTES:-10GiB}"
NATS="${BENCH_NATS:-auto}"

log() { printf 'bench: %s\n' "$*" >&2; }
die() {
	printf 'bench: ERROR: %s\n' "$1" >&2
	if [[ -n "${SERVE_LOG:-}" && -f "$SERVE_LOG" ]]; then
		printf -- '--- last lines of the server log ---\n' >&2
		tail -n 20 "$SERVE_LOG" >&2 || true
	fi
	exit 1
}

WORK="$(mktemp -d -p "${BENCH_DIR:-/var/tmp}" imago-bench.XXXXXX)"
DATA="$WORK/data"
READY="$WORK/ready"
SERVE_LOG="$WORK/serve.log"
SERVER_PID=""

stop_server() { # $1 = signal (default TERM)
	if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
		kill -"${1:-TERM}" "$SERVER_PID" 2>/dev/null || true
		wait "$SERVER_PID" 2>/dev/null || true
	fi
	SERVER_PID=""
}
cleanup() {
	stop_server KILL
	rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [[ -n "${IMAGO_BIN:-}" ]]; then
	BIN="$IMAGO_BIN"
else
	log "building imago"
	BIN="$WORK/imago"
	(cd "$ROOT" && go build -o "$BIN" ./cmd/imago) || die "go build ./cmd/imago failed"
fi

now_ns() { date +%s%N; }

# start_server: start `imago serve` on $DATA and wait for its ready file; sets SERVER, and
# READY_MS / HEALTH_MS (milliseconds from exec to ready file / to the first healthz 200).
start_server() {
	rm -f "$READY"
	local t0 t1 i
	t0=$(now_ns)
	"$BIN" serve --data-dir "$DATA" --http-addr 127.0.0.1:0 --protocol-addr 127.0.0.1:0 --ready-file "$READY" >>"$SERVE_LOG" 2>&1 &
	SERVER_PID=$!
	for i in $(seq 1 12000); do
		[[ -s "$READY" ]] && break
		kill -0 "$SERVER_PID" 2>/dev/null || die "imago serve exited at start"
		sleep 0.005
	done
	[[ -s "$READY" ]] || die "imago serve not ready after 60s"
	t1=$(now_ns)
	READY_MS=$(((t1 - t0) / 1000000))
	SERVER="$(head -n1 "$READY")"
	for i in $(seq 1 2000); do
		curl -fsS -o /dev/null "$SERVER/healthz" 2>/dev/null && break
		sleep 0.005
	done
	HEALTH_MS=$((($(now_ns) - t0) / 1000000))
}

# field NAME: the number after "NAME": in the JSON line on stdin.
field() { sed -n 's/.*"'"$1"'":\([-0-9.eE+]*\).*/\1/p' | head -n1; }

bench() { "$BIN" --server "$SERVER" bench "$@" --json --progress never; }

log "data directory $DATA ($(df -PT "$WORK" | awk 'NR==2 {print $2 " on " $1}')), $(nproc) CPUs"
start_server
log "imago serve $("$BIN" version) ready at $SERVER"

log "warm-up (2s, not reported)"
bench produce --topic bench-warmup --duration 2s --connections "$CONNS" >/dev/null

log "1/6 durable produce: 1 KiB x $CONNS connections x 1 msg/request, $DURATION"
P1="$(bench produce --topic bench-produce --connections "$CONNS" --message-bytes 1024 --batch 1 --duration "$DURATION")"
echo "$P1" >&2

disk() { "$BIN" bench disk --dir "$DATA" --duration "$DURATION" --json --progress never; }
log "2/6 bench disk in the data directory, $DURATION (before the batched run)"
D1="$(disk)"
echo "$D1" >&2

log "3/6 batched durable produce: 100 x 1 KiB per request, $BATCH_CONNS connections, $DURATION"
P2="$(bench produce --topic bench-batched --connections "$BATCH_CONNS" --message-bytes 1024 --batch 100 --duration "$DURATION")"
echo "$P2" >&2

log "3/6 bench disk in the data directory, $DURATION (after the batched run)"
D2="$(disk)"
echo "$D2" >&2

log "4/6 fetch of a $FETCH_BYTES partition (fill, then read twice; the second read is reported)"
bench fetch --topic bench-fetch --fill-bytes "$FETCH_BYTES" --connections 4 >/dev/null
F="$(bench fetch --topic bench-fetch --fill-bytes "$FETCH_BYTES" --connections 4)"
echo "$F" >&2

RESTART_READY="" RESTART_HEALTH="" LOG_BYTES=""
if [[ "$RESTART_BYTES" != 0 ]]; then
	log "5/6 restart with about $RESTART_BYTES of log: filling"
	bench fetch --topic bench-restart --fill-bytes "$RESTART_BYTES" --connections 8 --fill-only >/dev/null
	LOG_BYTES="$(du -sb "$DATA" | cut -f1)"
	log "data directory holds $LOG_BYTES bytes; SIGKILL and restart"
	stop_server KILL
	sync
	start_server
	RESTART_READY="$READY_MS" RESTART_HEALTH="$HEALTH_MS"
	log "ready file after ${RESTART_READY} ms, /healthz after ${RESTART_HEALTH} ms"
	"$BIN" --server "$SERVER" produce bench-restart --quiet "after restart" || die "produce after restart failed"
fi
stop_server TERM

NATS_DURABLE="" NATS_DEFAULT=""
if [[ "$NATS" != 0 && -f "$ROOT/scripts/nats-bench.sh" ]]; then
	log "6/6 NATS JetStream baseline (scripts/nats-bench.sh)"
	if NOUT="$(bash "$ROOT/scripts/nats-bench.sh" -json -duration "$DURATION" 2>&1)"; then
		NATS_DURABLE="$(grep '"label":"durable"' <<<"$NOUT" | field msgs_per_s)"
		NATS_DEFAULT="$(grep '"label":"default"' <<<"$NOUT" | field msgs_per_s)"
	else
		log "nats-bench.sh failed; its output:"
		printf '%s\n' "$NOUT" >&2
	fi
else
	log "6/6 NATS baseline skipped (scripts/nats-bench.sh missing or BENCH_NATS=0)"
fi

# ---- summary ----
p1_rate=$(field msgs_per_sec <<<"$P1")
p1_p99=$(field p99_ms <<<"$P1")
p1_p50=$(field p50_ms <<<"$P1")
p1_err=$(field errors <<<"$P1")
p2_rate=$(field msgs_per_sec <<<"$P2")
p2_mb=$(field mb_per_sec <<<"$P2")
p2_p99=$(field p99_ms <<<"$P2")
p2_err=$(field errors <<<"$P2")
d1_mb=$(field mb_per_sec <<<"$D1")
d2_mb=$(field mb_per_sec <<<"$D2")
d_mb=$(awk -v a="$d1_mb" -v b="$d2_mb" 'BEGIN { printf "%.3f", (a + b) / 2 }')
f_mb=$(field mb_per_sec <<<"$F")
f_err=$(field errors <<<"$F")

verdict() { awk -v ok="$1" 'BEGIN { print (ok ? "ok" : "MISSED") }'; }
pct=$(awk -v a="$p2_mb" -v b="$d_mb" 'BEGIN { if (b > 0) printf "%.0f", 100 * a / b; else print "n/a" }')

echo
echo "Imago figures ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs, $(uname -r), fsync: always, data on $(df -PT "$WORK" | awk 'NR==2 {print $2}'))"
printf '%-44s %-46s %-30s %s\n' "figure" "measured" "target" "verdict"
printf '%-44s %-46s %-30s %s\n' "durable produce 1 KiB, $CONNS conn, 1 msg/req" \
	"$(printf '%.0f msgs/s, p50 %.1f ms, p99 %.1f ms' "$p1_rate" "$p1_p50" "$p1_p99")" ">= 20000 msgs/s, p99 < 20 ms" \
	"$(verdict "$(awk -v r="$p1_rate" -v p="$p1_p99" 'BEGIN { print (r >= 20000 && p < 20) }')")"
printf '%-44s %-46s %-30s %s\n' "batched durable produce 100 x 1 KiB, $BATCH_CONNS conn" \
	"$(printf '%.0f msgs/s, %.1f MB/s, p99 %.1f ms' "$p2_rate" "$p2_mb" "$p2_p99")" ">= 60% of disk" \
	"$(verdict "$(awk -v a="$p2_mb" -v b="$d_mb" 'BEGIN { print (b > 0 && a >= 0.6 * b) }')") ($pct% of disk)"
printf '%-44s %-46s %-30s %s\n' "bench disk (1 MiB write + fsync)" "$(printf '%.1f MB/s (before %.0f, after %.0f)' "$d_mb" "$d1_mb" "$d2_mb")" "(baseline)" ""
printf '%-44s %-46s %-30s %s\n' "fetch of a $FETCH_BYTES partition (page cache)" "$(printf '%.1f MB/s' "$f_mb")" ">= 300 MB/s" \
	"$(verdict "$(awk -v f="$f_mb" 'BEGIN { print (f >= 300) }')")"
if [[ -n "$RESTART_READY" ]]; then
	printf '%-44s %-46s %-30s %s\n' "restart after SIGKILL, $(awk -v b="$LOG_BYTES" 'BEGIN { printf "%.1f GiB", b / 2^30 }') on disk" \
		"ready ${RESTART_READY} ms, healthz ${RESTART_HEALTH} ms" "< 2000 ms" \
		"$(verdict "$(awk -v r="$RESTART_HEALTH" 'BEGIN { print (r < 2000) }')")"
fi
if [[ -n "$NATS_DURABLE" ]]; then
	printf '%-44s %-46s %-30s %s\n' "NATS JetStream durable (sync always)" "$(printf '%.0f msgs/s' "$NATS_DURABLE")" "" \
		"Imago/NATS = $(awk -v a="$p1_rate" -v b="$NATS_DURABLE" 'BEGIN { printf "%.2f", a / b }')"
	printf '%-44s %-46s %-30s %s\n' "NATS JetStream default (not durable)" "$(printf '%.0f msgs/s' "$NATS_DEFAULT")" "" \
		"Imago/NATS = $(awk -v a="$p1_rate" -v b="$NATS_DEFAULT" 'BEGIN { printf "%.2f", a / b }')"
fi
echo "errors: produce $p1_err, batched $p2_err, fetch $f_err (MB = 10^6 bytes; produce MB/s counts message values)"
