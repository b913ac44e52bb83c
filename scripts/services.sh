#!/usr/bin/env bash
# scripts/services.sh — make sure the real services Imago's tests use run on loopback:
#   MariaDB     127.0.0.1:3306  root, empty password over TCP, database `test`
#   PostgreSQL  127.0.0.1:5432  postgres, trust auth, database `test`, max_prepared_transactions >= 64
#   ZooKeeper   127.0.0.1:2181  standalone, Debian's `zookeeper` package, our own config
# Installs a missing one with apt-get, starts a stopped one without systemd, waits (bounded) until
# each answers a real query, and writes the addresses as a sourceable env file.
#
# Usage: scripts/services.sh [ENV_FILE]      (default: .services.env in the repository root)
# Idempotent and fast (well under a second) when everything already runs. Fails loudly: on any
# problem it prints the reason and the tail of the service's log, and exits non-zero.
#
# Environment: SERVICES_WAIT (seconds to wait for each service, default 60).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ENV_FILE="${1:-$ROOT/.services.env}"
WAIT="${SERVICES_WAIT:-60}"

MYSQL_DSN='root@tcp(127.0.0.1:3306)/test'
PG_DSN='postgres://postgres@127.0.0.1:5432/test?sslmode=disable'
ZK_ADDR='127.0.0.1:2181'
PG_MIN_PREPARED=64

# ZooKeeper: our own configuration, data and logs (the package's /etc/zookeeper/conf is untouched).
ZK_CONF_DIR=/etc/zookeeper/imago
ZK_CFG="$ZK_CONF_DIR/zoo.cfg"
ZK_DATA=/var/lib/zookeeper/imago
ZK_LOG_DIR=/var/log/zookeeper
ZK_LOG="$ZK_LOG_DIR/imago-zookeeper.log"
ZK_OUT="$ZK_LOG_DIR/imago-zookeeper.out"
ZK_PIDFILE="$ZK_DATA/zookeeper_server.pid" # where zkServer.sh looks too

export DEBIAN_FRONTEND=noninteractive
export PGCONNECT_TIMEOUT=3

log() { printf 'services: %s\n' "$*" >&2; }

# die REASON [LOGFILE...]: print the reason and the tail of each log, exit 1.
die() {
	local reason="$1" f
	shift
	printf 'services: ERROR: %s\n' "$reason" >&2
	for f in "$@"; do
		if [[ -s "$f" ]]; then
			printf -- '--- last lines of %s ---\n' "$f" >&2
			tail -n 40 "$f" >&2 || true
		fi
	done
	exit 1
}

need_root() {
	[[ $EUID -eq 0 ]] || die "$1 needs root (run: sudo bash scripts/services.sh)"
}

APT_UPDATED=0
apt_install() {
	need_root "installing $*"
	log "installing $* with apt-get"
	if [[ $APT_UPDATED -eq 0 ]]; then
		apt-get -o DPkg::Lock::Timeout=300 update -qq >&2 || die "apt-get update failed"
		APT_UPDATED=1
	fi
	apt-get -o DPkg::Lock::Timeout=300 install -y -qq "$@" >&2 || die "apt-get install $* failed"
}

# wait_for SECONDS WHAT ALIVE_CMD CHECK_CMD LOGS...: poll CHECK_CMD every 0.2 s until it succeeds.
# ALIVE_CMD (or "true") is evaluated each round; when it fails the process died: stop waiting.
wait_for() {
	local secs="$1" what="$2" alive="$3" check="$4"
	shift 4
	local deadline=$((SECONDS + secs))
	until eval "$check" >/dev/null 2>&1; do
		if ! eval "$alive" >/dev/null 2>&1; then
			die "$what: the server process exited while starting" "$@"
		fi
		if ((SECONDS >= deadline)); then
			die "$what: no answer within ${secs}s" "$@"
		fi
		sleep 0.2
	done
}

# ---------------------------------------------------------------------------------------------
# MariaDB
# ---------------------------------------------------------------------------------------------
mysql_tcp() { timeout 10 mariadb --connect-timeout=3 -h127.0.0.1 -P3306 -uroot "$@"; }
mysql_sock() { timeout 10 mariadb --connect-timeout=3 --protocol=socket -uroot "$@"; }
mysql_tcp_ok() { mysql_tcp -N -e 'SELECT 1' >/dev/null 2>&1; }
mariadbd_alive() { start-stop-daemon --status --exec /usr/sbin/mariadbd; }

mysql_option() { # last value of a [mysqld] option in the server's configuration
	my_print_defaults --mysqld 2>/dev/null | sed -n "s/^--$1=//p" | tail -n 1
}

ensure_mariadb() {
	if ! mysql_tcp_ok; then
		start_mariadb
	fi
	mysql_tcp -e 'CREATE DATABASE IF NOT EXISTS test' || die "MariaDB: cannot create database test"
	mysql_tcp -N -e 'SELECT VERSION()' 2>/dev/null | sed 's/^/services: MariaDB /' >&2
}

start_mariadb() {
	if [[ ! -x /usr/sbin/mariadbd ]] || ! command -v mariadb >/dev/null; then
		apt_install mariadb-server mariadb-client
	fi
	local errlog datadir args=(--user=mysql)
	errlog="$(mysql_option 'log[-_]error')"
	if [[ -z "$errlog" ]]; then
		# Debian logs to journald under systemd; without it, keep the errors in a file.
		errlog=/var/log/mysql/error.log
		args+=("--log-error=$errlog")
	fi
	datadir="$(mysql_option datadir)"
	datadir="${datadir:-/var/lib/mysql}"
	[[ "$errlog" == /* ]] || errlog="$datadir/$errlog"

	if ! mariadbd_alive; then
		need_root "starting MariaDB"
		log "starting MariaDB"
		install -d -o mysql -g mysql -m 0755 /run/mysqld
		[[ -d "$(dirname "$errlog")" ]] || install -d -o mysql -g adm -m 2750 "$(dirname "$errlog")"
		if [[ ! -d "$datadir/mysql" ]]; then
			log "initialising the MariaDB data directory $datadir"
			mariadb-install-db --user=mysql --datadir="$datadir" >/dev/null 2>&1 ||
				die "MariaDB: mariadb-install-db failed for $datadir" "$errlog"
		fi
		start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- "${args[@]}" ||
			die "MariaDB: start-stop-daemon failed" "$errlog"
	fi
	# The server is up when it answers on its socket (root authenticates there via unix_socket).
	wait_for "$WAIT" "MariaDB" mariadbd_alive \
		"mysql_sock -N -e 'SELECT 1' || mysql_tcp_ok" "$errlog"

	if ! mysql_tcp_ok; then
		need_root "granting root@127.0.0.1 access"
		log "MariaDB: allowing root@127.0.0.1 with an empty password over TCP"
		mysql_sock -e "CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY '';
			ALTER USER 'root'@'127.0.0.1' IDENTIFIED BY '';
			GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;
			FLUSH PRIVILEGES;" ||
			die "MariaDB: cannot log in over the unix socket as root to fix TCP access" "$errlog"
		if ! mysql_tcp_ok; then
			# With name resolution on, 127.0.0.1 may match root@localhost (unix_socket only).
			mysql_sock -e "ALTER USER 'root'@'localhost'
				IDENTIFIED VIA unix_socket OR mysql_native_password USING PASSWORD('');
				FLUSH PRIVILEGES;" ||
				die "MariaDB: cannot alter root@localhost" "$errlog"
		fi
	fi
	local err
	err="$(mysql_tcp -N -e 'SELECT 1' 2>&1 >/dev/null)" ||
		die "MariaDB: root cannot log in over TCP at 127.0.0.1:3306 with an empty password: $err" "$errlog"
}

# ---------------------------------------------------------------------------------------------
# PostgreSQL
# ---------------------------------------------------------------------------------------------
pg_tcp() { timeout 10 psql -X -w -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p 5432 -U postgres "$@"; }
pg_tcp_ok() { pg_tcp -d postgres -Atc 'SELECT 1' >/dev/null 2>&1; }
pg_sock() { # as the postgres OS user over the unix socket (peer auth in Debian's default pg_hba)
	(cd / && timeout 10 runuser -u postgres -- psql -X -w -q -v ON_ERROR_STOP=1 -p 5432 "$@")
}

PG_VER="" PG_LOG=""
pg_find_cluster() {
	local v
	PG_VER=""
	if [[ -d /etc/postgresql ]]; then
		while read -r v; do
			[[ -f "/etc/postgresql/$v/main/postgresql.conf" ]] && PG_VER="$v"
		done < <(find /etc/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -V)
	fi
	PG_LOG="/var/log/postgresql/postgresql-${PG_VER:-X}-main.log"
}
pg_status() { pg_lsclusters -h "$PG_VER" main 2>/dev/null | awk '{print $4}'; }
pg_port() { pg_lsclusters -h "$PG_VER" main 2>/dev/null | awk '{print $3}'; }

ensure_postgres() {
	pg_find_cluster
	if ! pg_tcp_ok; then
		start_postgres
	fi
	if [[ "$(pg_tcp -d postgres -Atc "SELECT count(*) FROM pg_database WHERE datname = 'test'")" != 1 ]]; then
		log "PostgreSQL: creating database test"
		pg_tcp -d postgres -c 'CREATE DATABASE test' || die "PostgreSQL: cannot create database test" "$PG_LOG"
	fi
	local n
	n="$(pg_tcp -d test -Atc 'SHOW max_prepared_transactions')" ||
		die "PostgreSQL: cannot query database test" "$PG_LOG"
	if ((n < PG_MIN_PREPARED)); then
		need_root "raising max_prepared_transactions"
		[[ -n "$PG_VER" ]] || die "PostgreSQL answers on 127.0.0.1:5432 but no cluster in /etc/postgresql/*/main"
		log "PostgreSQL: max_prepared_transactions is $n; setting $PG_MIN_PREPARED and restarting $PG_VER/main"
		pg_tcp -d postgres -c "ALTER SYSTEM SET max_prepared_transactions = $PG_MIN_PREPARED" ||
			die "PostgreSQL: ALTER SYSTEM failed" "$PG_LOG"
		pg_ctlcluster --skip-systemctl-redirect "$PG_VER" main restart ||
			die "PostgreSQL: restart of $PG_VER/main failed" "$PG_LOG"
		wait_for "$WAIT" "PostgreSQL" true pg_tcp_ok "$PG_LOG"
		n="$(pg_tcp -d test -Atc 'SHOW max_prepared_transactions')"
		((n >= PG_MIN_PREPARED)) ||
			die "PostgreSQL: max_prepared_transactions is still $n after the restart (set elsewhere?)" "$PG_LOG"
	fi
	pg_tcp -d test -Atc 'SHOW server_version' | sed "s/^/services: PostgreSQL /;s/\$/, max_prepared_transactions $n/" >&2
}

start_postgres() {
	if [[ -z "$PG_VER" ]] && ! command -v pg_ctlcluster >/dev/null; then
		apt_install postgresql
		pg_find_cluster
	fi
	if [[ -z "$PG_VER" ]]; then
		need_root "creating a PostgreSQL cluster"
		local v
		v="$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' 2>/dev/null | sort -V | tail -n 1)"
		[[ -n "$v" ]] || die "PostgreSQL: no server binaries under /usr/lib/postgresql"
		log "PostgreSQL: creating cluster $v/main"
		pg_createcluster "$v" main >&2 || die "PostgreSQL: pg_createcluster $v main failed"
		pg_find_cluster
	fi
	local port
	port="$(pg_port)"
	[[ "$port" == 5432 ]] || die "PostgreSQL: cluster $PG_VER/main is configured for port '$port', not 5432"

	if [[ "$(pg_status)" != online ]]; then
		need_root "starting PostgreSQL"
		log "PostgreSQL: starting $PG_VER/main"
		pg_ctlcluster --skip-systemctl-redirect "$PG_VER" main start ||
			die "PostgreSQL: pg_ctlcluster $PG_VER main start failed" "$PG_LOG"
	fi
	wait_for "$WAIT" "PostgreSQL" "[[ \$(pg_status) == online ]]" \
		"pg_tcp_ok || pg_sock -d postgres -Atc 'SELECT 1'" "$PG_LOG"

	if ! pg_tcp_ok; then
		# Debian's default pg_hba.conf wants a password over TCP: trust postgres from 127.0.0.1.
		need_root "changing pg_hba.conf"
		local hba
		hba="$(pg_sock -d postgres -Atc 'SHOW hba_file')" ||
			die "PostgreSQL: cannot connect over TCP nor as the postgres OS user over the socket" "$PG_LOG"
		if ! grep -q '^host[[:space:]]\+all[[:space:]]\+postgres[[:space:]]\+127.0.0.1/32[[:space:]]\+trust' "$hba"; then
			log "PostgreSQL: trusting user postgres from 127.0.0.1 in $hba"
			sed -i "1i # added by imago scripts/services.sh: tests connect as postgres without a password\\
host    all             postgres        127.0.0.1/32            trust" "$hba"
		fi
		pg_sock -d postgres -Atc 'SELECT pg_reload_conf()' >/dev/null || die "PostgreSQL: reload failed" "$PG_LOG"
		local err
		err="$(pg_tcp -d postgres -Atc 'SELECT 1' 2>&1 >/dev/null)" ||
			die "PostgreSQL: postgres cannot log in over TCP at 127.0.0.1:5432 without a password: $err" "$PG_LOG"
	fi
}

# ---------------------------------------------------------------------------------------------
# ZooKeeper
# ---------------------------------------------------------------------------------------------
zk_4lw() { # send a four-letter word to 127.0.0.1:2181, print the answer
	# shellcheck disable=SC2016 # $1 is expanded by the inner bash
	timeout 5 bash -c 'exec 3<>/dev/tcp/127.0.0.1/2181 && printf %s "$1" >&3 && cat <&3' _ "$1" 2>/dev/null
}
zk_ok() { zk_4lw srvr | grep -q '^Mode: '; }
zk_alive() { start-stop-daemon --status --pidfile "$ZK_PIDFILE" >/dev/null 2>&1; }

zk_write_config() {
	local tmp
	install -d -m 0755 "$ZK_CONF_DIR"
	tmp="$(mktemp)"
	cat >"$tmp" <<EOF
# ZooKeeper for Imago's tests, written by scripts/services.sh (rewritten on every run).
# Standalone, loopback only; no admin web server (it would take port 8080, Imago's port).
tickTime=2000
initLimit=10
syncLimit=5
dataDir=$ZK_DATA
clientPort=2181
clientPortAddress=127.0.0.1
maxClientCnxns=200
admin.enableServer=false
4lw.commands.whitelist=ruok,srvr,stat
autopurge.snapRetainCount=3
autopurge.purgeInterval=1
EOF
	cmp -s "$tmp" "$ZK_CFG" || install -m 0644 "$tmp" "$ZK_CFG"
	cat >"$tmp" <<EOF
# log4j configuration for the ZooKeeper started by scripts/services.sh.
log4j.rootLogger=INFO, ROLLINGFILE
log4j.appender.ROLLINGFILE=org.apache.log4j.RollingFileAppender
log4j.appender.ROLLINGFILE.File=$ZK_LOG
log4j.appender.ROLLINGFILE.MaxFileSize=10MB
log4j.appender.ROLLINGFILE.MaxBackupIndex=3
log4j.appender.ROLLINGFILE.layout=org.apache.log4j.PatternLayout
log4j.appender.ROLLINGFILE.layout.ConversionPattern=%d{ISO8601} %-5p [%t:%C{1}@%L] - %m%n
EOF
	cmp -s "$tmp" "$ZK_CONF_DIR/log4j.properties" || install -m 0644 "$tmp" "$ZK_CONF_DIR/log4j.properties"
	rm -f "$tmp"
}

ensure_zookeeper() {
	if ! zk_ok; then
		start_zookeeper
	fi
	# The known trap: a ZooKeeper with its admin server enabled sits on Imago's port 8080.
	if command -v ss >/dev/null && ss -Hltnp 'sport = :8080' 2>/dev/null | grep -q '"java"'; then
		log "WARNING: a java process listens on port 8080 (a ZooKeeper admin server?); Imago needs 8080"
	fi
	zk_4lw srvr | sed -n 's/^Zookeeper version: \([^,-]*\).*/services: ZooKeeper \1/p;s/^Mode: /services: ZooKeeper mode: /p' >&2
}

start_zookeeper() {
	if [[ "$(dpkg-query -W -f='${Status}' zookeeper 2>/dev/null)" != "install ok installed" ]] ||
		[[ ! -f /usr/share/java/zookeeper.jar ]] || ! id zookeeper >/dev/null 2>&1; then
		apt_install zookeeper
	fi
	need_root "starting ZooKeeper"
	local java jar cp
	java="$(command -v java)" || die "ZooKeeper: java is not installed (the zookeeper package depends on default-jre)"
	id zookeeper >/dev/null 2>&1 || die "ZooKeeper: the zookeeper user does not exist (is the package installed?)"
	zk_write_config
	install -d -o zookeeper -g zookeeper -m 0750 "$ZK_DATA"
	[[ -d "$ZK_LOG_DIR" ]] || install -d -o zookeeper -g zookeeper -m 0755 "$ZK_LOG_DIR"
	# Debian's zookeeper.jar names its dependencies in its manifest; add a log4j binding so that
	# the server logs to $ZK_LOG (zkServer.sh leaves slf4j without a binding: no log at all).
	cp="$ZK_CONF_DIR:/usr/share/java/zookeeper.jar"
	for jar in /usr/share/java/slf4j-log4j12.jar /usr/share/java/log4j-1.2.jar; do
		[[ -f "$jar" ]] && cp="$cp:$jar"
	done
	if ! zk_alive; then
		if (exec 3<>/dev/tcp/127.0.0.1/2181) 2>/dev/null; then
			die "ZooKeeper: 127.0.0.1:2181 is taken by a process that does not answer as a serving ZooKeeper: $(
				ss -Hltnp 'sport = :2181' 2>/dev/null | tr -s ' ' | head -n 1)" "$ZK_LOG"
		fi
		log "starting ZooKeeper (config $ZK_CFG, log $ZK_LOG)"
		: >"$ZK_OUT"
		chown zookeeper:zookeeper "$ZK_OUT"
		start-stop-daemon --start --oknodo --background --make-pidfile --pidfile "$ZK_PIDFILE" \
			--chuid zookeeper:zookeeper --chdir "$ZK_DATA" --output "$ZK_OUT" --startas "$java" -- \
			-Xms64m -Xmx256m -Dzookeeper.log.dir="$ZK_LOG_DIR" -Dzookeeper.log.file="$(basename "$ZK_LOG")" \
			-Dlog4j.configuration="file:$ZK_CONF_DIR/log4j.properties" \
			-XX:+HeapDumpOnOutOfMemoryError "-XX:OnOutOfMemoryError=kill -9 %p" \
			-cp "$cp" org.apache.zookeeper.server.quorum.QuorumPeerMain "$ZK_CFG" ||
			die "ZooKeeper: start-stop-daemon failed" "$ZK_OUT" "$ZK_LOG"
	fi
	wait_for "$WAIT" "ZooKeeper" zk_alive zk_ok "$ZK_OUT" "$ZK_LOG"
}

# ensure_chromium installs Debian's chromium, the headless browser of the console's browser test
# (cmd/imago/console_browser_test.go). Nothing to start: the test runs it.
ensure_chromium() {
	command -v chromium >/dev/null 2>&1 && return
	apt_install chromium
}

# clear_stale_branches rolls back prepared transactions of Imago's XA format (gid 494d4731_...)
# that a killed or crashed test run left in the test server for more than 10 minutes. A prepared
# transaction holds back PostgreSQL's cluster-wide xmin, which stalls every outbox relay's
# snapshot check in later runs (and keeps its row locks). Only these test services are touched;
# a live test's branches are younger than that.
clear_stale_branches() {
	local db gid
	while IFS='|' read -r db gid; do
		[[ -n "$gid" ]] || continue
		log "PostgreSQL: rolling back stale prepared transaction $gid (database $db, left by an earlier test run)"
		pg_tcp -d "$db" -c "ROLLBACK PREPARED '$gid'" >/dev/null || log "PostgreSQL: could not roll back $gid"
	done < <(pg_tcp -d postgres -Atc "SELECT database, gid FROM pg_prepared_xacts WHERE gid ~ '^494d4731_[0-9a-f_]+\$' AND prepared < now() - interval '10 minutes'")
}

# ---------------------------------------------------------------------------------------------
start=$SECONDS
ensure_mariadb
ensure_postgres
clear_stale_branches
ensure_zookeeper
ensure_chromium

tmp="$(mktemp "$(dirname "$ENV_FILE")/.services.env.XXXXXX")"
cat >"$tmp" <<EOF
# Written by scripts/services.sh: the real services Imago's tests use. Source it (set -a; . $(basename "$ENV_FILE")).
IMAGO_TEST_MYSQL_DSN='$MYSQL_DSN'
IMAGO_TEST_PG_DSN='$PG_DSN'
IMAGO_TEST_ZK='$ZK_ADDR'
IMAGO_REQUIRE_SERVICES=1
EOF
chmod 0644 "$tmp"
mv -f "$tmp" "$ENV_FILE"

cat <<EOF
services ready in $((SECONDS - start))s; wrote $ENV_FILE
  MariaDB     IMAGO_TEST_MYSQL_DSN='$MYSQL_DSN'
  PostgreSQL  IMAGO_TEST_PG_DSN='$PG_DSN'
  ZooKeeper   IMAGO_TEST_ZK='$ZK_ADDR'
EOF
