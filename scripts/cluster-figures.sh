#!/usr/bin/env bash
# scripts/cluster-figures.sh — the cluster's throughput figure, measured in one run on this machine:
#   (a) durable produce against one `imago serve` with no cluster configuration
#   (b) the same load against a three-node Imago cluster (three processes here), through its leader
#   (c) NATS JetStream with three replicas, sync_interval: always (scripts/nats-bench.sh r3)
# Load: `imago bench produce` with 1 KiB values, batch 1, FIG_INFLIGHT connections (default 64) each
# with one request in flight, so FIG_INFLIGHT produces in flight; NATS gets the same size and the
# same in-flight count. Every measurement has a 1 s warm-up and then FIG_DURATION (default 10s).
#
# (a) and (b) run side by side (the idle one costs nothing: no load, raft heartbeats only) and are
# measured in turn, FIG_ROUNDS times (default 3): a, b, a, b, ... The speed of this shared machine
# drifts by a third from one minute to the next, so a single pair can land on a fast minute for
# one and a slow one for the other; the verdict is the median of the rounds' ratios b/a, and each
# round's ratio is printed. The table rows add up the rounds (messages, seconds, CPU; p50 and p99
# are the median of the rounds').
#
# (a) and (b) use the same generated configuration (fsync: always, offsets in PostgreSQL from
# IMAGO_TEST_PG_DSN of .services.env, text protocol off); (b) adds the `cluster:` block on free
# loopback ports (never 8081-8083 or 7081-7083, which examples/cluster uses). CPU is utime+stime
# from /proc/PID/stat of each server process over the measured runs, divided by the messages
# acknowledged. The figure is CPU-bound on a small machine: the table prints the CPU time of all
# server processes together per message, the cores they used, and the msgs/s two cores could
# carry at that cost (the bench client's CPU comes on top and is printed too).
#
# Needs go, curl, jq and the PostgreSQL of scripts/services.sh. FIG_SKIP_NATS=1 skips (c);
# FIG_IMAGO=/path/to/imago uses that binary instead of building ./cmd/imago.
#
# Go runtime sizing. The three nodes of (b) share the machine, so each runs with a third of its
# cores as Go schedulers (GOMAXPROCS = nproc / 3, at least 1), as scripts/cluster.sh runs them
# and docs/cluster.md advises for several nodes on one machine; (a) is alone on the machine and
# keeps the runtime's default (every core). Left at the default, each of three runtimes sizes
# itself for every core, and their idle schedulers spin and wake one another (futex calls,
# thread hand-offs) for CPU the other processes need: on two cores the nodes then spent a
# quarter to a third more CPU per message. FIG_NODE_GOMAXPROCS=N sets N for the nodes instead,
# FIG_NODE_GOMAXPROCS=default leaves the runtime's default (or the environment's GOMAXPROCS);
# the header says what ran. One scheduler would not do for (a): its fsync then holds the only
# one, and it carried 3,000 to 8,500 msgs/s instead of 17,000.
#
# When the cluster does not start, (b) reports why and (a) and (c) are still printed.
set -euo pipefail
cd "$(dirname "$0")/.."
D="${FIG_DURATION:-10s}"
NODE_PROCS="${FIG_NODE_GOMAXPROCS:-$(($(nproc) / 3 > 0 ? $(nproc) / 3 : 1))}"
[[ "$NODE_PROCS" == default || "$NODE_PROCS" =~ ^[1-9][0-9]*$ ]] || { printf 'cluster-figures: ERROR: FIG_NODE_GOMAXPROCS=%s: want a positive number or default\n' "$NODE_PROCS" >&2; exit 1; }
RUNTIME_DEFAULT="${GOMAXPROCS:-$(nproc) (the default)}" # what a process started without GOMAXPROCS of its own gets
INFLIGHT="${FIG_INFLIGHT:-64}"
ROUNDS="${FIG_ROUNDS:-3}"
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || { printf 'cluster-figures: ERROR: FIG_ROUNDS=%s is not a positive number\n' "$ROUNDS" >&2; exit 1; }
SIZE=1024
TOPIC=cluster-figures
CORES="$(nproc)"
CLK_TCK="$(getconf CLK_TCK)"

log() { printf 'cluster-figures: %s\n' "$*" >&2; }
die() {
	printf 'cluster-figures: ERROR: %s\n' "$*" >&2
	exit 1
}
for c in go curl jq; do command -v "$c" >/dev/null || die "$c is not on PATH"; done
set -a
# shellcheck disable=SC1091
[[ -f .services.env ]] && . ./.services.env
set +a
PG_DSN="${IMAGO_TEST_PG_DSN:-}"
[[ -n "$PG_DSN" ]] || die "IMAGO_TEST_PG_DSN is not set (.services.env; scripts/services.sh): a cluster needs a shared offset store"

WORK="$(mktemp -d /var/tmp/imago-cluster-figures.XXXXXX)"
PIDS=()
stop_all() {
	local pid
	for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
	for pid in "${PIDS[@]}"; do
		for _ in $(seq 1 100); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	PIDS=()
}
trap 'stop_all; rm -rf "$WORK"' EXIT
trap 'exit 130' INT TERM

if [[ -n "${FIG_IMAGO:-}" ]]; then
	IMAGO="$FIG_IMAGO"
	[[ -x "$IMAGO" ]] || die "FIG_IMAGO=$IMAGO is not an executable"
else
	log "building imago"
	go build -o "$WORK/imago" ./cmd/imago
	IMAGO="$WORK/imago"
fi

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# free_ports N: N consecutive loopback ports nobody listens on, from 17100 upwards.
free_ports() {
	local base i ok
	for base in $(seq 17100 10 17990); do
		ok=1
		for ((i = 0; i < $1; i++)); do
			if port_open $((base + i)); then
				ok=0
				break
			fi
		done
		if ((ok)); then
			seq "$base" $((base + $1 - 1))
			return 0
		fi
	done
	die "no $1 free consecutive ports between 17100 and 17999"
}

cpu_ticks() { # utime+stime of pid $1 in clock ticks (the name field may hold spaces: count after ')')
	sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'
}

# common_config FILE DATADIR HTTPADDR: what (a) and every node of (b) share. The DSN comes from
# IMAGO_OFFSETS_DSN in the environment, so no password is written to a file.
common_config() {
	cat >"$1" <<EOF
data_dir: $2
http: {addr: "$3", shutdown_timeout: 2s}
protocol: {enabled: false}
log: {fsync: always}
offsets: {store: postgres}
EOF
}

# start_node NAME CONFIG [FLAGS...]: starts imago serve in the background; its pid is appended to PIDS.
start_node() {
	IMAGO_OFFSETS_DSN="$PG_DSN" "$IMAGO" serve --config "$2" --ready-file "$WORK/$1.ready" "${@:3}" >"$WORK/$1.log" 2>&1 &
	PIDS+=("$!")
}

# start_reason LOG: the line of a server log that says why it did not start, and what that means.
start_reason() {
	local line
	line="$(grep -m1 -E '^imago:|level=ERROR|"level":"ERROR"' "$1" || grep -v '^[[:space:]]*$' "$1" | tail -n1 || true)"
	case "$line" in
	*'unknown field "cluster"'* | *"not implemented yet"*)
		line+=" -- this build has no cluster support" ;;
	esac
	printf '%s' "$line"
}

# wait_ready NAME PID: waits for the ready file; on exit or timeout prints the reason and fails.
wait_ready() {
	for _ in $(seq 1 600); do
		[[ -s "$WORK/$1.ready" ]] && return 0
		if ! kill -0 "$2" 2>/dev/null; then
			START_ERROR="$1 exited at start: $(start_reason "$WORK/$1.log")"
			return 1
		fi
		sleep 0.1
	done
	START_ERROR="$1 wrote no ready file in 60s: $(tail -n 3 "$WORK/$1.log" | tr '\n' ' ')"
	return 1
}

# bench NAME URL PIDS...: a 1 s warm-up, then the measured run with the CPU of PIDS sampled
# around it. Leaves the bench JSON in $WORK/NAME.json, each pid's CPU seconds in
# $WORK/NAME.cpu ("pid seconds" lines) and the client's user+sys seconds in $WORK/NAME.client.
bench() {
	local name="$1" url="$2" pid
	shift 2
	local args=(bench produce --server "$url" --topic "$TOPIC" --connections "$INFLIGHT" --batch 1
		--message-bytes "$SIZE" --progress never --json)
	"$IMAGO" "${args[@]}" --duration 1s >"$WORK/$name.warmup" 2>>"$WORK/$name.bench.log" ||
		{ log "$name: warm-up failed: $(tail -n 3 "$WORK/$name.bench.log")"; return 1; }
	declare -A before
	for pid in "$@"; do before[$pid]="$(cpu_ticks "$pid")"; done
	/usr/bin/time -f '%U %S' -o "$WORK/$name.time" "$IMAGO" "${args[@]}" --duration "$D" \
		>"$WORK/$name.json" 2>>"$WORK/$name.bench.log" ||
		{ log "$name: bench failed: $(tail -n 3 "$WORK/$name.bench.log")"; return 1; }
	: >"$WORK/$name.cpu"
	for pid in "$@"; do
		echo "$pid $(awk -v a="${before[$pid]}" -v b="$(cpu_ticks "$pid")" -v t="$CLK_TCK" 'BEGIN {printf "%.2f", (b - a) / t}')" >>"$WORK/$name.cpu"
	done
	awk '{printf "%.2f\n", $1 + $2}' "$WORK/$name.time" >"$WORK/$name.client"
}

us_per_msg() { awk -v s="$1" -v n="$2" 'BEGIN {if (n > 0) printf "%.1f", s * 1e6 / n; else print "-"}'; }
cpu_of() { awk -v p="$2" '$1 == p {print $2}' "$WORK/$1.cpu"; }
sum_cpu() { awk '{s += $2} END {printf "%.2f", s}' "$WORK/$1.cpu"; }

ROWS=()
# row LABEL NAME LEADERPID FOLLOWERPID: one table row from bench NAME.
row() {
	local j="$WORK/$2.json" msgs secs all
	msgs="$(jq -r .messages "$j")"
	secs="$(jq -r .seconds "$j")"
	all="$(sum_cpu "$2")"
	ROWS+=("$(printf '%-34s %9.0f %7.2f %7.2f %8s %9s %8s %6s %8s %s' "$1" \
		"$(jq -r .msgs_per_sec "$j")" "$(jq -r .p50_ms "$j")" "$(jq -r .p99_ms "$j")" \
		"$(us_per_msg "$(cpu_of "$2" "$3")" "$msgs")" \
		"$( [[ -n "$4" ]] && us_per_msg "$(cpu_of "$2" "$4")" "$msgs" || echo -)" \
		"$(us_per_msg "$all" "$msgs")" \
		"$(awk -v s="$all" -v d="$secs" 'BEGIN {printf "%.2f", s / d}')" \
		"$(awk -v s="$all" -v n="$msgs" -v c="$CORES" 'BEGIN {if (s > 0) printf "%.0f", c * n / s; else print "-"}')" \
		"client $(us_per_msg "$(cat "$WORK/$2.client")" "$msgs") µs/msg, $(jq -r .errors "$j") errors")")
}

LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"

# agg NAME ROUND_NAMES...: adds the rounds' measurements up into NAME's files (messages, seconds,
# errors and CPU summed; p50 and p99 the median of the rounds'), for row().
agg() {
	local name="$1" r files=() cpus=() clients=()
	shift
	for r in "$@"; do
		files+=("$WORK/$r.json")
		cpus+=("$WORK/$r.cpu")
		clients+=("$WORK/$r.client")
	done
	jq -s '{messages: (map(.messages) | add), seconds: (map(.seconds) | add), errors: (map(.errors) | add),
		p50_ms: (map(.p50_ms) | sort | .[length / 2 | floor]), p99_ms: (map(.p99_ms) | sort | .[length / 2 | floor])}
		| .msgs_per_sec = (if .seconds > 0 then .messages / .seconds else 0 end)' "${files[@]}" >"$WORK/$name.json"
	cat "${cpus[@]}" | awk '{s[$1] += $2} END {for (p in s) printf "%s %.2f\n", p, s[p]}' >"$WORK/$name.cpu"
	cat "${clients[@]}" | awk '{s += $1} END {printf "%.2f\n", s}' >"$WORK/$name.client"
}

# (a) one node, no cluster configuration; started first, measured in turn with (b) below.
SINGLE_OK=0
log "(a) single node: starting"
common_config "$WORK/single.yaml" "$WORK/single-data" 127.0.0.1:0
start_node single "$WORK/single.yaml"
SPID="${PIDS[-1]}"
if wait_ready single "$SPID"; then
	SINGLE_URL="$(head -n1 "$WORK/single.ready")"
	SINGLE_OK=1
else
	log "(a) $START_ERROR"
	ROWS+=("(a) imago, 1 node: did not start: $START_ERROR")
fi

# (b) three nodes with the cluster block, measured through the leader.
log "(b) three-node cluster: starting"
mapfile -t P < <(free_ports 6)
for i in 1 2 3; do
	common_config "$WORK/node$i.yaml" "$WORK/node$i-data" "127.0.0.1:${P[$((i - 1))]}"
	{
		echo "cluster:"
		echo "  node_id: $i"
		echo "  raft_addr: \"127.0.0.1:${P[$((i + 2))]}\""
		echo "  peers:"
		for j in 1 2 3; do
			echo "    - {id: $j, raft_addr: \"127.0.0.1:${P[$((j + 2))]}\", http_addr: \"127.0.0.1:${P[$((j - 1))]}\"}"
		done
		echo "  forward: proxy"
	} >>"$WORK/node$i.yaml"
done
NPIDS=()
for i in 1 2 3; do
	if [[ "$NODE_PROCS" == default ]]; then
		start_node "node$i" "$WORK/node$i.yaml" --bootstrap-cluster
	else
		GOMAXPROCS="$NODE_PROCS" start_node "node$i" "$WORK/node$i.yaml" --bootstrap-cluster
	fi
	NPIDS+=("${PIDS[-1]}")
done
CLUSTER_OK=1
for i in 1 2 3; do
	if ! wait_ready "node$i" "${NPIDS[$((i - 1))]}"; then
		CLUSTER_OK=0
		break
	fi
done
LEADER=""
if ((CLUSTER_OK)); then
	for _ in $(seq 1 300); do
		LEADER="$(curl -fsS "http://127.0.0.1:${P[0]}/v1/cluster" 2>/dev/null | jq -r '.leader_id // empty | select(. != 0)' || true)"
		[[ -n "$LEADER" ]] && break
		sleep 0.1
	done
	if [[ -z "$LEADER" ]]; then
		CLUSTER_OK=0
		START_ERROR="no leader in 30s: $(curl -sS "http://127.0.0.1:${P[0]}/v1/cluster" 2>&1 | head -c 300)"
	fi
fi
if ((CLUSTER_OK)); then
	LEADER_HTTP="$(curl -fsS "http://127.0.0.1:${P[0]}/v1/cluster" | jq -r --argjson id "$LEADER" '.nodes[] | select(.id == $id) | .http_addr // empty' || true)"
	LEADER_HTTP="${LEADER_HTTP#http://}"
	if [[ -z "$LEADER_HTTP" ]]; then
		LEADER_HTTP="127.0.0.1:${P[$((LEADER - 1))]}"
		log "(b) /v1/cluster names no http_addr for leader $LEADER; using its configured address $LEADER_HTTP"
	fi
	READY=0
	for _ in $(seq 1 300); do
		if curl -fsS -o /dev/null "http://$LEADER_HTTP/readyz" 2>/dev/null; then
			READY=1
			break
		fi
		sleep 0.1
	done
	((READY)) || log "(b) the leader's /readyz is not 200 after 30s; measuring anyway"
	LPID="${NPIDS[$((LEADER - 1))]}"
	FOLLOWER=$((LEADER % 3 + 1))
	FPID="${NPIDS[$((FOLLOWER - 1))]}"
	log "(b) leader node$LEADER at $LEADER_HTTP, follower shown: node$FOLLOWER"
else
	log "(b) $START_ERROR"
	ROWS+=("(b) imago, 3 nodes: DID NOT START: $START_ERROR")
fi

# The rounds: a, b, a, b, ...
SROUNDS=()
CROUNDS=()
RATIOS=()
for ((r = 1; r <= ROUNDS; r++)); do
	s="" c=""
	if ((SINGLE_OK)); then
		log "round $r/$ROUNDS: (a) single node"
		if bench "single$r" "$SINGLE_URL" "$SPID"; then
			SROUNDS+=("single$r")
			s="$(jq -r .msgs_per_sec "$WORK/single$r.json")"
		fi
	fi
	if ((CLUSTER_OK)); then
		log "round $r/$ROUNDS: (b) three-node cluster"
		if bench "cluster$r" "http://$LEADER_HTTP" "${NPIDS[@]}"; then
			CROUNDS+=("cluster$r")
			c="$(jq -r .msgs_per_sec "$WORK/cluster$r.json")"
		fi
	fi
	if [[ -n "$s" && -n "$c" ]]; then
		RATIOS+=("$(awk -v a="$c" -v b="$s" 'BEGIN {printf "%.2f", a / b}')")
		log "round $r: single $(printf '%.0f' "$s")/s, cluster $(printf '%.0f' "$c")/s, ratio ${RATIOS[-1]}"
	fi
done
# summary NAME LABEL STARTED LEADERPID FOLLOWERPID ROUND_NAMES...: NAME's table row from its
# rounds, or, when it started and no round succeeded, why. Sets RATE to its msgs/s ("" if none).
summary() {
	local name="$1" label="$2" started="$3" lpid="$4" fpid="$5"
	shift 5
	RATE=""
	if (($# > 0)); then
		agg "$name" "$@"
		row "$label" "$name" "$lpid" "$fpid"
		RATE="$(jq -r .msgs_per_sec "$WORK/$name.json")"
	elif ((started)); then
		ROWS+=("$label: the bench failed: $(tail -n 2 "$WORK/${name}1.bench.log" | tr '\n' ' ')")
	fi
}
summary single "(a) imago, 1 node, no cluster" "$SINGLE_OK" "$SPID" "" "${SROUNDS[@]}"
SINGLE_RATE="$RATE"
summary cluster "(b) imago, 3 nodes, via leader" "$CLUSTER_OK" "${LPID:-}" "${FPID:-}" "${CROUNDS[@]}"
CLUSTER_RATE="$RATE"
stop_all

# (c) NATS JetStream, three replicas, sync_interval: always.
NATS_RATE=""
if [[ "${FIG_SKIP_NATS:-}" != 1 ]]; then
	log "(c) NATS JetStream R3"
	if bash scripts/nats-bench.sh r3 -duration "$D" -inflight "$INFLIGHT" -size "$SIZE" -json >"$WORK/nats.out" 2>"$WORK/nats.log"; then
		N="$(grep '^{' "$WORK/nats.out" | tail -n1)"
		NATS_RATE="$(jq -r .msgs_per_s <<<"$N")"
		ROWS+=("$(printf '%-34s %9.0f %7.2f %7.2f %8.1f %9.1f %8.1f %6.2f %8.0f %s' "(c) NATS JetStream R3, sync always" \
			"$NATS_RATE" "$(jq -r .p50_ms <<<"$N")" "$(jq -r .p99_ms <<<"$N")" \
			"$(jq -r '.cpu[] | select(.role == "leader") | .cpu_us_per_msg' <<<"$N")" \
			"$(jq -r '[.cpu[] | select(.role == "follower")][0].cpu_us_per_msg' <<<"$N")" \
			"$(jq -r .cpu_us_per_msg_all_servers <<<"$N")" \
			"$(jq -r '[.cpu[].cpu_s] | add / 1' <<<"$N" | awk -v d="$(jq -r .duration_s <<<"$N")" '{print $1 / d}')" \
			"$(jq -r --argjson c "$CORES" 'if .cpu_us_per_msg_all_servers > 0 then $c * 1e6 / .cpu_us_per_msg_all_servers else 0 end' <<<"$N")" \
			"nats-server $(jq -r .server_version <<<"$N"), $(jq -r .errors <<<"$N") errors")")
	else
		ROWS+=("(c) NATS JetStream R3: failed: $(grep -i error "$WORK/nats.log" | tail -n 2 | tr '\n' ' ')")
	fi
fi

ratio() { # $1 / $2 with a verdict against the target $3
	if [[ -n "$1" && -n "$2" ]]; then
		awk -v a="$1" -v b="$2" -v t="$3" 'BEGIN {r = a / b; printf "%.2f (target >= %s: %s)", r, t, (r >= t ? "met" : "NOT met")}'
	else
		echo "n/a (a figure is missing)"
	fi
}

# median_ratio TARGET: the median of the rounds' cluster/single ratios, each round's listed.
median_ratio() {
	if ((${#RATIOS[@]} == 0)); then
		echo "n/a (a figure is missing)"
		return
	fi
	printf '%s\n' "${RATIOS[@]}" | sort -n | awk -v t="$1" -v all="${RATIOS[*]}" '{v[NR] = $1}
		END {m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
		printf "%.2f, median of %d rounds (%s) (target >= %s: %s)", m, NR, all, t, (m >= t ? "met" : "NOT met")}'
}

cat <<EOF

Durable produce, ${SIZE} B messages, ${INFLIGHT} in flight (imago: ${INFLIGHT} connections x 1 request, batch 1;
NATS: ${INFLIGHT} publishers on one connection, each awaiting its ack), 1s warm-up then $D each, fsync per
write everywhere; (a) and (b) measured in turn, $ROUNDS rounds each; $CORES cores, load average before the run $LOAD_BEFORE.
Go runtime: (a) GOMAXPROCS $RUNTIME_DEFAULT, (b) GOMAXPROCS ${NODE_PROCS/#default/$RUNTIME_DEFAULT} on each node.
CPU = utime+stime of the server processes over the measured run per acknowledged message (µs);
"cores" = server CPU seconds / run seconds; "cap/s" = msgs/s the servers could carry on all
$CORES cores at that CPU cost (the bench client's CPU, shown last, competes for the same cores).

$(printf '%-34s %9s %7s %7s %8s %9s %8s %6s %8s %s' "" "msgs/s" "p50 ms" "p99 ms" "leader" "follower" "all srv" "cores" "cap/s" "")
EOF
printf '%s\n' "${ROWS[@]}"
cat <<EOF

cluster / single   = $(median_ratio 0.5)
cluster / NATS R3  = $(ratio "$CLUSTER_RATE" "$NATS_RATE" 3)
EOF
