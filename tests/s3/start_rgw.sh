#!/usr/bin/env bash
# start_rgw.sh — throw-away single-node Ceph (1 mon, 1 memstore OSD, radosgw)
# serving S3 on 127.0.0.1, for CI. No systemd, no Docker, root or not.
# The team's ../shared/s3/start_rgw.sh, with two changes. radosgw's beast frontend gets tcp_nodelay=1: without it,
# every GET of an object under about 100 KB waited 40-44 ms (Nagle's algorithm on radosgw's side against the client's
# delayed ACK), with boto3 and obstore alike; with it, 1-2.5 ms. And RGW_HOST, BLUESTORE_BYTES and `resume` serve
# docker-compose.yml's S3 service (deploy/s3/), which keeps its cluster in a volume across restarts.
# tests/test_s3.py starts and stops it.
#
#   apt-get update && apt-get install -y --no-install-recommends ceph-mon ceph-osd radosgw ceph-common
#   S3ENV=$(bash start_rgw.sh start) || exit 1   # stdout: `export S3_ENDPOINT_URL=...` lines
#   eval "$S3ENV"; trap 'bash start_rgw.sh stop' EXIT
#   ... run tests ...
#   bash start_rgw.sh stop      # SIGKILLs the daemons by saved PID, removes $RGW_DIR
#   bash start_rgw.sh resume    # OSD_STORE=bluestore only: the daemons of a `start` stopped or killed (not by `stop`),
#                               # started again on the data in $RGW_DIR, same knobs as that start
#
# Env knobs: RGW_DIR (default /tmp/ceph-rgw-ci), RGW_HOST (127.0.0.1, the address S3 is served on: 0.0.0.0 in a
# container; the readiness check asks 127.0.0.1), RGW_PORT (7480), MON_PORT (3300), S3_ACCESS_KEY / S3_SECRET_KEY
# (fixed test keys), OSD_STORE (memstore | bluestore), MEMSTORE_BYTES (OSD capacity; memstore uses ~2x the stored
# bytes of RAM), BLUESTORE_BYTES (the size of bluestore's sparse file, 20 GiB).
# Data lives in the OSD's RAM (memstore) or a sparse file in RGW_DIR: nothing survives `stop` (bluestore's survives
# the daemons' end otherwise: `resume`).
# Progress/errors go to stderr; on failure it prints log tails and tears everything down.
set -euo pipefail

DIR=${RGW_DIR:-/tmp/ceph-rgw-ci}
RGW_HOST=${RGW_HOST:-127.0.0.1}
RGW_PORT=${RGW_PORT:-7480}
MON_PORT=${MON_PORT:-3300}
ACCESS=${S3_ACCESS_KEY:-ciaccesskey0123456789}
SECRET=${S3_SECRET_KEY:-cisecretkey0123456789abcdefghijklmnopqrs}
OSD_STORE=${OSD_STORE:-memstore}   # memstore (RAM, fastest) or bluestore (sparse file in $RGW_DIR)
MEMSTORE_BYTES=${MEMSTORE_BYTES:-4294967296}
BLUESTORE_BYTES=${BLUESTORE_BYTES:-21474836480}
CONF=$DIR/ceph.conf

T0=${EPOCHREALTIME/./}
log() { local us=$((${EPOCHREALTIME/./} - T0)); printf '[start_rgw %3d.%01ds] %s\n' $((us / 1000000)) $((us / 100000 % 10)) "$*" >&2; }
die() {
  log "ERROR: $*"
  for f in "$DIR"/log/*.log "$DIR"/log/*.out; do [ -s "$f" ] && { echo "--- tail $f" >&2; tail -n 20 "$f" >&2; }; done
  [ "${STARTED:-}" = 1 ] && stop   # don't leave half a cluster running
  [ "${RESUMED:-}" = 1 ] && kill_daemons   # nor the daemons of a resume (its data stays)
  exit 1
}
# wait_for SECONDS WHAT CMD... : retry CMD once a second
wait_for() {
  local t=$1 what=$2 f; shift 2
  for ((i = 0; i < t; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    for f in "$DIR"/run/*.pid; do   # fail fast if a daemon died
      [ -f "$f" ] || continue
      kill -0 "$(cat "$f")" 2>/dev/null || die "$(basename "$f" .pid) exited while waiting for $what"
    done
    sleep 1
  done
  die "timed out after ${t}s waiting for $what"
}
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
ports_free() {
  local p
  for p in "$MON_PORT" "$RGW_PORT"; do port_free "$p" || die "127.0.0.1:$p is already in use"; done
}
ceph_() { ceph -c "$CONF" --connect-timeout 10 "$@"; }
spawn() { # spawn NAME CMD... : run a daemon in the foreground (-f), in the background, save its PID
  local name=$1; shift
  nohup "$@" >"$DIR/log/$name.out" 2>&1 &
  echo $! >"$DIR/run/$name.pid"
}

# running PID : PID is one of our daemons, alive (not a recycled PID, not a zombie its parent has yet to reap)
running() {
  case $(cat "/proc/$1/comm" 2>/dev/null) in ceph-mon | ceph-osd | radosgw) ;; *) return 1 ;; esac
  ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null
}
kill_daemons() { # kill_daemons [SIGNAL] : signal the daemons by saved PID (SIGKILL), wait until they are gone
  local pids=() f pid
  for f in "$DIR"/run/*.pid; do
    [ -f "$f" ] || continue
    pid=$(cat "$f")
    running "$pid" && kill "-${1:-KILL}" "$pid" 2>/dev/null && pids+=("$pid")
  done
  for pid in "${pids[@]}"; do   # wait (up to ~10s) until they are gone
    for ((i = 0; i < 100; i++)); do running "$pid" || break; sleep 0.1; done
  done
}

stop() {
  # only ever remove a folder this script made (it holds the marker file)
  [ -f "$DIR/.start_rgw" ] || { log "nothing to stop: no $DIR/.start_rgw"; return 0; }
  kill_daemons KILL   # the data is thrown away anyway: no graceful (slow) memstore flush
  rm -rf "$DIR"
  log "stopped, removed $DIR"
}

need_tools() {
  # deploy/s3/Dockerfile installs the package of each (tests/test_deploy.py checks it)
  for b in ceph ceph-mon ceph-osd radosgw radosgw-admin ceph-authtool monmaptool uuidgen; do
    command -v "$b" >/dev/null || die "$b not found: apt-get install ceph-mon ceph-osd radosgw ceph-common"
  done
}

start() {
  case $OSD_STORE in memstore | bluestore) ;; *) die "OSD_STORE must be memstore or bluestore" ;; esac
  need_tools
  [ -e "$DIR" ] && die "$DIR exists (already running? run: $0 stop)"
  ports_free
  mkdir -p "$DIR"/{mon,osd,rgw,run,log}
  touch "$DIR/.start_rgw"
  STARTED=1
  local fsid; fsid=$(uuidgen)

  cat >"$CONF" <<EOF
[global]
fsid = $fsid
mon host = v2:127.0.0.1:$MON_PORT
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind msgr1 = false
ms bind ipv6 = false
keyring = $DIR/keyring
run dir = $DIR/run
admin socket = $DIR/run/\$name.asok
log file = $DIR/log/\$name.log
crash dir = $DIR/log
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
mon allow pool delete = true
osd crush chooseleaf type = 0
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
mon max pg per osd = 1000
mon warn on pool no redundancy = false
mon data avail warn = 1
mon data avail crit = 0
paxos propose interval = 0.1
auth allow insecure global id reclaim = false
[mon]
mon data = $DIR/mon
mon initial members = a
mon cluster log file = $DIR/log/cluster.log
[osd]
osd data = $DIR/osd
osd objectstore = $OSD_STORE
memstore device bytes = $MEMSTORE_BYTES
bluestore block create = true
bluestore block size = $BLUESTORE_BYTES
bluestore fsck on mkfs = false
osd memory target = 939524096
osd crush update on start = true
[client.rgw.a]
rgw frontends = beast endpoint=$RGW_HOST:$RGW_PORT tcp_nodelay=1
rgw data = $DIR/rgw
rgw dns name = localhost
EOF

  # one keyring for everyone (a test cluster); the mon imports it at mkfs
  local kr=$DIR/keyring
  ceph-authtool --create-keyring "$kr" --gen-key -n mon. --cap mon 'allow *' >/dev/null
  ceph-authtool "$kr" --gen-key -n client.admin --cap mon 'allow *' --cap osd 'allow *' \
    --cap mgr 'allow *' --cap mds 'allow *' >/dev/null
  ceph-authtool "$kr" --gen-key -n osd.0 --cap mon 'allow profile osd' \
    --cap mgr 'allow profile osd' --cap osd 'allow *' >/dev/null
  ceph-authtool "$kr" --gen-key -n client.rgw.a --cap mon 'allow rw' --cap osd 'allow rwx' \
    --cap mgr 'allow rw' >/dev/null

  monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$MON_PORT]" "$DIR/monmap" >/dev/null
  ceph-mon -c "$CONF" --mkfs -i a --monmap "$DIR/monmap" --keyring "$kr" >"$DIR/log/mon-mkfs.out" 2>&1 ||
    die "ceph-mon --mkfs failed: $(cat "$DIR/log/mon-mkfs.out")"
  spawn_mon

  local osd_uuid; osd_uuid=$(uuidgen)
  ceph_ osd new "$osd_uuid" 0 >/dev/null || die "ceph osd new failed"
  ceph-osd -c "$CONF" -i 0 --mkfs --osd-uuid "$osd_uuid" >"$DIR/log/osd-mkfs.out" 2>&1 ||
    die "ceph-osd --mkfs failed: $(cat "$DIR/log/osd-mkfs.out")"
  spawn_osd
  # pre-create the bucket pools radosgw would otherwise create on the first CreateBucket
  for pool in default.rgw.buckets.index default.rgw.buckets.data default.rgw.buckets.non-ec; do
    ceph_ osd pool create "$pool" >/dev/null 2>&1 && ceph_ osd pool application enable "$pool" rgw >/dev/null 2>&1 ||
      die "creating pool $pool failed"
  done

  spawn_radosgw

  radosgw-admin -c "$CONF" user create --uid=ci --display-name="CI user" \
    --access-key="$ACCESS" --secret="$SECRET" >"$DIR/log/user-create.out" 2>&1 ||
    die "radosgw-admin user create failed: $(cat "$DIR/log/user-create.out")"
  touch "$DIR/.made"   # a whole cluster: `resume` may start it again
  ready
}

resume() {
  [ -f "$DIR/.made" ] || die "no cluster in $DIR to resume (run: $0 start)"
  grep -qx "osd objectstore = bluestore" "$CONF" || die "the OSD in $DIR kept its data in memory: nothing to resume"
  need_tools
  local f
  for f in "$DIR"/run/*.pid; do   # the last run's PIDs: gone, or recycled by another program
    [ -f "$f" ] || continue
    running "$(cat "$f")" && die "$(basename "$f" .pid) is still running (pid $(cat "$f"))"
    rm -f "$f"
  done
  ports_free
  RESUMED=1
  spawn_mon
  spawn_osd
  spawn_radosgw
  # Keys other than the start's: the user gets these too (the old pair stays valid). Only when needed: a change can
  # wait 30 s for radosgw's cache notifications (the watches of a killed radosgw time out), a look does not.
  local info; info=$(radosgw-admin -c "$CONF" user info --uid=ci 2>&1) || die "radosgw-admin user info failed: $info"
  if ! grep -qF "\"access_key\": \"$ACCESS\"" <<<"$info" || ! grep -qF "\"secret_key\": \"$SECRET\"" <<<"$info"; then
    radosgw-admin -c "$CONF" key create --uid=ci --key-type=s3 \
      --access-key="$ACCESS" --secret="$SECRET" >"$DIR/log/key-create.out" 2>&1 ||
      die "radosgw-admin key create failed: $(cat "$DIR/log/key-create.out")"
  fi
  ready
}

spawn_mon() {
  spawn mon ceph-mon -c "$CONF" -f -i a
  wait_for 60 "monitor quorum" ceph_ mon stat
  log "mon up"
}

spawn_osd() {
  spawn osd ceph-osd -c "$CONF" -f -i 0
  wait_for 90 "osd.0 up" bash -c "ceph -c '$CONF' --connect-timeout 10 osd dump | grep -q '^osd.0 up'"
  log "osd.0 up"
}

spawn_radosgw() {
  spawn radosgw radosgw -c "$CONF" -f -n client.rgw.a
  wait_for 120 "radosgw on 127.0.0.1:$RGW_PORT" /usr/bin/python3 -c \
    "import urllib.request as u; u.urlopen('http://127.0.0.1:$RGW_PORT/', timeout=5)"
  log "radosgw answering"
}

ready() {
  log "radosgw ready (dir $DIR, pids: mon $(cat "$DIR/run/mon.pid") osd $(cat "$DIR/run/osd.pid") rgw $(cat "$DIR/run/radosgw.pid"))"
  cat <<EOF
export S3_ENDPOINT_URL=http://127.0.0.1:$RGW_PORT
export AWS_ENDPOINT_URL=http://127.0.0.1:$RGW_PORT
export AWS_ACCESS_KEY_ID=$ACCESS
export AWS_SECRET_ACCESS_KEY=$SECRET
export AWS_DEFAULT_REGION=us-east-1
EOF
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  resume) resume ;;
  *) echo "usage: $0 start|stop|resume   (RGW_DIR=$DIR)" >&2; exit 2 ;;
esac
