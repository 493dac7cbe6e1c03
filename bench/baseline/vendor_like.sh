#!/usr/bin/env bash
# The vendor-like baseline: what the vendor plugin does per its own log
# (docs: alibaba-api.md section 0, item 4). Freeze each mount with
# `fsfreeze -f` (one after the other, no sync first), CreateSnapshotGroup,
# poll DescribeSnapshotGroups until one snapshot per disk is listed and each
# is Available, and only then thaw. The SDK client (vendor_like.py) is started
# and ready before the first freeze, as the plugin is already running when it
# freezes. No `set -e`, so the thaws always run; a missing or wrong answer
# from python, or none within VENDOR_TIMEOUT_S (default 20), thaws at once.
# Timestamps (epoch microseconds) go to STAMPS for the benchmark:
# freeze (one per mount), frozen, answered, listed, thawed.
#   vendor_like.sh STAMPS MOUNT...
STAMPS=$1
shift
HERE=$(dirname "${BASH_SOURCE[0]}")
TMO=${VENDOR_TIMEOUT_S:-20}
stamp() { echo "$1 ${EPOCHREALTIME/./}" >>"$STAMPS"; }
# A python that died must not kill this script by SIGPIPE between freeze and thaw.
trap '' PIPE

coproc PY { exec python3 "$HERE/vendor_like.py"; }
line=""
read -r -t "$TMO" line <&"${PY[0]}"
if [[ $line != ready ]]; then
    echo "vendor_like: the SDK client did not start: ${line:-no answer}" >&2
    kill "$PY_PID" 2>/dev/null
    exit 1
fi

frozen=()
rc=0
for m in "$@"; do
    stamp freeze
    if ! fsfreeze -f "$m"; then
        echo "vendor_like: cannot freeze $m" >&2
        rc=1
        break
    fi
    frozen+=("$m")
done
if [[ $rc -eq 0 ]]; then
    stamp frozen
    echo go >&"${PY[1]}" 2>/dev/null
    line=""
    read -r -t "$TMO" line <&"${PY[0]}"
    if [[ $line == answered* ]]; then
        stamp answered
        line=""
        read -r -t "$TMO" line <&"${PY[0]}"
    fi
    if [[ $line == listed* ]]; then
        stamp listed
    else
        echo "vendor_like: ${line:-no answer from the SDK client within ${TMO}s}" >&2
        rc=1
    fi
fi
for ((i = ${#frozen[@]} - 1; i >= 0; i--)); do
    fsfreeze -u "${frozen[i]}" || rc=1
done
stamp thawed
[[ $rc -eq 0 ]] && echo "${line#listed }"
kill "$PY_PID" 2>/dev/null
wait "$PY_PID" 2>/dev/null
exit $rc
