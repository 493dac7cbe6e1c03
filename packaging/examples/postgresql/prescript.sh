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
# What it records
#   When appsnap passes APPSNAP_TAGS_FILE, the checkpoint just made, from
#   pg_control_checkpoint():
#     appsnap:lsn=<checkpoint LSN>        e.g. 0/3000060
#     appsnap:timeline=<timeline ID>      e.g. 1
#   appsnap puts them as tags on the snapshot group and its snapshots: a
#   server restored from the group recovers from this checkpoint (or a later
#   one), and a point-in-time recovery from archived WAL starts there.
#
# What the database user needs
#   Runs as the `postgres` OS user (peer authentication). CHECKPOINT needs a
#   superuser or, from PostgreSQL 15, the pg_checkpoint role;
#   pg_control_checkpoint() a superuser or pg_monitor.
#
# What to change: PGUSER_OS, PSQL_ARGS (e.g. -p 5433 for another cluster).
set -euo pipefail

PGUSER_OS=${PGUSER_OS:-postgres}
PSQL_ARGS=${PSQL_ARGS:-}

# shellcheck disable=SC2086
psql_() { runuser -u "$PGUSER_OS" -- psql -X -q -At -v ON_ERROR_STOP=1 $PSQL_ARGS "$@"; }

if ! psql_ -c 'CHECKPOINT;'; then
  echo "postgresql: CHECKPOINT failed" >&2
  exit 1
fi
# The position is a record, not a condition of consistency: if it cannot be
# read, the snapshot is still good; say so and go on.
if pos=$(psql_ -F ' ' -c 'SELECT checkpoint_lsn, timeline_id FROM pg_control_checkpoint();'); then
  read -r lsn timeline <<<"$pos"
  echo "postgresql: checkpoint done at $lsn, timeline $timeline"
  if [[ -n ${APPSNAP_TAGS_FILE:-} && $lsn =~ ^[0-9A-F]+/[0-9A-F]+$ && $timeline =~ ^[0-9]+$ ]]; then
    printf 'appsnap:lsn=%s\nappsnap:timeline=%s\n' "$lsn" "$timeline" >>"$APPSNAP_TAGS_FILE"
  fi
else
  echo "postgresql: checkpoint done; its position could not be read (not recorded on the snapshot)" >&2
fi
