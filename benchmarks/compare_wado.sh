#!/usr/bin/env bash
# Run benchmarks/wado.py and benchmarks/wado_pixels.py against this server and against Orthanc, one after the other
# on fresh storage, in the same run (shared machines are noisy: compare the ratios). The README's WADO-RS table
# comes from this script. Needs Debian's orthanc, orthanc-dicomweb and (for the frames scenario) wrk.
#
#   benchmarks/compare_wado.sh [--instances 500]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
python=${PYTHON:-python}
work=$(mktemp -d /tmp/wado-compare.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT

wait_ready() {  # URL
    for _ in $(seq 1 100); do curl -fs "$1" >/dev/null 2>&1 && return 0; sleep 0.2; done
    echo "not ready: $1" >&2; return 1
}

echo "== dicomweb (2 workers, embedded PostgreSQL, audit trail on)"
# Authentication off (loopback only) so that both servers answer the same unauthenticated requests.
DICOMWEB_AUTH=disabled DICOMWEB_DATA_DIR="$work/dicomweb" DICOMWEB_LOG_LEVEL=warning DICOMWEB_PORT=8080 \
    DICOMWEB_WORKERS=2 dicomweb serve &
server=$!
wait_ready http://127.0.0.1:8080/readyz
"$python" "$here/wado.py" http://127.0.0.1:8080/dicomweb "$@"
"$python" "$here/wado_pixels.py" http://127.0.0.1:8080/dicomweb
kill "$server"; wait "$server" || true

echo "== Orthanc (SQLite index, SyncStorageArea on)"
"$here/orthanc.sh" "$work/orthanc" 2>/dev/null &
orthanc=$!
wait_ready http://127.0.0.1:8042/system
"$python" "$here/wado.py" http://127.0.0.1:8042/dicom-web "$@"
"$python" "$here/wado_pixels.py" http://127.0.0.1:8042/dicom-web
kill "$orthanc"; wait "$orthanc" || true
