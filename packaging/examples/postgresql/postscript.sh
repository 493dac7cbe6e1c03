#!/bin/bash
# appsnap post-script for PostgreSQL: nothing to undo.
#
# What it does
#   The pre-script only ran CHECKPOINT and took no lock, so there is nothing to
#   resume. It checks the server still answers, so a problem shows in the
#   job's result (exit code 10) rather than going unnoticed.
#
# What to change: PGUSER_OS and PSQL_ARGS, as in the pre-script.
set -euo pipefail

PGUSER_OS=${PGUSER_OS:-postgres}
PSQL_ARGS=${PSQL_ARGS:-}

# shellcheck disable=SC2086
runuser -u "$PGUSER_OS" -- psql -X -q -t -v ON_ERROR_STOP=1 $PSQL_ARGS -c 'SELECT 1;' >/dev/null
echo "postgresql: server answering"
