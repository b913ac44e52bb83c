#!/usr/bin/env bash
# scripts/java-deps.sh — make sure the JDBC drivers the Java XA conformance harness and the
# Java example need are installed, from Debian's packages only:
#   libpostgresql-jdbc-java  /usr/share/java/postgresql.jar          (org.postgresql.xa.PGXADataSource)
#   libmariadb-java          /usr/share/java/mariadb-java-client.jar (org.mariadb.jdbc.MariaDbDataSource)
# and that javac is there (default-jdk-headless when missing). Idempotent: when everything is
# installed it only prints the jar paths, one per line, PostgreSQL first. Fails loudly.
set -euo pipefail

PG_JAR=/usr/share/java/postgresql.jar
MARIADB_JAR=/usr/share/java/mariadb-java-client.jar

export DEBIAN_FRONTEND=noninteractive
log() { printf 'java-deps: %s\n' "$*" >&2; }
die() { printf 'java-deps: ERROR: %s\n' "$*" >&2; exit 1; }

missing=()
[[ -f "$PG_JAR" ]] || missing+=(libpostgresql-jdbc-java)
[[ -f "$MARIADB_JAR" ]] || missing+=(libmariadb-java)
command -v javac >/dev/null || missing+=(default-jdk-headless)

if ((${#missing[@]} > 0)); then
	[[ $EUID -eq 0 ]] || die "installing ${missing[*]} needs root (run: sudo bash scripts/java-deps.sh)"
	log "installing ${missing[*]} with apt-get"
	apt-get -o DPkg::Lock::Timeout=300 update -qq >&2 || die "apt-get update failed"
	apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${missing[@]}" >&2 ||
		die "apt-get install ${missing[*]} failed"
fi

[[ -f "$PG_JAR" ]] || die "$PG_JAR is missing after installing libpostgresql-jdbc-java"
[[ -f "$MARIADB_JAR" ]] || die "$MARIADB_JAR is missing after installing libmariadb-java"
command -v javac >/dev/null || die "javac is missing after installing default-jdk-headless"
echo "$PG_JAR"
echo "$MARIADB_JAR"
