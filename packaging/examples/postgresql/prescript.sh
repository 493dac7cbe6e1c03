#!/bin/bash
# appsnap pre-script for PostgreSQL: make recovery from the snapshot short.
#
# What it does
#   Runs CHECKPOINT, so that nearly everything is in the data files and a
#   server started from the snapshot replays little WAL. PostgreSQL is
#   crash-safe: a snapshot group taken while the file systems are frozen is
#   what a power cut would leave, and the server recovers from it. That needs
#   the data directory, WAL (pg_wal) and every tablespace to be on disks of
#   the SAME appsnap job, because the group is consistent across its disks
#   only. No lock is taken, so writes continue until the freeze.
#
# What the database user needs
#   Runs as the `postgres` OS user (peer authentication). CHECKPOINT needs a
#   superuser or, from PostgreSQL 15, the pg_checkpoint role.
#
# What to change: PGUSER_OS, PSQL_ARGS (e.g. -p 5433 for another cluster).
set -euo pipefail

PGUSER_OS=${PGUSER_OS:-postgres}
PSQL_ARGS=${PSQL_ARGS:-}

# shellcheck disable=SC2086
if runuser -u "$PGUSER_OS" -- psql -X -q -v ON_ERROR_STOP=1 $PSQL_ARGS -c 'CHECKPOINT;'; then
  echo "postgresql: checkpoint done"
else
  echo "postgresql: CHECKPOINT failed; snapshot will be file-system-consistent" >&2
  exit 1
fi
