#!/usr/bin/env bash
# The S3 service of docker-compose.yml: tests/s3/start_rgw.sh's single-node Ceph (one monitor, one OSD, radosgw),
# kept in $RGW_DIR on the service's volume (OSD_STORE=bluestore: the objects in a sparse file there), and the bucket
# $S3_BUCKET made for the user of $S3_ACCESS_KEY. It then watches the daemons: when one dies it exits (compose starts
# the service again, on the same data); on SIGTERM (docker compose stop) it stops them gently, radosgw first.
#   entrypoint.sh          start (or resume), make the bucket, watch
#   entrypoint.sh check    the HEALTHCHECK: the bucket answers a signed HEAD
set -euo pipefail
: "${S3_ACCESS_KEY:?the access key of the S3 user}" "${S3_SECRET_KEY:?its secret key}" "${S3_BUCKET:?the bucket to make}"
start_rgw=$(dirname "$0")/start_rgw.sh
bucket=http://127.0.0.1:$RGW_PORT/$S3_BUCKET

# curl signs with AWS signature version 4, as the archive does; S3 wants the payload's hash (here: of nothing) named.
s3() {
  curl --silent --show-error --fail --output /dev/null --aws-sigv4 "aws:amz:us-east-1:s3" \
    --user "$S3_ACCESS_KEY:$S3_SECRET_KEY" \
    --header "x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" "$@"
}

if [ "${1:-}" = check ]; then
  s3 --head "$bucket"
  exit
fi

# running NAME : the daemon is alive (a zombie is not: tini reaps it a moment later)
running() {
  local pid; pid=$(cat "$RGW_DIR/run/$1.pid" 2>/dev/null) || return 1
  [ -e "/proc/$pid" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$pid/status" 2>/dev/null
}
stop() {
  local name
  for name in radosgw osd mon; do
    running "$name" || continue
    kill -TERM "$(cat "$RGW_DIR/run/$name.pid")" || true
    while running "$name"; do sleep 0.2; done
  done
  echo "stopped" >&2
  exit 0
}
# Set before the start: a SIGTERM during it waits for the start to end (bash runs the trap after the command at hand).
trap stop TERM INT

if [ -f "$RGW_DIR/.made" ]; then
  bash "$start_rgw" resume >/dev/null   # the cluster of an earlier start, with its objects
else
  bash "$start_rgw" stop   # a first start cut short left half a cluster (or nothing): from the beginning
  bash "$start_rgw" start >/dev/null
fi
# radosgw logs at level 0, not 1: a line per request would fill the volume ($RGW_DIR/log) without end.
ceph -c "$RGW_DIR/ceph.conf" --connect-timeout 10 config set client.rgw.a debug_rgw 0/5
s3 --request PUT "$bucket"   # CreateBucket: 200 as well when this user made it before
echo "S3 on port $RGW_PORT, bucket $S3_BUCKET, data in $RGW_DIR (logs in $RGW_DIR/log)" >&2

while :; do
  for name in mon osd radosgw; do
    running "$name" || {
      echo "$name exited; the end of its logs:" >&2
      log=$(case $name in mon) echo mon.a ;; osd) echo osd.0 ;; radosgw) echo client.rgw.a ;; esac)
      tail -n 30 "$RGW_DIR/log/$name.out" "$RGW_DIR/log/$log.log" >&2 || true
      exit 1
    }
  done
  sleep 5 &
  wait $! || true
done
