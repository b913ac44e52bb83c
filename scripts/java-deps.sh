#!/usr/bin/env bash
# scripts/java-deps.sh — make sure the jars the Java XA conformance harness, the Java examples
# and the JTA test need are installed, from Debian's packages only:
#   libpostgresql-jdbc-java        /usr/share/java/postgresql.jar             (org.postgresql.xa.PGXADataSource)
#   libmariadb-java                /usr/share/java/mariadb-java-client.jar    (org.mariadb.jdbc.MariaDbDataSource)
#   libbtm-java                    /usr/share/java/btm.jar                    (Bitronix, a JTA transaction manager)
#   libgeronimo-jta-1.2-spec-java  /usr/share/java/geronimo-jta-1.2-spec.jar  (javax.transaction: Bitronix's API)
#   libslf4j-java                  /usr/share/java/slf4j-api.jar, slf4j-simple.jar (Bitronix logs through SLF4J)
# Debian's libbtm-java declares no dependencies, so the last two are named here. And that javac
# is there (default-jdk-headless when missing). Idempotent: when everything is installed it only
# prints the jar paths, one per line, in the order above. Fails loudly.
set -euo pipefail

PG_JAR=/usr/share/java/postgresql.jar
MARIADB_JAR=/usr/share/java/mariadb-java-client.jar
BTM_JAR=/usr/share/java/btm.jar
JTA_JAR=/usr/share/java/geronimo-jta-1.2-spec.jar
SLF4J_JAR=/usr/share/java/slf4j-api.jar
SLF4J_SIMPLE_JAR=/usr/share/java/slf4j-simple.jar

export DEBIAN_FRONTEND=noninteractive
log() { printf 'java-deps: %s\n' "$*" >&2; }
die() { printf 'java-deps: ERROR: %s\n' "$*" >&2; exit 1; }

missing=()
[[ -f "$PG_JAR" ]] || missing+=(libpostgresql-jdbc-java)
[[ -f "$MARIADB_JAR" ]] || missing+=(libmariadb-java)
[[ -f "$BTM_JAR" ]] || missing+=(libbtm-java)
[[ -f "$JTA_JAR" ]] || missing+=(libgeronimo-jta-1.2-spec-java)
[[ -f "$SLF4J_JAR" && -f "$SLF4J_SIMPLE_JAR" ]] || missing+=(libslf4j-java)
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
[[ -f "$BTM_JAR" ]] || die "$BTM_JAR is missing after installing libbtm-java"
[[ -f "$JTA_JAR" ]] || die "$JTA_JAR is missing after installing libgeronimo-jta-1.2-spec-java"
[[ -f "$SLF4J_JAR" && -f "$SLF4J_SIMPLE_JAR" ]] || die "$SLF4J_JAR or $SLF4J_SIMPLE_JAR is missing after installing libslf4j-java"
command -v javac >/dev/null || die "javac is missing after installing default-jdk-headless"
echo "$PG_JAR"
echo "$MARIADB_JAR"
echo "$BTM_JAR"
echo "$JTA_JAR"
echo "$SLF4J_JAR"
echo "$SLF4J_SIMPLE_JAR"
