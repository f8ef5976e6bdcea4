#!/usr/bin/env bash
# Replicas against one server, same machine, same run, both behind Debian's nginx running deploy/proxy/nginx.conf:
# one `dicomweb serve` with DICOMWEB_WORKERS=N, then N replicas of one worker each, on one PostgreSQL (an embedded
# one started here, a fresh database per configuration) and one bucket of a throw-away radosgw (tests/s3/start_rgw.sh;
# a fresh prefix per configuration). benchmarks/stow.py and benchmarks/wado.py run against the proxy. The replicas
# should match the one server: the machine is the limit, not their coordination. Extra arguments go to stow.py.
#
#   REPLICAS=3 WADO_ARGS='--instances 200' benchmarks/replicas.sh --count 300 --clients 4,8 --scenarios 'ct-*'
#   ORDER='replicas one-server' benchmarks/replicas.sh ...    # the replicas first
set -euo pipefail
stow_args=("$@")
. "$(dirname "$0")/servers.sh"
replicas=${REPLICAS:-3}
rgw="$here/../tests/s3/start_rgw.sh"
export RGW_DIR="$work/ceph" RGW_PORT=${RGW_PORT:-7480} MON_PORT=${MON_PORT:-3300}
trap 'bash "$rgw" stop >/dev/null 2>&1 || true; kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
eval "$(bash "$rgw" start)"  # exports S3_ENDPOINT_URL and the AWS_* key pair
create_bucket bench

# PostgreSQL for all the servers: the embedded one, held by a process of its own until this script ends.
"$python" - "$work/pg" >"$work/pg.url" <<'PY' &
import signal, sys
from pathlib import Path
from dicomweb.db.embedded import EmbeddedPostgres
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
postgres = EmbeddedPostgres(Path(sys.argv[1]))
print(postgres.start(), flush=True)
signal.sigwait({signal.SIGTERM, signal.SIGINT})
postgres.stop()
PY
for _ in $(seq 1 100); do [ -s "$work/pg.url" ] && break; sleep 0.2; done
postgres_url=$(cat "$work/pg.url")

new_database() {  # NAME: its URL on the embedded PostgreSQL
    "$python" - "$postgres_url" "$1" <<'PY'
import asyncio, sys
import asyncpg, httpx
async def create() -> None:
    conn = await asyncpg.connect(sys.argv[1])
    await conn.execute(f'CREATE DATABASE "{sys.argv[2]}"')
    await conn.close()
asyncio.run(create())
print(httpx.URL(sys.argv[1]).copy_with(path="/" + sys.argv[2]))
PY
}

# start_proxy PORT...: nginx with deploy/proxy/nginx.conf, its upstream the servers on these ports, on port 8080.
start_proxy() {
    local conf="$work/nginx" servers="" port
    for port in "$@"; do servers+="    server 127.0.0.1:$port max_fails=1 fail_timeout=10s;\n"; done
    rm -rf "$conf"; mkdir -p "$conf/temp"
    sed -e '/^ *server dicomweb-[0-9]*:8080/d' -e "s/^upstream dicomweb {/upstream dicomweb {\n$servers/" \
        -e 's/listen 8080;/listen 127.0.0.1:8080;/' "$here/../deploy/proxy/nginx.conf" >"$conf/proxy.conf"
    cat >"$conf/nginx.conf" <<EOF
$([ "$(id -u)" = 0 ] && echo "user root;")
daemon off; pid $conf/nginx.pid; error_log $conf/error.log; worker_processes auto;
events { worker_connections 4096; }
http {
    access_log off; client_body_temp_path $conf/temp/body; proxy_temp_path $conf/temp/proxy;
    fastcgi_temp_path $conf/temp/fastcgi; uwsgi_temp_path $conf/temp/uwsgi; scgi_temp_path $conf/temp/scgi;
    include $conf/proxy.conf;
}
EOF
    nginx -c "$conf/nginx.conf" -p "$conf" &
    proxy=$!
    wait_ready http://127.0.0.1:8080/readyz
}

# run_configuration NAME PROCESSES WORKERS: PROCESSES servers of WORKERS workers each behind the proxy, measured.
run_configuration() {
    local name=$1 processes=$2 workers=$3 url n ports=() pids=()
    url=$(new_database "$name")
    for n in $(seq 1 "$processes"); do
        local port=$((8100 + n))
        env DICOMWEB_AUTH=disabled DICOMWEB_DATA_DIR="$work/$name-$n" DICOMWEB_LOG_LEVEL=warning DICOMWEB_PORT=$port \
            DICOMWEB_DIMSE_PORT=0 DICOMWEB_WORKERS="$workers" DICOMWEB_DATABASE_URL="$url" DICOMWEB_STORAGE=s3 \
            DICOMWEB_S3_ENDPOINT="$S3_ENDPOINT_URL" DICOMWEB_S3_BUCKET=bench DICOMWEB_S3_PREFIX="$name/" \
            DICOMWEB_S3_PATH_STYLE=true dicomweb serve &
        pids+=($!)
        ports+=("$port")
        wait_ready "http://127.0.0.1:$port/readyz"  # one at a time: the first creates the schema
    done
    start_proxy "${ports[@]}"
    echo "== $name: $processes server(s) x $workers worker(s) behind nginx: STOW-RS (benchmarks/stow.py)"
    "$python" "$here/stow.py" "http://127.0.0.1:8080/dicomweb" ${stow_args[@]+"${stow_args[@]}"}
    echo "== $name: WADO-RS (benchmarks/wado.py)"
    "$python" "$here/wado.py" "http://127.0.0.1:8080/dicomweb" ${WADO_ARGS:-}
    stop "$proxy"
    for n in "${pids[@]}"; do stop "$n"; done
}
for configuration in ${ORDER:-one-server replicas}; do  # ORDER='replicas one-server': the other way round
    case $configuration in
        one-server) run_configuration one-server 1 "$replicas" ;;
        replicas) run_configuration replicas "$replicas" 1 ;;
    esac
done
