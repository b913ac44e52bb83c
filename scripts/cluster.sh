#!/usr/bin/env bash
# scripts/cluster.sh — run the local three-node cluster of examples/cluster/ (docs/cluster.md,
# "Running a cluster"):
#   up           build bin/imago once, start nodes 1-3 in the background, wait for their HTTP ports
#   down         stop every node (SIGTERM, then SIGKILL after 30 s)
#   status       which nodes run, then `imago cluster status` from the first that answers
#   kill N       kill -9 node N (a crash: no shutdown at all)
#   restart N    start node N again (stopping it first if it runs)
#
# Each node runs `bin/imago serve --config examples/cluster/nodeN.yaml` from the repository root:
# data in ./cluster-data/nodeN, log in ./cluster-data/nodeN.log, pid in ./cluster-data/nodeN.pid.
# Offsets live in the PostgreSQL of scripts/services.sh (run it first).
#
# Environment: CLUSTER_WAIT (seconds to wait for a node's port, default 30). The three nodes share
# this machine, so each gets a third of its cores as Go schedulers (GOMAXPROCS, at least 1)
# unless GOMAXPROCS is set: three runtimes each sized for every core spin and wake one another
# for CPU the others need (docs/cluster.md, "What replication costs").
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BIN=bin/imago
RUN=cluster-data
WAIT="${CLUSTER_WAIT:-30}"
NODES=(1 2 3)
PROCS="${GOMAXPROCS:-$(($(nproc) / 3 > 0 ? $(nproc) / 3 : 1))}"

log() { printf 'cluster: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

http_port() { echo "808$1"; }
pidfile() { echo "$RUN/node$1.pid"; }
logfile() { echo "$RUN/node$1.log"; }

# pid N: the pid of node N when it runs (a pid file whose process is our imago), else nothing.
pid() {
	local f p
	f="$(pidfile "$1")"
	[[ -f $f ]] || return 0
	p="$(<"$f")"
	if [[ -n $p ]] && kill -0 "$p" 2>/dev/null && tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -q "node$1.yaml"; then
		echo "$p"
	fi
}

check_node() {
	[[ ${1:-} =~ ^[123]$ ]] || die "want a node number 1, 2 or 3, got '${1:-}'"
}

build() {
	log "building $BIN"
	mkdir -p bin
	go build -o "$BIN" ./cmd/imago
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# start N [bootstrap]: start node N in the background and wait until its HTTP port answers.
# With "bootstrap" (up, for a node whose data directory does not exist yet) the node may start
# a new cluster; otherwise a directory without raft state is refused (it may have been wiped).
start() {
	local n=$1 p extra=()
	[[ ${2:-} == bootstrap ]] && extra=(--bootstrap-cluster)
	[[ -x $BIN ]] || build
	if p="$(pid "$n")" && [[ -n $p ]]; then
		log "node $n already runs (pid $p)"
		return 0
	fi
	mkdir -p "$RUN"
	printf '\n--- %s start\n' "$(date -u +%FT%TZ)" >>"$(logfile "$n")"
	GOMAXPROCS="$PROCS" nohup "$BIN" serve --config "examples/cluster/node$n.yaml" "${extra[@]}" >>"$(logfile "$n")" 2>&1 </dev/null &
	p=$!
	echo "$p" >"$(pidfile "$n")"
	local deadline=$((SECONDS + WAIT))
	until port_open "$(http_port "$n")"; do
		if ! kill -0 "$p" 2>/dev/null; then
			rm -f "$(pidfile "$n")"
			tail -n 20 "$(logfile "$n")" >&2 || true
			die "node $n exited during start-up (log: $(logfile "$n"))"
		fi
		((SECONDS < deadline)) || die "node $n (pid $p) does not listen on 127.0.0.1:$(http_port "$n") after ${WAIT}s (log: $(logfile "$n"))"
		sleep 0.2
	done
	log "node $n runs: pid $p, http://127.0.0.1:$(http_port "$n"), log $(logfile "$n")"
}

# stop N: SIGTERM node N and wait for it to exit (SIGKILL after 30 s).
stop() {
	local n=$1 p
	p="$(pid "$n")"
	if [[ -z $p ]]; then
		rm -f "$(pidfile "$n")"
		return 0
	fi
	kill -TERM "$p"
	local deadline=$((SECONDS + 30))
	while kill -0 "$p" 2>/dev/null; do
		if ((SECONDS >= deadline)); then
			log "node $n (pid $p) still runs 30 s after SIGTERM: SIGKILL"
			kill -KILL "$p" 2>/dev/null || true
			break
		fi
		sleep 0.2
	done
	rm -f "$(pidfile "$n")"
	log "node $n stopped"
}

cmd_status() {
	local n p first=""
	for n in "${NODES[@]}"; do
		p="$(pid "$n")"
		if [[ -n $p ]]; then
			echo "node $n: running, pid $p, http://127.0.0.1:$(http_port "$n")"
			[[ -n $first ]] || ! port_open "$(http_port "$n")" || first=$n
		else
			echo "node $n: not running"
		fi
	done
	if [[ -z $first ]]; then
		return 0
	fi
	echo
	[[ -x $BIN ]] || build
	"$BIN" cluster status --server "http://127.0.0.1:$(http_port "$first")"
}

case "${1:-}" in
up)
	build
	# A new cluster only when no node has a data directory yet: one missing directory among
	# existing ones is a wiped node, which must not start (docs/cluster.md, replace a node).
	fresh=bootstrap
	for n in "${NODES[@]}"; do [[ -d $RUN/node$n ]] && fresh=""; done
	for n in "${NODES[@]}"; do start "$n" $fresh; done
	;;
down)
	for n in "${NODES[@]}"; do stop "$n"; done
	;;
status)
	cmd_status
	;;
kill)
	check_node "${2:-}"
	p="$(pid "$2")"
	[[ -n $p ]] || die "node $2 is not running"
	kill -KILL "$p"
	rm -f "$(pidfile "$2")"
	log "node $2 (pid $p) killed with SIGKILL"
	;;
restart)
	check_node "${2:-}"
	stop "$2"
	start "$2"
	;;
*)
	sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//' >&2
	exit 2
	;;
esac
