#!/usr/bin/env bash
# scripts/nats-bench.sh — the NATS JetStream baseline Imago's produce path is compared with.
#
# Starts a private nats-server on 127.0.0.1:${NATS_BENCH_PORT:-4322} with JetStream in a temporary
# store dir, twice:
#   durable: jetstream { sync_interval: always }  (fsync per write, what Imago's fsync: always acks)
#   default: the default sync interval            (acked from the page cache, fsync every 2 min)
# runs bench/nats (1 KiB messages, 64 publishes in flight each awaiting its ack, 10 s) against each,
# stops the server and prints both figures. The nats-server on port 4222 is never touched.
#
# Usage: scripts/nats-bench.sh [natsbench flags...]      e.g. -duration 30s -inflight 128 -json
# Environment:
#   NATS_SERVER          server binary (default /usr/sbin/nats-server). `sync_interval` needs
#                        nats-server >= 2.10; when the binary is older (Debian 12 ships 2.9.10), a
#                        pinned release is built once with `go install` into
#                        ${XDG_CACHE_HOME:-~/.cache}/imago/ and used for BOTH runs.
#   NATS_BENCH_PORT      client port (default 4322)
#   NATS_BENCH_DIR       parent of the temporary store dir (default /var/tmp: on disk, not tmpfs)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PORT="${NATS_BENCH_PORT:-4322}"
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

command -v go >/dev/null || die "go is not on PATH (needed to build bench/nats)"
[[ "$PORT" != 4222 ]] || die "port 4222 belongs to the system nats-server; pick another NATS_BENCH_PORT"
port_open "$PORT" && die "127.0.0.1:$PORT is already in use; stop whatever listens there or set NATS_BENCH_PORT"

WORK="$(mktemp -d -p "${NATS_BENCH_DIR:-/var/tmp}" imago-nats-bench.XXXXXX)"
SERVER_PID=""
stop_server() {
	if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
		kill -TERM "$SERVER_PID" 2>/dev/null || true
		for _ in $(seq 1 100); do
			kill -0 "$SERVER_PID" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$SERVER_PID" 2>/dev/null || true
		wait "$SERVER_PID" 2>/dev/null || true
	fi
	SERVER_PID=""
}
cleanup() {
	stop_server
	rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "building bench/nats"
(cd "$ROOT/bench/nats" && go build -o "$WORK/natsbench" .) || die "go build of bench/nats failed"

write_conf() { # $1 = conf file, $2 = store dir, $3 = extra jetstream line (may be empty)
	cat >"$1" <<EOF
listen: "127.0.0.1:$PORT"
server_name: imago_nats_bench
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

run_one() { # $1 = label, $2 = extra jetstream line
	local label="$1" conf="$WORK/$1.conf" store="$WORK/store-$1" slog="$WORK/$1.log"
	write_conf "$conf" "$store" "$2"
	"$NATS_SERVER" -c "$conf" -l "$slog" &
	SERVER_PID=$!
	for _ in $(seq 1 150); do
		port_open "$PORT" && break
		kill -0 "$SERVER_PID" 2>/dev/null || die "nats-server ($label) exited at start" "$slog"
		sleep 0.1
	done
	port_open "$PORT" || die "nats-server ($label) does not listen on 127.0.0.1:$PORT after 15s" "$slog"
	log "running $label${2:+ ($2)}"
	"$WORK/natsbench" -url "nats://127.0.0.1:$PORT" -label "$label" "${BENCH_ARGS[@]}" >"$WORK/$label.result" ||
		die "bench against the $label server failed" "$slog"
	stop_server
	rm -rf "$store"
	cat "$WORK/$label.result" >&2
}

# run_one runs in this shell (not in $(...)) so that the EXIT trap always stops the server.
BENCH_ARGS=("$@")
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
