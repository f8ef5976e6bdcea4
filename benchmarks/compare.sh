#!/usr/bin/env bash
# Run benchmarks/stow.py against this server and against Orthanc, one after the other on fresh storage, in the
# same run (shared machines are noisy: compare the ratios). Extra arguments go to stow.py (e.g. --count 400 --big).
#
#   benchmarks/compare.sh --big
set -euo pipefail
. "$(dirname "$0")/servers.sh"

echo "== dicomweb (embedded PostgreSQL, fsync on)"
# The --big scenario sends one 1 GB request: above the default 100 MiB body limit.
start_dicomweb DICOMWEB_MAX_UPLOAD_MB=4096
"$python" "$here/stow.py" http://127.0.0.1:8080/dicomweb --server-pid "$server" --json "$work/dicomweb.json" "$@" \
    | tee "$work/dicomweb.txt"
stop "$server"

echo "== Orthanc (SQLite index, SyncStorageArea on)"
start_orthanc
"$python" "$here/stow.py" http://127.0.0.1:8042/dicom-web --server-pid "$(pgrep -x -n Orthanc)" "$@" | tee "$work/orthanc.txt"
stop "$orthanc"
