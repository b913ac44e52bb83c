#!/usr/bin/env bash
# scripts/nats-bench.sh — the NATS JetStream baselines Imago's produce path is compared with.
#
# Mode r1 (the default): starts a private nats-server on 127.0.0.1:${NATS_BENCH_PORT:-4322} with
# JetStream in a temporary store dir, twice:
#   durable: jetstream { sync_interval: always }  (fsync per write, what Imago's fsync: always acks)
#   default: the default sync interval            (acked from the page cache, fsync every 2 min)
# runs bench/nats (1 KiB messages, 64 publishes in flight each awaiting its ack, 10 s) against each,
# stops the server and prints both figures.
#
# Mode r3: starts three nats-server processes on loopback that form one JetStream cluster (routes
# between them), each with sync_interval: always and its own store dir, creates the stream with
# three replicas, and runs the same load, published through the stream's leader (as a client of an
# Imago cluster talks to its leader). It prints msgs/s and the CPU time per acknowledged message of
# the stream leader, of each follower and of all three servers together: utime+stime from
# /proc/PID/stat, read by bench/nats at the start and the end of the measured run.
#
# Mode all: r3, then r1. The nats-server on port 4222 is never touched.
#
# Usage: scripts/nats-bench.sh [r1|r3|all] [natsbench flags...]
#   e.g. scripts/nats-bench.sh -duration 30s -inflight 128 -json
#        scripts/nats-bench.sh r3 -duration 10s
# With -json every figure is one JSON line; in mode r3 it is the last line of standard output.
# Environment:
#   NATS_SERVER          server binary (default /usr/sbin/nats-server). `sync_interval` needs
#                        nats-server >= 2.10; when the binary is older (Debian 12 ships 2.9.10), a
#                        pinned release is built once with `go install` into
#                        ${XDG_CACHE_HOME:-~/.cache}/imago/ and used for every run.
#   NATS_BENCH_PORT      client port of mode r1 (default 4322)
#   NATS_BENCH_R3_PORT   first client port of mode r3 (default 4331; the servers use it and the next two)
#   NATS_BENCH_R3_ROUTE_PORT  first route port of mode r3 (default 6331, and the next two)
#   NATS_BENCH_DIR       parent of the temporary store dirs (default /var/tmp: on disk, not tmpfs)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODE=r1
case "${1:-}" in
r1 | r3 | all)
	MODE="$1"
	shift
	;;
esac
PORT="${NATS_BENCH_PORT:-4322}"
R3_PORT="${NATS_BENCH_R3_PORT:-4331}"
R3_ROUTE_PORT="${NATS_BENCH_R3_ROUTE_PORT:-6331}"
NATS_SERVER="${NATS_SERVER:-/usr/sbin/nats-server}"
FALLBACK_VERSION="v2.12.15"
FALLBACK_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/imago/nats-server-${FALLBACK_VERSION}"

log() { printf 'nats-bench: %s\n' "$*" >&2; }
die() {
	printf 'nats-bench: ERROR: %s\n' "$1" >&2
	if [[ -n "${2:-}" && -f "$2" ]]; then
		printf -- '--- last lines of %s ---\n' "$2" >&2
		tail -n 30 "$2" >&2 || true
	fi
	exit 1
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
check_port() { # $1 = port, $2 = the variable that sets it
	[[ "$1" != 4222 ]] || die "port 4222 belongs to the system nats-server; pick another $2"
	! port_open "$1" || die "127.0.0.1:$1 is already in use; stop whatever listens there or set $2"
}

command -v go >/dev/null || die "go is not on PATH (needed to build bench/nats)"
if [[ "$MODE" != r3 ]]; then check_port "$PORT" NATS_BENCH_PORT; fi
if [[ "$MODE" != r1 ]]; then
	for i in 0 1 2; do
		check_port $((R3_PORT + i)) NATS_BENCH_R3_PORT
		check_port $((R3_ROUTE_PORT + i)) NATS_BENCH_R3_ROUTE_PORT
	done
fi

WORK="$(mktemp -d -p "${NATS_BENCH_DIR:-/var/tmp}" imago-nats-bench.XXXXXX)"
SERVER_PIDS=()
stop_servers() {
	local pid
	for pid in "${SERVER_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
	for pid in "${SERVER_PIDS[@]}"; do
		for _ in $(seq 1 100); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	SERVER_PIDS=()
}
cleanup() {
	stop_servers
	rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "building bench/nats"
(cd "$ROOT/bench/nats" && go build -o "$WORK/natsbench" .) || die "go build of bench/nats failed"

write_conf() { # $1 = conf file, $2 = store dir, $3 = extra jetstream line (may be empty), [$4 = client port, $5 = server name]
	cat >"$1" <<EOF
listen: "127.0.0.1:${4:-$PORT}"
server_name: ${5:-imago_nats_bench}
jetstream {
  store_dir: "$2"
  $3
}
EOF
}

# Pick a server binary that understands sync_interval.
write_conf "$WORK/probe.conf" "$WORK/probe" "sync_interval: always"
if [[ ! -x "$NATS_SERVER" ]] || ! "$NATS_SERVER" -t -c "$WORK/probe.conf" >"$WORK/probe.out" 2>&1; then
	if [[ -x "$NATS_SERVER" ]]; then
		log "$NATS_SERVER ($("$NATS_SERVER" --version 2>&1 | head -n1)) rejects sync_interval: $(head -n1 "$WORK/probe.out")"
	else
		log "$NATS_SERVER not found"
	fi
	if [[ ! -x "$FALLBACK_DIR/nats-server" ]]; then
		log "building nats-server $FALLBACK_VERSION with go install into $FALLBACK_DIR (once)"
		mkdir -p "$FALLBACK_DIR"
		GOBIN="$FALLBACK_DIR" go install "github.com/nats-io/nats-server/v2@$FALLBACK_VERSION" ||
			die "could not build nats-server $FALLBACK_VERSION"
	fi
	NATS_SERVER="$FALLBACK_DIR/nats-server"
	"$NATS_SERVER" -t -c "$WORK/probe.conf" >"$WORK/probe.out" 2>&1 ||
		die "$NATS_SERVER rejects the durable config" "$WORK/probe.out"
fi
SERVER_VERSION="$("$NATS_SERVER" --version 2>&1 | head -n1)"
log "using $NATS_SERVER ($SERVER_VERSION), store under $WORK ($(df -PT "$WORK" | awk 'NR==2 {print $2 " on " $1}'))"

start_server() { # $1 = conf, $2 = server log, $3 = client port, $4 = label
	"$NATS_SERVER" -c "$1" -l "$2" &
	local pid=$!
	SERVER_PIDS+=("$pid")
	for _ in $(seq 1 150); do
		port_open "$3" && return 0
		kill -0 "$pid" 2>/dev/null || die "nats-server ($4) exited at start" "$2"
		sleep 0.1
	done
	die "nats-server ($4) does not listen on 127.0.0.1:$3 after 15s" "$2"
}

run_one() { # $1 = label, $2 = extra jetstream line
	local label="$1" conf="$WORK/$1.conf" store="$WORK/store-$1" slog="$WORK/$1.log"
	write_conf "$conf" "$store" "$2"
	start_server "$conf" "$slog" "$PORT" "$label"
	log "running $label${2:+ ($2)}"
	"$WORK/natsbench" -url "nats://127.0.0.1:$PORT" -label "$label" "${BENCH_ARGS[@]}" >"$WORK/$label.result" ||
		die "bench against the $label server failed" "$slog"
	stop_servers
	rm -rf "$store"
	cat "$WORK/$label.result" >&2
}

run_r3() { # three clustered servers, each sync_interval: always; a stream with three replicas
	local i name routes="" urls="" node_args=()
	for i in 0 1 2; do
		routes+="${routes:+, }nats-route://127.0.0.1:$((R3_ROUTE_PORT + i))"
		urls+="${urls:+,}nats://127.0.0.1:$((R3_PORT + i))"
	done
	for i in 1 2 3; do
		name="imago_nats_r3_$i"
		write_conf "$WORK/r3-$i.conf" "$WORK/store-r3-$i" "sync_interval: always" $((R3_PORT + i - 1)) "$name"
		cat >>"$WORK/r3-$i.conf" <<EOF
cluster {
  name: imago_nats_bench_r3
  listen: "127.0.0.1:$((R3_ROUTE_PORT + i - 1))"
  routes: [ $routes ]
}
EOF
	done
	for i in 1 2 3; do
		name="imago_nats_r3_$i"
		start_server "$WORK/r3-$i.conf" "$WORK/r3-$i.log" $((R3_PORT + i - 1)) "$name"
		node_args+=(-node "$name=nats://127.0.0.1:$((R3_PORT + i - 1))" -pid "$name=${SERVER_PIDS[$((i - 1))]}")
	done
	log "running r3 (three servers in one JetStream cluster, sync_interval: always, stream replicas 3)"
	if ! "$WORK/natsbench" -url "$urls" -label r3 -replicas 3 -clk-tck "$(getconf CLK_TCK)" "${node_args[@]}" \
		"${BENCH_ARGS[@]}" >"$WORK/r3.result"; then
		for i in 1 2 3; do
			printf -- '--- last lines of %s ---\n' "$WORK/r3-$i.log" >&2
			tail -n 10 "$WORK/r3-$i.log" >&2 || true
		done
		die "bench against the three-server cluster failed"
	fi
	stop_servers
	rm -rf "$WORK"/store-r3-*
}

# run_one and run_r3 run in this shell (not in $(...)) so that the EXIT trap always stops the servers.
BENCH_ARGS=("$@")
if [[ "$MODE" != r1 ]]; then
	run_r3
	cat <<EOF

NATS JetStream, three replicas ($SERVER_VERSION; three nats-server processes on loopback in one
JetStream cluster, each sync_interval: always; file storage, 1 stream with 3 replicas, published
through the stream leader; bench/nats defaults: 1 KiB messages, 64 publishes in flight each
awaiting its ack, 10s after a 1s warm-up${BENCH_ARGS[*]:+; flags: ${BENCH_ARGS[*]}}).
CPU: utime+stime of each server process over the measured run, per acknowledged message.
EOF
	cat "$WORK/r3.result"
fi
[[ "$MODE" != r3 ]] || exit 0

run_one durable "sync_interval: always"
run_one default ""
durable="$(cat "$WORK/durable.result")"
default="$(cat "$WORK/default.result")"

cat <<EOF

NATS JetStream baseline ($SERVER_VERSION, file storage, 1 stream, 1 replica; bench/nats defaults:
1 KiB messages, 64 publishes in flight each awaiting its ack, 10s after a 1s warm-up${BENCH_ARGS[*]:+; flags: ${BENCH_ARGS[*]}})
  durable, sync_interval: always (fsync per write):
    $durable
  default sync interval (page cache, periodic fsync):
    $default
EOF
