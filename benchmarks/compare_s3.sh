#!/usr/bin/env bash
# The folder backend against the S3 backend, same machine, same run: a throw-away radosgw (tests/s3/start_rgw.sh;
# memstore, its objects in RAM) and this server on each backend in turn, fresh data folders, embedded PostgreSQL;
# benchmarks/stow.py, then benchmarks/wado.py, against the folder server, then the S3 one. Needs Ceph (see
# start_rgw.sh). Extra arguments go to stow.py; LARGE_ARGS, when set, runs stow_large.py with them as well.
#
#   WADO_ARGS='--instances 200' benchmarks/compare_s3.sh --count 200 --clients 1,4,8 --scenarios 'ct-*'
#   LARGE_ARGS='--mb 300 --repeat 3 --rate 100' benchmarks/compare_s3.sh --count 20 --clients 1 --scenarios ct-single-c1
set -euo pipefail
stow_args=("$@")
. "$(dirname "$0")/servers.sh"
rgw="$here/../tests/s3/start_rgw.sh"
export RGW_DIR="$work/ceph" RGW_PORT=${RGW_PORT:-7480} MON_PORT=${MON_PORT:-3300}
trap 'bash "$rgw" stop >/dev/null 2>&1 || true; kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
eval "$(bash "$rgw" start)"  # exports S3_ENDPOINT_URL and the AWS_* key pair
bucket=bench
create_bucket $bucket

port=${PORT:-8090}
run_one() {  # NAME VAR=value ...
    local name=$1; shift
    env DICOMWEB_AUTH=disabled DICOMWEB_DATA_DIR="$work/$name" DICOMWEB_LOG_LEVEL=warning DICOMWEB_PORT=$port \
        DICOMWEB_DIMSE_PORT=0 DICOMWEB_MAX_UPLOAD_MB=${DICOMWEB_MAX_UPLOAD_MB:-2000} "$@" dicomweb serve &
    local pid=$!
    wait_ready "http://127.0.0.1:$port/readyz"
    echo "== $name: STOW-RS (benchmarks/stow.py)"
    "$python" "$here/stow.py" "http://127.0.0.1:$port/dicomweb" ${stow_args[@]+"${stow_args[@]}"}
    echo "== $name: WADO-RS (benchmarks/wado.py)"
    "$python" "$here/wado.py" "http://127.0.0.1:$port/dicomweb" ${WADO_ARGS:-}
    if [ -n "${LARGE_ARGS:-}" ]; then
        echo "== $name: one large instance per request (benchmarks/stow_large.py)"
        "$python" "$here/stow_large.py" "http://127.0.0.1:$port/dicomweb" --server-pid "$pid" $LARGE_ARGS
    fi
    stop "$pid"
}
run_one folder DICOMWEB_STORAGE=file
run_one s3 DICOMWEB_STORAGE=s3 DICOMWEB_S3_ENDPOINT="$S3_ENDPOINT_URL" DICOMWEB_S3_BUCKET=$bucket \
    DICOMWEB_S3_PREFIX=pacs/ DICOMWEB_S3_PATH_STYLE=true
