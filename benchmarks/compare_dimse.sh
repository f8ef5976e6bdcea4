#!/usr/bin/env bash
# Run benchmarks/dimse.py against this server's DICOM port and then against Orthanc's, one after the other on fresh
# storage, in the same run (shared machines are noisy: compare the ratios), and print them side by side. Orthanc
# runs twice: as installed, and with TCP_NODELAY=1 (DCMTK's switch that turns Nagle's algorithm off, which Orthanc's
# DICOM server otherwise leaves on). The server measured is this checkout's code (PYTHONPATH), whichever
# `dicomweb` is installed. Extra arguments go to dimse.py (e.g. --big, --count 1000, --scenarios 'store-*').
#
#   benchmarks/compare_dimse.sh [--find N | --find-only N] [dimse.py options]
#
# --find N then measures C-FIND on fresh servers loaded with the first N instances of qido.py's archive by STOW-RS
# (loader and server at nice 19 while loading; ~3 ms of CPU per instance here, Orthanc less); --find-only N only
# that.
# LOGS=DIR keeps our server's log and dimse.py's JSON files.
set -euo pipefail
. "$(dirname "$0")/servers.sh"
export PYTHONPATH="$here/..${PYTHONPATH:+:$PYTHONPATH}"

find= transfers=yes
case ${1:-} in
    --find) find=$2; shift 2 ;;
    --find-only) find=$2 transfers=; shift 2 ;;
esac

dicomweb_dimse=11112
orthanc_dimse=4242
move_port=$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# The calling AE title and the C-MOVE destination (the storescp dimse.py starts on $move_port), as Orthanc's nodes.
orthanc_nodes=(--dicom "$orthanc_dimse" --modality BENCH@127.0.0.1:104 --modality "BENCHSCP@127.0.0.1:$move_port")
logs=${LOGS:-$work/logs}
mkdir -p "$logs"

wait_dimse() {  # AET PORT
    for _ in $(seq 1 100); do /usr/bin/echoscu -aec "$1" 127.0.0.1 "$2" >/dev/null 2>&1 && return 0; sleep 0.2; done
    echo "no C-ECHO answer from $1 on port $2" >&2; return 1
}

# niced PRIORITY PID...: these processes, their children and grandchildren, every thread of each (a thread's
# priority is its own on Linux). Back to 0 needs root; without it they stay at 19.
niced() {
    local priority=$1 pid task
    shift
    local pids=("$@")
    for pid in "$@"; do pids+=($(pgrep -P "$pid" || true)); done
    for pid in "${pids[@]}"; do pids+=($(pgrep -P "$pid" || true)); done
    for pid in "${pids[@]}"; do
        for task in /proc/"$pid"/task/*; do renice -n "$priority" -p "${task##*/}" >/dev/null 2>&1 || true; done
    done
}

# load URL PID...: the first $find instances of qido.py's archive, the loader and these servers at nice 19 meanwhile.
load() {
    local url=$1
    shift
    niced 19 "$@"
    nice -n 19 "$python" "$here/qido.py" "$url" --load "$find" --progress 60
    niced 0 "$@"
}

# register_nodes: dimse.py's calling AE title may find, get and move here, and its storescp is a C-MOVE destination.
register_nodes() {
    local node
    for node in "BENCH 104 store,find,get,move" "BENCHSCP $move_port store"; do
        set -- $node
        if ! DICOMWEB_DATA_DIR="$work/dicomweb" dicomweb nodes add "$1" 127.0.0.1 "$2" --permit "$3" \
            >/dev/null 2>>"$logs/dicomweb.log"; then
            echo "dicomweb nodes add $1 failed: see $logs/dicomweb.log" >&2
            return 1
        fi
    done
}

# ours [dimse.py options]: this server on fresh storage (loaded when $loading), dimse.py against it, stopped.
ours() {
    rm -rf "$work/dicomweb"
    start_dicomweb DICOMWEB_DIMSE_PORT="$dicomweb_dimse" 2>>"$logs/dicomweb.log"
    wait_dimse DICOMWEB "$dicomweb_dimse"
    local pg
    pg=$(head -1 "$work/dicomweb/pg/postmaster.pid")
    register_nodes
    if [ -n "$loading" ]; then load http://127.0.0.1:8080/dicomweb "$server" "$pg"; fi
    "$python" "$here/dimse.py" "DICOMWEB@127.0.0.1:$dicomweb_dimse" --label dicomweb --server-pid "$server" \
        --cpu-pid "$pg" --move-port "$move_port" --logs "$logs/dicomweb" "$@" || status=1
    stop "$server"
}

# orthanc LABEL [dimse.py options]: Orthanc (TCP_NODELAY from the environment) on fresh storage, loaded when
# $loading, or on the storage left by the run before with $reuse; dimse.py against it, stopped.
orthanc() {
    local label=$1
    shift
    if [ -z "$reuse" ]; then rm -rf "$work/orthanc"; fi
    start_orthanc "${orthanc_nodes[@]}"
    wait_dimse ORTHANC "$orthanc_dimse"
    if [ -n "$loading" ] && [ -z "$reuse" ]; then load http://127.0.0.1:8042/dicom-web "$orthanc"; fi
    "$python" "$here/dimse.py" "ORTHANC@127.0.0.1:$orthanc_dimse" --label "$label" --server-pid "$orthanc" \
        --move-port "$move_port" --logs "$logs/$label" "$@" || status=1
    stop "$orthanc"
}

status=0
loading=
reuse=
if [ -n "$transfers" ]; then
    echo "== dicomweb (embedded PostgreSQL, fsync on): DICOM port $dicomweb_dimse"
    ours --json "$logs/dicomweb.json" "$@"
    echo
    echo "== Orthanc (SQLite index, SyncStorageArea on), as installed: DICOM port $orthanc_dimse"
    orthanc Orthanc --json "$logs/orthanc.json" "$@"
    echo
    echo "== Orthanc, TCP_NODELAY=1"
    TCP_NODELAY=1 orthanc Orthanc-nodelay --json "$logs/orthanc-nodelay.json" "$@"
fi

if [ -n "$find" ]; then
    loading=yes
    find_args=(--scenarios find --find-instances "$find")
    echo
    echo "== C-FIND, dicomweb, $find instances of qido.py's archive"
    ours "$@" "${find_args[@]}" --json "$logs/dicomweb-find.json"
    echo
    echo "== C-FIND, Orthanc, $find instances of qido.py's archive"
    orthanc Orthanc "$@" "${find_args[@]}" --json "$logs/orthanc-find.json"
    echo
    echo "== C-FIND, Orthanc with TCP_NODELAY=1, the same archive"
    reuse=yes TCP_NODELAY=1 orthanc Orthanc-nodelay "$@" "${find_args[@]}" --json "$logs/orthanc-nodelay-find.json"
fi

echo
echo "== side by side (ratio > 1: dicomweb faster)"
for other in orthanc orthanc-nodelay; do
    if [ -n "$transfers" ]; then "$python" "$here/dimse.py" --compare "$logs/dicomweb.json" "$logs/$other.json"; fi
    if [ -n "$find" ]; then "$python" "$here/dimse.py" --compare "$logs/dicomweb-find.json" "$logs/$other-find.json"; fi
    echo
done
exit "$status"
