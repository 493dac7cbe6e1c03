#!/usr/bin/env bash
# The hand-made baseline: what an operator writes today without appsnap.
# Freeze each mount, call CreateSnapshotGroup with the official Python SDK,
# thaw each mount, in that order. No `set -e`, so the thaws always run.
# Timestamps (epoch microseconds) go to STAMPS for the benchmark.
#   snapshot.sh STAMPS MOUNT...
STAMPS=$1
shift
HERE=$(dirname "${BASH_SOURCE[0]}")
stamp() { echo "$1 ${EPOCHREALTIME/./}" >>"$STAMPS"; }

for m in "$@"; do
    stamp freeze
    fsfreeze -f "$m"
done
stamp frozen
python3 "$HERE/create_group.py"
rc=$?
stamp answered
for m in "$@"; do
    fsfreeze -u "$m"
done
stamp thawed
exit $rc
