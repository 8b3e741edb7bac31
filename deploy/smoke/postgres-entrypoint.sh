#!/bin/sh
# The official image's contract, reduced to what deploy/docker-compose.yml uses: a first start
# creates the cluster with POSTGRES_USER / POSTGRES_PASSWORD and the database POSTGRES_DB.
set -eu
: "${POSTGRES_USER:=postgres}" "${POSTGRES_DB:=$POSTGRES_USER}" "${PGPORT:=5432}"
: "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}"
export PGPORT
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    password_file=$(mktemp)
    printf '%s\n' "$POSTGRES_PASSWORD" > "$password_file"
    initdb --pgdata="$PGDATA" --username="$POSTGRES_USER" --pwfile="$password_file" \
        --auth-local=trust --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8
    rm -f "$password_file"
    # TCP connections from anywhere need the password (the image's pg_hba allows only loopback).
    echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
    pg_ctl --pgdata="$PGDATA" --wait --options="-c listen_addresses=''" start
    if [ "$POSTGRES_DB" != postgres ]; then
        createdb --username="$POSTGRES_USER" "$POSTGRES_DB"
    fi
    pg_ctl --pgdata="$PGDATA" --wait stop
fi
exec postgres -D "$PGDATA" -c listen_addresses="${POSTGRES_LISTEN_ADDRESSES:-*}" "$@"
