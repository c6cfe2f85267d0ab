#!/usr/bin/env bash
# Starts a PostgreSQL server on loopback for the database tests and prints its SQLAlchemy URL.
# Installs Debian's postgresql when missing (needs root). Safe to run again: reuses the cluster.
set -euo pipefail
# Only the URL goes to stdout, which callers capture; the cluster tools' chatter goes to stderr.
if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi
version=$(ls /usr/lib/postgresql | sort -n | tail -1)
pg_lsclusters -h | grep -q "^$version main" || pg_createcluster "$version" main >&2
pg_lsclusters -h | grep "^$version main" | grep -q online || pg_ctlcluster "$version" main start >&2
port=$(pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "main" {print $3}')
as_postgres() { su postgres -c "psql -p $port -qtAc \"$1\""; }
[ "$(as_postgres "SELECT 1 FROM pg_roles WHERE rolname = 'cftclip'")" = "1" ] \
  || as_postgres "CREATE ROLE cftclip LOGIN CREATEDB PASSWORD 'cftclip'" >/dev/null
[ "$(as_postgres "SELECT 1 FROM pg_database WHERE datname = 'cftclip_test'")" = "1" ] \
  || as_postgres "CREATE DATABASE cftclip_test OWNER cftclip" >/dev/null
echo "postgresql+psycopg://cftclip:cftclip@127.0.0.1:$port/cftclip_test"
