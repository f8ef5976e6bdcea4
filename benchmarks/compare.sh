#!/usr/bin/env bash
# Run benchmarks/stow.py against this server and against Orthanc, one after the other on fresh storage, in the
# same run (shared machines are noisy: compare the ratios). Extra arguments go to stow.py (e.g. --count 400 --big).
#
#   benchmarks/compare.sh --big
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
python=${PYTHON:-python}
work=$(mktemp -d /tmp/stow-compare.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT

wait_ready() {  # URL
    for _ in $(seq 1 100); do curl -fs "$1" >/dev/null 2>&1 && return 0; sleep 0.2; done
    echo "not ready: $1" >&2; return 1
}

echo "== dicomweb (embedded PostgreSQL, fsync on)"
# Authentication off (loopback only) so that both servers answer the same unauthenticated requests.
# The --big scenario sends one 1 GB request: above the default 100 MiB body limit.
DICOMWEB_AUTH=disabled DICOMWEB_DATA_DIR="$work/dicomweb" DICOMWEB_LOG_LEVEL=warning DICOMWEB_PORT=8080 \
    DICOMWEB_MAX_UPLOAD_MB=4096 dicomweb serve &
server=$!
wait_ready http://127.0.0.1:8080/readyz
"$python" "$here/stow.py" http://127.0.0.1:8080/dicomweb --server-pid "$server" --json "$work/dicomweb.json" "$@" \
    | tee "$work/dicomweb.txt"
kill "$server"; wait "$server" || true

echo "== Orthanc (SQLite index, SyncStorageArea on)"
"$here/orthanc.sh" "$work/orthanc" 2>/dev/null &
orthanc=$!
wait_ready http://127.0.0.1:8042/system
"$python" "$here/stow.py" http://127.0.0.1:8042/dicom-web --server-pid "$(pgrep -x -n Orthanc)" "$@" | tee "$work/orthanc.txt"
kill "$orthanc"; wait "$orthanc" || true
