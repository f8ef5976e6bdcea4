#!/usr/bin/env bash
# Run benchmarks/broken_reads.py against this server and Orthanc, both started on fresh storage and both running
# during the run: the same mutants stored on each, every stored instance read through every read path. Extra
# arguments go to broken_reads.py (e.g. --seed 7 --mutants-per-file 5 --json /tmp/broken.json). The servers' logs
# go to dicomweb.log and orthanc.log in LOGS (default: the work folder, removed at exit).
#
#   LOGS=/tmp/broken-logs benchmarks/broken_reads.sh --json /tmp/broken.json
set -euo pipefail
. "$(dirname "$0")/servers.sh"
logs=${LOGS:-$work}
mkdir -p "$logs"

# Orthanc runs with its address space limited: without a limit, reading one mutant (Number of Frames 2147483647)
# made it allocate 24 GB until the kernel's OOM killer killed it, and on a shared machine that killer may pick
# another process. If Orthanc dies all the same, it is restarted on the same storage and the reads go on
# (broken_reads.py counts the deaths).
ORTHANC_MEMORY_KIB=$((4 * 1024 * 1024))

supervise_orthanc() {
    ulimit -v "$ORTHANC_MEMORY_KIB"
    local child
    trap 'kill "$child" 2>/dev/null || true; wait "$child" || true; exit 0' TERM
    while :; do
        "$here/orthanc.sh" "$work/orthanc" 2>>"$logs/orthanc.log" &
        child=$!
        wait "$child" || echo "orthanc exited ($?): restarting it" >&2
        sleep 0.5
    done
}

echo "== starting dicomweb (embedded PostgreSQL) and Orthanc (address space ${ORTHANC_MEMORY_KIB} KiB)" >&2
start_dicomweb 2>>"$logs/dicomweb.log"
supervise_orthanc &
orthanc=$!
wait_ready http://127.0.0.1:8042/system
"$python" "$here/broken_reads.py" ours=http://127.0.0.1:8080/dicomweb orthanc=http://127.0.0.1:8042/dicom-web "$@"
stop "$server"
stop "$orthanc"
