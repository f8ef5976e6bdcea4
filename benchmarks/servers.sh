# Sourced by compare.sh and compare_wado.sh: a fresh work folder (removed at exit, with every server started here)
# and the two servers on fresh storage in it, each waited for until it answers.
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
python=${PYTHON:-python}
work=$(mktemp -d /tmp/compare.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT

wait_ready() {  # URL
    for _ in $(seq 1 100); do curl -fs "$1" >/dev/null 2>&1 && return 0; sleep 0.2; done
    echo "not ready: $1" >&2; return 1
}

# start_dicomweb [VAR=value ...]: this server on port 8080 (embedded PostgreSQL, fsync on) with the settings given,
# authentication off (it then listens on loopback only) so that both servers answer the same unauthenticated
# requests. Sets $server to its process id.
start_dicomweb() {
    env DICOMWEB_AUTH=disabled DICOMWEB_DATA_DIR="$work/dicomweb" DICOMWEB_LOG_LEVEL=warning DICOMWEB_PORT=8080 \
        "$@" dicomweb serve &
    server=$!
    wait_ready http://127.0.0.1:8080/readyz
}

# start_orthanc [orthanc.sh options]: Orthanc on port 8042 (SQLite index, SyncStorageArea on; see orthanc.sh), its
# storage in $work/orthanc. Sets $orthanc (the Orthanc process: orthanc.sh execs it).
start_orthanc() {
    "$here/orthanc.sh" "$@" "$work/orthanc" 2>/dev/null &
    orthanc=$!
    wait_ready http://127.0.0.1:8042/system
}

stop() {  # PID
    kill "$1"; wait "$1" || true
}

create_bucket() {  # NAME: a new bucket on the S3 server of $S3_ENDPOINT_URL (tests/s3/start_rgw.sh's exports)
    "$python" - "$1" <<'PY'
import datetime, os, sys
import httpx, obstore
from obstore.store import S3Store
store = S3Store(sys.argv[1], endpoint=os.environ["S3_ENDPOINT_URL"], region="us-east-1",
                virtual_hosted_style_request=False, client_options={"allow_http": True})
response = httpx.put(obstore.sign(store, "PUT", "", datetime.timedelta(minutes=1)), content=b"")
assert response.status_code == 200, response.text
PY
}
