#!/usr/bin/env bash
# Run benchmarks/wado.py and benchmarks/wado_pixels.py against this server and against Orthanc, one after the other
# on fresh storage, in the same run (shared machines are noisy: compare the ratios). The README's WADO-RS table
# comes from this script. Needs Debian's orthanc, orthanc-dicomweb and (for the frames scenario) wrk.
#
#   benchmarks/compare_wado.sh [--instances 500] [--seconds 8]
set -euo pipefail
. "$(dirname "$0")/servers.sh"

echo "== dicomweb (2 workers, embedded PostgreSQL, audit trail on)"
start_dicomweb DICOMWEB_WORKERS=2
"$python" "$here/wado.py" http://127.0.0.1:8080/dicomweb "$@"
"$python" "$here/wado_pixels.py" http://127.0.0.1:8080/dicomweb
stop "$server"

echo "== Orthanc (SQLite index, SyncStorageArea on)"
start_orthanc
"$python" "$here/wado.py" http://127.0.0.1:8042/dicom-web "$@"
"$python" "$here/wado_pixels.py" http://127.0.0.1:8042/dicom-web
stop "$orthanc"
