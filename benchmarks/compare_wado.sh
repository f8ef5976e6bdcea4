#!/usr/bin/env bash
# Start this server and Orthanc, each on fresh storage, and run benchmarks/side_by_side.py against both: every
# scenario of wado.py and wado_pixels.py on one server, then the other, several rounds (shared machines are noisy:
# compare the ratios). The README's WADO-RS table comes from this script. Needs Debian's orthanc,
# orthanc-dicomweb, and for some scenarios wrk and nginx. Extra arguments go to side_by_side.py.
#
#   benchmarks/compare_wado.sh [--instances 500] [--seconds 5] [--rounds 3]
set -euo pipefail
. "$(dirname "$0")/servers.sh"

echo "== dicomweb: 2 workers, embedded PostgreSQL, audit trail on; Orthanc: SQLite index, SyncStorageArea on"
start_dicomweb DICOMWEB_WORKERS=2
start_orthanc
"$python" "$here/side_by_side.py" ours=http://127.0.0.1:8080/dicomweb orthanc=http://127.0.0.1:8042/dicom-web "$@"
stop "$server"
stop "$orthanc"
